"""The models this worker serves, and their versions: loaded from the models directory at start-up and
again whenever it changes (a watch, NNSERVE_MODEL_POLL_S, and explicit calls), each version behind the
adapter of its card's task. Layout and policy: service/models/versions.py.

A version is loaded beside the ones serving, checked (files, sha256, graph against card, its task's
adapter, a smoke prediction on the card's example), warmed up, and only then swapped in: one
assignment in the event loop, so a request sees the old table or the new one. Requests already
holding the old version finish on it; it is dropped from the table, and freed when they are done.
A version that fails any check is refused with one error line naming the file and the problem, shown
in /v1/health (`refused`) and in nnserve_model_refused, and is not tried again until its files
change; the versions serving keep serving. A model left with no version to serve (none loads, or two
folders hold one version) keeps the worker not-ready: /readyz answers 503.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import telemetry
from service.dataplane.drift import warnings as drift_warnings
from service.dataplane.payloads import make_payload_log
from service.errors import ModelUnavailable, NotFound, field_error
from service.files import stamp
from service.models.versions import Canary, Found, Policy, Scanner, Shadow, default_policy, read_policies, version_key
from service.protocol.bodies import REQUEST_KEY, header, received_value
from service.runtime import ModelLoadError, load_model
from service.settings import Settings
from service.shutdown import drain
from service.tasks import ADAPTERS
from service.tasks.base import Adapter

log = logging.getLogger(__name__)
GIVE_BACK_AFTER_S = 2.0
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def give_back_memory() -> None:
    """What a worker freed, handed back to the system. glibc keeps freed memory for reuse: four cycles
    of 500 versions loaded then unloaded grew a worker 177 -> 600 -> 890 -> 1,040 -> 1,155 MB, and
    malloc_trim(0) brought it back to ~200 MB (make memory checks it)."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only (not musl, not macOS)
    if trim is not None:
        trim(0)


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


class Registry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy_file = settings.policy_file or settings.models_dir / "policy.json"
        self.default_policy = default_policy(settings.version_policy)
        self.table = Table()
        self.generation = 0  # counts swaps: documents built from the models are rebuilt when it moves
        self._loaded: dict[Path, tuple[tuple[int, ...], Adapter]] = {}
        self._failed: dict[Path, tuple[tuple[int, ...], str]] = {}
        self._said: set[str] = set()  # problems already logged
        self._missed: set[Path] = set()  # versions serving that the last look did not find
        self._look: asyncio.Future[Table] | None = None  # the look at the directory under way, in its thread
        self.stuck_since: float | None = None  # a look that has not come back within the timeout, since when
        self.scanner = Scanner(settings.max_card_bytes)
        self._policies: tuple[tuple[int, int, int] | None, dict[str, Policy], str | None] = (None, {}, None)
        self.payloads = make_payload_log(settings)  # one per worker, handed to every version's adapter
        self.apply(self.plan())

    # --- reading the directory ------------------------------------------------------------------------
    def plan(self) -> Table:
        """Looks at the models directory and loads what the policies want that is not loaded yet.
        Blocking (loads take seconds): the watch runs it in a thread, and only `apply` touches what
        requests read. Never raises: whatever goes wrong with a folder or the policy file is that
        folder's or that file's problem, named and logged once, and the rest is served."""
        try:
            return self._plan()
        except Exception as e:  # a surprise: said with its traceback once, the table in force kept
            problem = f"{self.settings.models_dir}: looking at it failed ({type(e).__name__}: {e})"
            if problem not in self._said:
                self._said.add(problem)
                log.exception("%s", problem)
            return self.table

    def _read_policies(self) -> tuple[dict[str, Policy], str | None]:
        """The policy file, read again only when it changed (mtime, size, inode): a broken one keeps the
        policies in force, and says so."""
        try:
            now = stamp(self.policy_file)
            if now == self._policies[0]:  # (None: no file, as at the start)
                return self._policies[1], self._policies[2]
            policies, error = read_policies(self.policy_file), None
        except (OSError, ValueError) as e:  # FileRefused is a ValueError
            policies, error = self.table.policies, f"{e}; the policies in force are kept"
        self._policies = (now, policies, error)
        return policies, error

    def _plan(self) -> Table:
        table = Table()
        table.policies, table.policy_error = self._read_policies()
        try:
            table.found = self.scanner.scan(self.settings.models_dir)
        except FileNotFoundError:
            table.errors["models_dir"] = f"{self.settings.models_dir}: models directory missing"
        except OSError as e:
            table.errors["models_dir"] = f"{self.settings.models_dir}: cannot list it ({e.strerror or e})"
        table.found += self._vanishing(table.found)
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

    def _vanishing(self, found: list[Found]) -> list[Found]:
        """Versions serving that this look did not find, the first time: kept for one more look.
        Replacing a flat folder by renames leaves it absent for an instant, and a look that falls
        in that instant must not drop the model; a version really removed goes at the next look."""
        here = {f.path for f in found}
        serving = {a.model.directory for a in self.table.adapters()}
        kept = [f for f in self.table.found if f.path not in here and f.path in serving and f.path not in self._missed]
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
            adapter.payloads = self.payloads
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

    # --- swapping -------------------------------------------------------------------------------------
    def apply(self, table: Table) -> None:
        """Swaps the table in (in the event loop: requests see the old table or the new one). Most
        looks change nothing: the documents and the model metrics are redone only when something did."""
        old, changed = self.table, False
        for name in sorted(set(old.models) | set(table.models)):
            before = old.models[name].describe() if name in old.models else None
            after = table.models[name].describe() if name in table.models else None
            if before != after:
                changed = True
                log.info("%s: serving %s (was %s)", name, after or "nothing", before or "nothing")
        self.table = table
        new, previous = table.adapters(), old.adapters()
        if changed or new != previous or table.refused.keys() != old.refused.keys():  # (a version reloaded in place)
            self.generation += 1
            telemetry.publish_models([a.model for a in new], [a.model for a in previous], table.refused, old.refused)
        if {id(a) for a in previous} - {id(a) for a in new}:  # versions dropped: their sessions are freed
            try:  # once the requests still holding them are done
                asyncio.get_running_loop().call_later(GIVE_BACK_AFTER_S, give_back_memory)
            except RuntimeError:  # no event loop (start-up, tests): now
                give_back_memory()

    async def refresh(self) -> None:
        """Looks at the models directory now: loads in a thread, swaps here. One look at a time: a call
        while one is under way waits for it, then looks again (what it was called for may have changed
        after that look began). A look is waited for at most NNSERVE_MODELS_DIR_TIMEOUT_S: a hung mount
        (or a file that blocks its reader) makes the call a 503 while the table in force keeps serving,
        and no second thread is started while that look is out; when it comes back, it is applied."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.models_dir_timeout_s
        while self._look is not None:
            await self._wait(self._look, deadline)
        self._look = loop.run_in_executor(None, self.plan)
        self._look.add_done_callback(self._looked)
        await self._wait(self._look, deadline)

    def _looked(self, look: asyncio.Future[Table]) -> None:
        self._look = None
        if self.stuck_since is not None:
            log.warning(
                "%s answers again: the look took %.0f s", self.settings.models_dir, time.monotonic() - self.stuck_since
            )
            self.stuck_since = None
        if not look.cancelled() and look.exception() is None:  # plan() does not raise
            self.apply(look.result())

    async def _wait(self, look: asyncio.Future[Table], deadline: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(look), max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            if self.stuck_since is None:
                self.stuck_since = time.monotonic()
                log.error(
                    "%s: a look at it has not come back within %g s (NNSERVE_MODELS_DIR_TIMEOUT_S); "
                    "the models in force keep serving",
                    self.settings.models_dir,
                    self.settings.models_dir_timeout_s,
                )
            raise ModelUnavailable(
                f"the models directory {self.settings.models_dir} has not answered within "
                f"{self.settings.models_dir_timeout_s:g} s (NNSERVE_MODELS_DIR_TIMEOUT_S): what is served has not "
                "changed; the change is made when it answers"
            ) from None

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)  # the watch's period, NNSERVE_MODEL_POLL_S
            try:
                await self.refresh()
            except ModelUnavailable:  # the directory hangs: said once (_wait), shown in /v1/health
                pass
            except Exception:  # a surprise must not end the watch: say it, look again next time
                log.exception("looking at %s failed", self.settings.models_dir)

    # --- what requests read ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Every model has a version serving, and the worker is not shutting down (service.shutdown)."""
        return not self.table.errors and not drain.draining

    @property
    def errors(self) -> dict[str, str]:
        return self.table.errors

    @property
    def adapters(self) -> dict[str, Adapter]:
        """Each model's default version."""
        return {name: s.versions[s.default] for name, s in self.table.models.items()}

    def served(self, name: str) -> Served:
        table = self.table
        if name in table.models:
            return table.models[name]
        shown = received_value(name)  # a client's own text: cut when long, as every received value is
        if name in table.errors:
            raise ModelUnavailable(f"model {shown} failed to load; see the server log")
        if name in table.policies and table.policies[name].unloaded:
            raise NotFound(f"model {shown} is unloaded", [field_error(["model"], "a loaded model", shown, "unloaded")])
        expected = f"one of {sorted(table.models)}"
        raise NotFound(f"model {shown} is not loaded", [field_error(["model"], expected, shown, "not_found")])

    def get(self, name: str, version: str | None = None) -> Adapter:
        served = self.served(name)
        if version is None:
            return served.versions[served.default]
        if version not in served.versions:
            expected = f"one of {list(served.versions)}"
            raise NotFound(
                f"model {name} has no version {received_value(version)} loaded",
                [field_error(["version"], expected, received_value(version), "not_found")],
            )
        return served.versions[version]

    def route(self, name: str, version: str | None, scope: dict[str, Any]) -> tuple[Adapter, Adapter | None]:
        """The version that answers, and the shadow that also runs (or None). A pinned version answers
        alone; else the canary takes its weight of requests, the same ones for the same key (the
        request's X-Request-Key, read only when there is a canary), and the shadow runs on its sample."""
        if version is not None:
            return self.get(name, version), None
        served = self.served(name)
        chosen = served.default
        if served.canary is not None:
            key = header(scope, REQUEST_KEY)
            draw = zlib.crc32(key.encode()) % 10_000 / 100 if key else random.random() * 100
            if draw < served.canary.weight:
                chosen = served.canary.version
        shadow = served.shadow
        if shadow is not None and shadow.version != chosen and random.random() < shadow.sample:
            return served.versions[chosen], served.versions[shadow.version]
        return served.versions[chosen], None

    def describe(self, adapter: Adapter) -> dict[str, Any]:
        """The model's card, plus what only the running service knows: the provider that bound, and
        the versions served."""
        model = adapter.model
        card = model.card.model_dump(mode="json")
        for feature in card["categorical"]:  # a hashed ID's bucket bitmap: up to megabytes, of no use to a client
            if feature["hashing"] is not None:
                seen = feature["hashing"]["seen"]
                size = len(seen) * 3 // 4 - seen[-2:].count("=")  # base64 decoded
                feature["hashing"]["seen"] = f"{size:,} bytes of bucket bitmap (in card.json)"
        return {
            **card,
            **_bar_flag(model.card),
            "provider": model.provider,
            "device": model.device,
            "serving": self.table.models[model.name].describe() if model.name in self.table.models else None,
            **({"dynamic_batching": adapter.batcher.describe()} if adapter.batcher is not None else {}),
            "signature": {
                "inputs": [t.model_dump() for t in model.card.inputs],
                "outputs": [t.model_dump() for t in model.card.outputs],
            },
        }

    def health(self) -> dict[str, Any]:
        table = self.table
        models = {}
        for name, s in table.models.items():
            model = s.versions[s.default].model
            models[name] = {"version": s.default, "provider": model.provider, "device": model.device,
                            **_bar_flag(model.card), **s.describe()}  # fmt: skip
        refused: dict[str, list[str]] = {}
        for name, version in sorted(table.refused):
            refused.setdefault(name, []).append(version)
        health: dict[str, Any] = {
            "ready": self.ready,
            "draining": drain.draining,
            "models": models,
            "errors": sorted(table.errors),  # names only: the paths and reasons are in the log
            "refused": refused,  # versions refused while others serve, by model
            **({"policy_error": table.policy_error} if table.policy_error else {}),
        }
        warnings = [f"{a.name} v{a.model.card.version}: bar not met ({'; '.join(failed)})"
                    for a in table.adapters() if (failed := a.model.card.bar_failed())]  # fmt: skip
        warnings += [w for a in table.adapters() if a.drift is not None for w in drift_warnings(a.drift)]
        if self.stuck_since is not None:
            waited = time.monotonic() - self.stuck_since
            warnings.append(f"{self.settings.models_dir}: a look at it has not come back for {waited:.0f} s: "
                            "new versions and policy changes wait")  # fmt: skip
        if warnings:  # never a readiness failure: a bar not met, drift (service/dataplane/drift.py)
            health["warnings"] = warnings
        if drain.draining:
            health["error"] = "not ready: shutting down"
        elif table.errors:
            health["error"] = f"not ready: {', '.join(sorted(table.errors))} failed to load (see the log)"
        return health

    def index(self) -> list[dict[str, str]]:
        """Every version on disk and its state, as Triton's repository index gives them."""
        table, entries = self.table, []
        for f in table.found:
            name, version = f.name or f.path.name, f.version or f.path.name
            if name in table.models and version in table.models[name].versions:
                entries.append({"name": name, "version": version, "state": "READY", "reason": ""})
                continue
            reason = table.refused.get((name, version)) or table.errors.get(f.path.name) or "unloaded"
            entries.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason})
        return entries


def _bar_flag(card: Any) -> dict[str, str]:
    """{"bar_status": "not met"} for a version whose card's acceptance bar failed; nothing otherwise."""
    return {"bar_status": "not met"} if card.bar_failed() else {}
