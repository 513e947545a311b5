"""Shadow runs: a candidate version answers the same request in the background, and only the
difference is kept (nnserve_shadow_difference), as Seldon's shadows and Istio's mirroring do.

A shadow run starts after the live answer has been sent, as a task of its own: it never delays that
answer. At most SHADOW_IN_FLIGHT run at once per worker; beyond that the sample is skipped and
counted, so a slow candidate costs a bounded share of the worker, never a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from service import telemetry

if TYPE_CHECKING:
    from service.tasks.base import Adapter

log = logging.getLogger(__name__)
SHADOW_IN_FLIGHT = 4


class Shadows:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()  # held: the event loop keeps only weak references

    def submit(
        self, live: Adapter, candidate: Adapter, compute: Callable[[Adapter], Awaitable[Any]], answer: Any
    ) -> None:
        if len(self.tasks) >= SHADOW_IN_FLIGHT:
            telemetry.count_shadow_skipped(live.name, "busy")
            return
        task = asyncio.get_running_loop().create_task(self._run(live, candidate, compute, answer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self, live: Adapter, candidate: Adapter, compute: Callable[[Adapter], Awaitable[Any]], answer: Any
    ) -> None:
        await asyncio.sleep(0)  # the live answer's last send completes first
        try:
            measure, values = live.differences(answer, await compute(candidate))
        except Exception as e:  # the candidate's failure is the candidate's: it shows in the metric, not the answer
            log.warning("shadow %s v%s failed: %s", candidate.name, candidate.model.card.version, e)
            telemetry.count_shadow_skipped(live.name, "error")
            return
        observe = telemetry.shadow_observer(live.name, live.model.card.version, candidate.model.card.version, measure)
        for value in values:
            observe(value)


shadows = Shadows()  # one per worker process
