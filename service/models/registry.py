"""The models this worker serves, and their versions: the table of the moment, swapped in whole.

The planner (service/models/planner.py) makes a table from the models directory, in a thread; the
registry swaps it in with one assignment in the event loop, so a request sees the old table or the new
one. Requests already holding a version finish on it; a version dropped from the table is freed when
they are done (and its memory given back). The registry looks again every NNSERVE_MODEL_POLL_S, at
once when another worker's management call says so (service/workers.py), and when asked (`refresh`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time

from service import telemetry
from service.errors import ModelUnavailable, NotFound, field_error, received_value
from service.models.planner import Planner, Served, Table
from service.settings import Settings
from service.shutdown import drain
from service.tasks.base import Adapter
from service.workers import EPOCH_POLL_S, Workers

log = logging.getLogger(__name__)
GIVE_BACK_AFTER_S = 2.0
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def give_back_memory() -> None:
    """What a worker freed, handed back to the system. glibc keeps freed memory for reuse: four cycles
    of 500 versions loaded then unloaded grew a worker 754 -> 1,079 -> 1,257 -> 1,373 MB, and with
    malloc_trim(0) after each it stayed at 397-398 MB (make memory checks it)."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only (not musl, not macOS)
    if trim is not None:
        trim(0)


class Registry:
    def __init__(self, settings: Settings, workers: Workers | None = None) -> None:
        self.settings = settings
        self.workers = workers or Workers()
        self.planner = Planner(settings)
        self.policy_file = self.planner.policy_file
        self.default_policy = self.planner.default_policy
        self.table = Table()
        self._defaults: tuple[Table | None, dict[str, Adapter]] = (None, {})
        self.generation = 0  # counts swaps: what is built from the models (routes, documents) follows it
        self._look: asyncio.Future[Table] | None = None  # the look at the directory under way, in its thread
        self.stuck_since: float | None = None  # a look that has not come back within the timeout, since when
        epoch = self.workers.epoch()
        self.apply(self.planner.plan(self.table))
        self.workers.applied(epoch)

    # --- swapping -------------------------------------------------------------------------------------
    def apply(self, table: Table) -> None:
        """Swaps the table in (in the event loop: requests see the old table or the new one). Most
        looks change nothing: the model metrics are redone only when something did."""
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
        epoch = self.workers.epoch()  # read before the look: the look sees whatever that epoch's call wrote
        self._look = loop.run_in_executor(None, self.planner.plan, self.table)
        self._look.add_done_callback(lambda look: self._looked(look, epoch))
        await self._wait(self._look, deadline)

    def _looked(self, look: asyncio.Future[Table], epoch: int) -> None:
        self._look = None
        if self.stuck_since is not None:
            took = time.monotonic() - self.stuck_since
            log.warning("%s answers again: the look took %.0f s", self.settings.models_dir, took)
            self.stuck_since = None
        if not look.cancelled() and look.exception() is None:  # plan() does not raise
            self.apply(look.result())
            self.workers.applied(epoch)

    async def _wait(self, look: asyncio.Future[Table], deadline: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(look), max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            if self.stuck_since is None:
                self.stuck_since = time.monotonic()
                timeout, folder = self.settings.models_dir_timeout_s, self.settings.models_dir
                log.error("%s: a look at it has not come back within %g s (NNSERVE_MODELS_DIR_TIMEOUT_S); the models "
                          "in force keep serving", folder, timeout)  # fmt: skip
            raise ModelUnavailable(
                f"the models directory {self.settings.models_dir} has not answered within "
                f"{self.settings.models_dir_timeout_s:g} s (NNSERVE_MODELS_DIR_TIMEOUT_S): what is served has not "
                "changed; the change is made when it answers"
            ) from None

    async def watch(self, interval_s: float) -> None:
        """Looks again every `interval_s` (0: never on its own), and at once when another worker's
        management call moves the epoch (a stat every EPOCH_POLL_S)."""
        loop = asyncio.get_running_loop()
        seen, next_look = self.workers.stamp(), loop.time() + interval_s
        while True:
            await asyncio.sleep(EPOCH_POLL_S)
            stamp = self.workers.stamp()
            due = interval_s > 0 and loop.time() >= next_look
            if stamp == seen and not due:
                continue
            seen, next_look = stamp, loop.time() + interval_s
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
    def adapters(self) -> dict[str, Adapter]:
        """Each model's default version (made once per table: every request reads it; not to be changed)."""
        table = self.table
        if self._defaults[0] is not table:
            self._defaults = (table, {name: s.versions[s.default] for name, s in table.models.items()})
        return self._defaults[1]

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
