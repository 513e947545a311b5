"""Model management: load, unload and the version policy of a model, from a call (the Open Inference
Protocol's repository extension, as Triton implements it, and PUT /v1/models/<name>/policy).

Off unless NNSERVE_MANAGEMENT=true (403 otherwise), and behind the API keys when they are set. A call
changes the policy file (service/models/versions.py), the one place a worker learns what to serve from,
and returns once its change is on disk and every worker serves it (`everywhere`); an edit of the file
by hand is followed within NNSERVE_MODEL_POLL_S. Calls on two workers at the same moment both land
(the file is locked from read to rename); for one model, the last write wins.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import ValidationError

from service.errors import Forbidden, InvalidInput, ModelUnavailable, field_error, invalid, received_value
from service.files import FileRefused
from service.models.registry import Registry
from service.models.versions import Policy, write_policy

OFF = "model management is off: NNSERVE_MANAGEMENT=true turns it on (behind NNSERVE_API_KEYS when set)"


class Control:
    def __init__(self, registry: Registry, enabled: bool) -> None:
        self.registry = registry
        self.enabled = enabled

    def _policy(self, name: str) -> Policy:
        return self.registry.table.policies.get(name, self.registry.default_policy)

    def _on_disk(self, name: str) -> bool:
        return any(f.name == name for f in self.registry.table.found)

    async def _write(self, name: str, policy: Policy) -> None:
        if not self.enabled:
            raise Forbidden(OFF)
        file = self.registry.policy_file
        kept = None if policy == self.registry.default_policy else policy  # the file keeps only what differs
        try:  # in a thread: the write waits for other workers' writes (a lock) and for the disk (fsync)
            await anyio.to_thread.run_sync(write_policy, file, name, kept)
        except FileRefused as e:  # a broken file is never overwritten: someone wrote it, and means something
            raise ModelUnavailable(f"cannot change the policy: {e}; fix or remove the file") from None
        except OSError as e:
            raise ModelUnavailable(f"cannot write {file} ({e.strerror or e}); set NNSERVE_POLICY_FILE") from None
        await self.everywhere()

    async def everywhere(self) -> None:
        """Returns once every worker serves what the policy file now says, as Triton's load and unload
        return once done: this worker looks now, and the others at once (a new epoch, which they watch).
        Workers that have not within NNSERVE_MODELS_DIR_TIMEOUT_S are named in a 503."""
        workers = self.registry.workers
        epoch = workers.bump()
        await self.registry.refresh()
        late = await workers.wait_applied(epoch, self.registry.settings.models_dir_timeout_s)
        if late:
            raise ModelUnavailable(
                f"written to {self.registry.policy_file}, but worker(s) {', '.join(map(str, late))} did not serve it "
                f"within {self.registry.settings.models_dir_timeout_s:g} s (NNSERVE_MODELS_DIR_TIMEOUT_S); they will "
                "at their next look"
            )

    async def load(self, name: str) -> None:
        """Serves the model again after an unload, and looks at its folder now (a changed file is
        loaded again). 400 when it does not end up served, with the reason."""
        if not self.enabled:
            raise Forbidden(OFF)
        if not self._on_disk(name):
            await self.registry.refresh()  # it may have just been copied in
        if not self._on_disk(name):
            expected = f"a model in {self.registry.settings.models_dir}"
            raise InvalidInput(
                f"no model {received_value(name)}",
                [field_error(["model"], expected, received_value(name), "not_found")],
            )
        await self._write(name, self._policy(name).model_copy(update={"unloaded": False}))
        if name not in self.registry.table.models:
            reason = self.registry.table.errors.get(name, "no version to serve")
            raise InvalidInput(f"failed to load {name}: {reason}")

    async def unload(self, name: str) -> None:
        if self.enabled and not self._on_disk(name) and name not in self.registry.table.models:
            raise InvalidInput(
                f"no model {received_value(name)}",
                [field_error(["model"], "a known model", received_value(name), "not_found")],
            )
        await self._write(name, self._policy(name).model_copy(update={"unloaded": True}))

    def policy(self, name: str) -> dict[str, Any]:
        served = self.registry.table.models.get(name)
        return {"model": name, "policy": self._policy(name).model_dump(mode="json"),
                "serving": served.describe() if served is not None else None}  # fmt: skip

    async def set_policy(self, name: str, body: bytes) -> dict[str, Any]:
        """Replaces the model's policy: promote (`default`), canary, shadow, rollback, which versions."""
        if not self.enabled:
            raise Forbidden(OFF)
        try:
            policy = Policy.model_validate_json(body)
        except ValidationError as e:
            raise invalid(e, body) from None
        await self.registry.refresh()  # what is on disk now: a version may have just been copied in
        if not self._on_disk(name):
            raise InvalidInput(
                f"no model {received_value(name)}",
                [field_error(["model"], "a known model", received_value(name), "not_found")],
            )
        on_disk = sorted(f.version for f in self.registry.table.found if f.name == name and f.version)
        named = {"default": policy.default, "canary": policy.canary and policy.canary.version,
                 "shadow": policy.shadow and policy.shadow.version}  # fmt: skip
        wrong = [field_error([k], f"one of the versions on disk {on_disk}", v, "not_found")
                 for k, v in named.items() if v is not None and v not in on_disk]  # fmt: skip
        if wrong:
            raise InvalidInput(f"model {name} has no such version on disk", wrong)
        await self._write(name, policy)
        return self.policy(name)
