"""What to serve: one look at the models directory and the policy file makes a Table, loading (in the
look's thread) each version the policies want that is not loaded yet. Layout and policy:
service/models/versions.py; the table is swapped in by service/models/registry.py.

A version is loaded beside the ones serving, checked (files, sha256, graph against card, its task's
adapter, a smoke prediction on the card's example) and warmed up before it can be in a table. A version
that fails any check is refused with one error line naming the file and the problem, and is not tried
again until its files change; whatever goes wrong with one folder or the policy file is that folder's
or that file's problem, never the look's. A model left with no version to serve (none loads, or two
folders hold one version) is an error: the worker is not ready.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.files import stamp
from service.models.versions import Canary, Found, Policy, Scanner, Shadow, default_policy, read_policies, version_key
from service.runtime import ModelLoadError, load_model
from service.settings import Settings
from service.tasks import ADAPTERS
from service.tasks.base import Adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One model's versions being served (newest first) and how unpinned requests split among them."""

    name: str
    versions: dict[str, Adapter]
    default: str
    canary: Canary | None = None
    shadow: Shadow | None = None

    def describe(self) -> dict[str, Any]:
        split = {k: v.model_dump() for k, v in (("canary", self.canary), ("shadow", self.shadow)) if v is not None}
        return {"versions": list(self.versions), "default": self.default, **split}


@dataclass
class Table:
    """What one look at the models directory found: swapped in whole."""

    models: dict[str, Served] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # serving nothing: the worker is not ready
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, version) -> problem
    found: list[Found] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)
    policy_error: str | None = None  # the policy file could not be read

    def adapters(self) -> list[Adapter]:
        """Every version served, of every model."""
        return [a for s in self.models.values() for a in s.versions.values()]


class Planner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy_file = settings.policy_file or settings.models_dir / "policy.json"
        self.default_policy = default_policy(settings.version_policy)
        self.scanner = Scanner(settings.max_card_bytes)
        self._loaded: dict[Path, tuple[tuple[int, ...], Adapter]] = {}
        self._failed: dict[Path, tuple[tuple[int, ...], str]] = {}
        self._said: set[str] = set()  # problems already logged
        self._missed: set[Path] = set()  # versions serving that the last look did not find
        self._policies: tuple[tuple[int, int, int] | None, dict[str, Policy], str | None] = (None, {}, None)

    def plan(self, now: Table) -> Table:
        """The table the directory calls for, given the table in force. Blocking (loads take seconds),
        and never raising: a surprise is said once, with its traceback, and the table in force kept."""
        try:
            return self._plan(now)
        except Exception as e:
            problem = f"{self.settings.models_dir}: looking at it failed ({type(e).__name__}: {e})"
            if problem not in self._said:
                self._said.add(problem)
                log.exception("%s", problem)
            return now

    def _read_policies(self, now: Table) -> tuple[dict[str, Policy], str | None]:
        """The policy file, read again only when it changed (mtime, size, inode): a broken one keeps the
        policies in force, and says so."""
        try:
            current = stamp(self.policy_file)
        except OSError as e:  # not even its stat: a permission, a hung mount answering with an error
            problem = f"{self.policy_file}: cannot read it ({e.strerror or e}); the policies in force are kept"
            return now.policies, problem
        if current == self._policies[0]:  # (None: no file, as at the start)
            return self._policies[1], self._policies[2]
        try:
            policies, error = read_policies(self.policy_file), None
        except (OSError, ValueError) as e:  # FileRefused is a ValueError
            policies, error = now.policies, f"{e}; the policies in force are kept"
        self._policies = (current, policies, error)
        return policies, error

    def _plan(self, now: Table) -> Table:
        table = Table()
        table.policies, table.policy_error = self._read_policies(now)
        try:
            table.found = self.scanner.scan(self.settings.models_dir)
        except FileNotFoundError:
            table.errors["models_dir"] = f"{self.settings.models_dir}: models directory missing"
        except OSError as e:
            table.errors["models_dir"] = f"{self.settings.models_dir}: cannot list it ({e.strerror or e})"
        table.found += self._vanishing(table.found, now)
        by_name: dict[str, dict[str, Found]] = {}
        for f in table.found:
            if f.name is None:  # no readable card: loading names the problem, for the folder
                try:
                    if f.problem is not None:
                        raise ModelLoadError(f.problem)
                    self._adapter(f)
                except ModelLoadError as e:
                    table.errors[f.path.name] = str(e)
                continue
            versions = by_name.setdefault(f.name, {})
            if f.version in versions:  # two folders, one version: serving either would be a guess
                other = versions[f.version]
                problem = f"model {f.name} is in two folders, {other.path} and {f.path}: rename one"
                table.refused[(f.name, f.version)] = problem
                self._say(problem)
            versions[f.version or ""] = f
        for name, versions in by_name.items():
            self._plan_model(table, name, versions)
        wanted = {a.model.directory for a in table.adapters()}
        self._loaded = {p: v for p, v in self._loaded.items() if p in wanted}  # the rest is unloaded
        if not table.models and not table.errors and not any(p.unloaded for p in table.policies.values()):
            table.errors["models_dir"] = f"{self.settings.models_dir}: no model folders in it"
        problems = {*table.errors.values(), *table.refused.values(), table.policy_error} - {None}
        for problem in problems:
            self._say(problem)
        self._said &= problems  # a problem that goes away and comes back is said again
        return table

    def _vanishing(self, found: list[Found], now: Table) -> list[Found]:
        """Versions serving that this look did not find, the first time: kept for one more look.
        Replacing a flat folder by renames leaves it absent for an instant, and a look that falls
        in that instant must not drop the model; a version really removed goes at the next look."""
        here = {f.path for f in found}
        serving = {a.model.directory for a in now.adapters()}
        kept = [f for f in now.found if f.path not in here and f.path in serving and f.path not in self._missed]
        self._missed = {f.path for f in kept}
        return kept

    def _plan_model(self, table: Table, name: str, versions: dict[str, Found]) -> None:
        policy = table.policies.get(name, self.default_policy)
        refused = {v for (n, v) in table.refused if n == name}
        for v, f in versions.items():
            if f.problem is not None:
                table.refused[(name, v)] = f.problem
                self._say(f.problem)
                refused.add(v)
        available = sorted((v for v in versions if v not in refused), key=version_key, reverse=True)
        adapters: dict[str, Adapter] = {}
        while missing := [v for v in policy.served(available) if v not in adapters]:
            for v in missing:  # a version that fails is refused, and the policy chooses again without it
                try:
                    adapters[v] = self._adapter(versions[v])
                except ModelLoadError as e:
                    table.refused[(name, v)] = str(e)
                    available.remove(v)
        served = {v: adapters[v] for v in policy.served(available)}
        if not served:
            if not policy.unloaded:
                problems = [p for (n, _), p in table.refused.items() if n == name]
                table.errors[name] = problems[0] if problems else f"model {name}: no version matches its policy"
            return
        default = policy.default if policy.default in served else next(iter(served))
        split = [x if x is not None and x.version in served else None for x in (policy.canary, policy.shadow)]
        table.models[name] = Served(name, served, default, *split)

    def _adapter(self, found: Found) -> Adapter:
        """The version's adapter: loaded, checked and warmed up once per state of its files."""
        if found.path in self._loaded and self._loaded[found.path][0] == found.stamp:
            return self._loaded[found.path][1]
        if found.path in self._failed and self._failed[found.path][0] == found.stamp:
            raise ModelLoadError(self._failed[found.path][1])  # refused already, and said so
        try:
            model = load_model(found.path, self.settings.execution(), self.settings.max_card_bytes)
            task = ADAPTERS.get(model.card.task)
            if task is None:
                raise ModelLoadError(f"{found.path / 'card.json'}: no adapter serves task {model.card.task!r}")
            adapter = task(model, self.settings)
            try:
                adapter.smoke()
            except ModelLoadError:
                raise
            except Exception as e:  # the runtime's own errors (an index out of range for the example, say)
                raise ModelLoadError(f"{found.path}: the smoke prediction on the card's example failed "
                                     f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None  # fmt: skip
        except Exception as e:  # anything else a folder's files can make go wrong is the folder's refusal
            problem = str(e) if isinstance(e, ModelLoadError) else f"{found.path}: {type(e).__name__}: {e}"
            self._failed[found.path] = (found.stamp, problem)
            self._say(problem)  # the message names the file
            raise ModelLoadError(problem) from None
        self._failed.pop(found.path, None)
        self._loaded[found.path] = (found.stamp, adapter)
        if failed := model.card.bar_failed():  # once per load: the version is served all the same
            log.warning("%s: served although its card's acceptance bar was not met (failed: %s)", found.path,
                        "; ".join(failed))  # fmt: skip
        return adapter

    def _say(self, problem: str) -> None:
        if problem not in self._said:
            self._said.add(problem)
            log.error("%s", problem)
