"""Model versions on disk, and the policy that says which are served and where traffic goes.

Two layouts, side by side in one models directory:

    models/housing-price/{model.onnx, card.json}          one version: the card's
    models/housing-price/<version>/{model.onnx, card.json}  one folder per version (as Triton's repository)

A version is known by its card's name and version (a versioned folder's name must be its card's
version). The policy of a model says which of its versions are served: "latest" (the default, or
NNSERVE_VERSION_POLICY), "all", {"latest": N} or {"specific": [...]}, as Triton's version_policy;
which version answers unpinned requests (`default`, else the newest served); a `canary` taking a
weight in percent of them; a `shadow` that also runs on a sampled share of them, its answers never
returned; and `unloaded`, set by the repository API's unload. Every version the policy names is
served. Policies live in one JSON file, <models_dir>/policy.json (NNSERVE_POLICY_FILE), keyed by
model name: promoting a candidate or rolling back is one change of that file (or one PUT
/v1/models/<name>/policy), which every worker picks up.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from service.cards import CARD_FILE, ONNX_FILE
from service.errors import ConfigError
from service.files import MAX_CARD_BYTES, MAX_POLICY_BYTES, FileRefused, read_json, stamp


class _Strict(BaseModel):  # a management call's "yes" is not true, nor "3" a number
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Latest(_Strict):
    latest: int = Field(ge=1, description="Serve the newest N versions.")


class Specific(_Strict):
    specific: list[str] = Field(min_length=1, description="Serve exactly these versions.")


class Canary(_Strict):
    version: str
    weight: float = Field(ge=0, le=100, description="Percent of unpinned requests the candidate answers.")


class Shadow(_Strict):
    version: str
    sample: float = Field(ge=0, le=1, description="Share of unpinned requests the shadow also runs on.")


def _versions_kind(value: Any) -> str | None:
    """Which form of `versions` a value is meant as, so that an error speaks of that form alone."""
    if isinstance(value, (str, Latest, Specific)):
        return "name" if isinstance(value, str) else type(value).__name__.lower()
    keys = list(value) if isinstance(value, dict) else []
    return keys[0] if len(keys) == 1 and keys[0] in ("latest", "specific") else None


Versions = Annotated[
    Annotated[Literal["latest", "all"], Tag("name")] | Annotated[Latest, Tag("latest")]
    | Annotated[Specific, Tag("specific")],
    Discriminator(_versions_kind, custom_error_type="versions",
                  custom_error_message='"latest", "all", {"latest": N} or {"specific": ["<version>", ...]}'),
]  # fmt: skip


class Policy(_Strict):
    versions: Versions = "latest"
    default: str | None = Field(None, description="The version unpinned requests go to; default: the newest served.")
    canary: Canary | None = None
    shadow: Shadow | None = None
    unloaded: bool = Field(False, description="Set by the repository API's unload: no version is served.")

    def served(self, available: list[str]) -> list[str]:
        """The versions to serve, newest first, out of those `available` (newest first)."""
        if self.unloaded:
            return []
        if self.versions == "all":
            chosen = list(available)
        elif self.versions == "latest":
            chosen = available[:1]
        elif isinstance(self.versions, Latest):
            chosen = available[: self.versions.latest]
        else:
            chosen = [v for v in available if v in self.versions.specific]
        named = {self.default, *(x.version for x in (self.canary, self.shadow) if x is not None)}
        return [v for v in available if v in chosen or v in named]


def default_policy(setting: str) -> Policy:
    """NNSERVE_VERSION_POLICY: latest, all, or latest:N."""
    if setting in ("latest", "all"):
        return Policy(versions=setting)
    if re.fullmatch(r"latest:[1-9][0-9]*", setting):
        return Policy(versions=Latest(latest=int(setting.split(":")[1])))
    raise ConfigError(f"NNSERVE_VERSION_POLICY={setting!r}: expected latest, all or latest:N (N >= 1)")


def read_policies(path: Path) -> dict[str, Policy]:
    """The policy file, {model: policy}; none when the file does not exist. A file that cannot be read as
    one (not a regular file, over MAX_POLICY_BYTES, broken JSON of any depth, a policy that does not
    validate) raises FileRefused naming it: the caller keeps the policies it had."""
    try:
        raw = read_json(path, MAX_POLICY_BYTES)
    except FileNotFoundError:
        return {}
    if not isinstance(raw, dict):
        raise FileRefused(f"{path}: not a valid policy file (expected an object of {{model name: policy}})")
    try:
        return {str(name): Policy.model_validate(p) for name, p in raw.items()}
    except Exception as e:  # pydantic's ValidationError, or its recursion guard
        raise FileRefused(f"{path}: not a valid policy file ({str(e).splitlines()[0]})") from None


def write_policy(path: Path, name: str, policy: Policy | None) -> None:
    """Sets (or, with None, removes) one model's policy, and returns once the change is on disk.

    Workers write the one file from their own reads, so a write holds an exclusive lock (flock on the
    file's folder) from its read to its rename: two calls for two models on two workers both land (without
    it, 4 of 600 were lost). The new file is written beside the old, fsync'd, renamed over it and the
    folder fsync'd: a reader sees the old file or the new one, and a crash after the answer loses nothing.
    Through a symlink the link's target is replaced, and the link stays. A broken file raises FileRefused."""
    target = path.resolve()
    with _locked(target.parent):
        policies = read_policies(target)
        if policy is None:
            policies.pop(name, None)
        else:
            policies[name] = policy
        body = {n: p.model_dump(mode="json", exclude_defaults=True) for n, p in sorted(policies.items())}
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(body, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself, on disk
        finally:
            os.close(folder)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


@dataclass(frozen=True)
class Found:
    """A folder holding one version on disk. `stamp` changes when either file does: a changed file is
    loaded (and checked) again."""

    path: Path
    name: str | None  # from the card; None when the card cannot be read
    version: str | None
    stamp: tuple[int, ...]
    problem: str | None = None


def version_key(version: str) -> list[tuple[int, int | str]]:
    """Natural order: 2 < 10, 1.2 < 1.10; numbers before words."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p]


def _stamp(folder: Path) -> tuple[int, ...]:
    return tuple(x for name in (CARD_FILE, ONNX_FILE) for x in (stamp(folder / name) or (0, 0, 0)))


def _holds_model(folder: Path) -> bool:
    return (folder / CARD_FILE).exists() or (folder / ONNX_FILE).exists()


def _subfolders(folder: Path) -> list[Path]:
    """Hidden folders are skipped: a version being copied in by `--publish` is one until it is whole."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class Scanner:
    """Every version folder under a models directory, in path order. A folder's card is read again only
    when its files changed (their stamps): a look at 500 unchanged versions stats their files and
    parses nothing. A folder that cannot be listed or read is that folder's problem, never the look's."""

    def __init__(self, max_card_bytes: int = MAX_CARD_BYTES) -> None:
        self.max_card_bytes = max_card_bytes
        self.known: dict[Path, Found] = {}

    def scan(self, models_dir: Path) -> list[Found]:
        """OSError when `models_dir` itself cannot be listed."""
        found: list[Found] = []
        for folder in _subfolders(models_dir):
            try:
                if _holds_model(folder):
                    found.append(self._found(folder, versioned=False))
                    continue
                for sub in _subfolders(folder):
                    if _holds_model(sub):
                        found.append(self._found(sub, versioned=True))
            except OSError as e:
                found.append(Found(folder, None, None, (), f"{folder}: cannot look inside ({e.strerror or e})"))
        self.known = {f.path: f for f in found}
        return found

    def _found(self, folder: Path, versioned: bool) -> Found:
        now = _stamp(folder)
        known = self.known.get(folder)
        if known is not None and known.stamp == now:
            return known
        try:
            card = read_json(folder / CARD_FILE, self.max_card_bytes)
            name, version = str(card["name"]), str(card["version"])
        except (OSError, ValueError, KeyError, TypeError):  # loading it names the problem
            # A versioned folder's model and version are known from its path: it is refused, not the model.
            return Found(folder, folder.parent.name, folder.name, now) if versioned else Found(folder, None, None, now)
        if versioned and version != folder.name:
            problem = f"{folder / CARD_FILE}: the card says version {version!r}, but its folder is {folder.name!r}"
            return Found(folder, name, version, now, problem)
        return Found(folder, name, version, now)
