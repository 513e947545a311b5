"""Metric writes gathered over a turn of the event loop (service/tally.py): written at the next turn, before
anything else runs; summed; an in-flight gauge back where it was not written; histogram observations
written per bucket with the same exposition as one observe each; off the loop, written at once."""

from __future__ import annotations

import asyncio
import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.tally import Tally, observe_all

BUCKETS = [0.001, 0.01, 0.1, 1, 10]


class Spy:
    """A series child that records its writes."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, float]] = []

    def inc(self, amount: float = 1) -> None:
        self.writes.append(("inc", amount))

    def observe(self, value: float) -> None:
        self.writes.append(("observe", value))

    def set_to_current_time(self) -> None:
        self.writes.append(("stamp", 0))


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}  # fmt: skip


def test_observations_written_per_bucket_read_as_one_observe_each():
    values = [0.0005, 0.001, 0.002, 0.05, 0.05, 0.5, 3.0, 99.0, 1e9, 0.0, math.nan]
    one_by_one, gathered = CollectorRegistry(), CollectorRegistry()
    a = Histogram("latency", "l", ["model"], buckets=BUCKETS, registry=one_by_one).labels(model="m")
    b = Histogram("latency", "l", ["model"], buckets=BUCKETS, registry=gathered).labels(model="m")
    finite = [v for v in values if not math.isnan(v)]
    for v in finite:
        a.observe(v)
    observe_all(b, finite)
    want, got = samples(one_by_one), samples(gathered)
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-12), key
    # NaN falls in no bucket, as with observe
    c = Histogram("n", "n", buckets=BUCKETS, registry=CollectorRegistry())
    observe_all(c, [math.nan, 0.5])
    assert sum(bucket.get() for bucket in c._buckets) == 1


def test_a_turn_of_writes_is_made_once_at_the_next_turn():
    async def scenario():
        tally = Tally()
        answers, in_flight, latency, last = Spy(), Spy(), Spy(), Spy()
        for _ in range(5):  # five requests answered in one turn
            tally.add(in_flight, 1)
            tally.add(answers)
            tally.observe(latency, 0.002)
            tally.stamp(last)
            tally.add(in_flight, -1)
        assert answers.writes == latency.writes == last.writes == []  # nothing yet
        await asyncio.sleep(0)
        assert answers.writes == [("inc", 5.0)]
        assert in_flight.writes == []  # up and down again: left as it was
        assert latency.writes == [("observe", 0.002)] * 5  # a stand-in without buckets: one observe each
        assert last.writes == [("stamp", 0)]
        tally.add(answers)
        await asyncio.sleep(0)
        assert answers.writes == [("inc", 5.0), ("inc", 1.0)]

    asyncio.run(scenario())


def test_real_series_read_right_after_the_turn():
    registry = CollectorRegistry()
    counter = Counter("answers", "a", ["status"], registry=registry).labels(status="200")
    gauge = Gauge("in_flight", "f", registry=registry)
    histogram = Histogram("seconds", "s", buckets=BUCKETS, registry=registry)

    async def scenario():
        tally = Tally()
        tally.add(gauge, 1)
        for v in (0.005, 0.05, 0.05):
            tally.add(counter)
            tally.observe(histogram, v)
        await asyncio.sleep(0)
        got = samples(registry)
        assert got[("answers_total", (("status", "200"),))] == 3
        assert got[("in_flight", ())] == 1
        assert got[("seconds_count", ())] == 3 and math.isclose(got[("seconds_sum", ())], 0.105)
        assert got[("seconds_bucket", (("le", "0.01"),))] == 1 and got[("seconds_bucket", (("le", "0.1"),))] == 3

    asyncio.run(scenario())


def test_off_the_loop_writes_are_made_at_once():
    tally, spy = Tally(), Spy()
    tally.add(spy, 2)
    tally.observe(spy, 0.5)
    tally.stamp(spy)
    assert spy.writes == [("inc", 2), ("observe", 0.5), ("stamp", 0)]


def test_writes_left_by_a_loop_that_ended_are_made_when_the_next_loop_writes():
    tally, old, new = Tally(), Spy(), Spy()
    ended = asyncio.new_event_loop()
    ended.close()
    tally.adds[old], tally.due_on = 4.0, ended  # a flush scheduled on a loop that never ran it

    async def scenario():
        tally.add(new)
        assert old.writes == [("inc", 4.0)] and new.writes == []
        await asyncio.sleep(0)
        assert new.writes == [("inc", 1.0)]

    asyncio.run(scenario())


def test_at_exit_what_is_left_is_written():
    tally, spy = Tally(), Spy()

    async def scenario():
        tally.add(spy, 3)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(scenario())  # may or may not have turned again: flush says what is left
    loop.close()
    tally.flush()
    assert spy.writes == [("inc", 3.0)]


def test_the_flushs_own_multiprocess_writes_are_prometheus_clients(tmp_path, monkeypatch):
    """In multiprocess mode the flush writes the worker's memory-mapped values itself (MmapWrites): what a
    scrape reads is what prometheus_client's own writes give, series by series (counters, gauges up and
    down, a histogram's buckets and sum, a gauge set to the time), and a counter is still refused less."""
    import time

    import pytest
    from prometheus_client import values
    from prometheus_client.multiprocess import MultiProcessCollector

    import service.tally as tally_module

    def run(directory, fast: bool) -> dict[tuple, float]:
        directory.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        value_class = values.MultiProcessValue()
        monkeypatch.setattr(values, "ValueClass", value_class)
        mmap = tally_module._Mmap()
        mmap.made, mmap.writes = True, (tally_module.MmapWrites(value_class) if fast else None)
        monkeypatch.setattr(tally_module, "MMAP", mmap)
        registry = CollectorRegistry()  # the series' own, unread: a scrape reads the files
        answers = Counter("answers", "a", ["status"], registry=registry)
        in_flight = Gauge("in_flight", "f", registry=registry, multiprocess_mode="livesum")
        last = Gauge("last", "l", registry=registry, multiprocess_mode="max")
        seconds = Histogram("seconds", "s", ["model"], buckets=BUCKETS, registry=registry)

        async def scenario():
            tally = Tally()
            for turn in range(3):
                for status, latency in (("200", 0.005), ("200", 0.05), ("422", 3.0), ("200", math.nan)):
                    tally.add(answers.labels(status=status))
                    tally.add(in_flight, 1)
                    tally.observe(seconds.labels(model="m"), latency)
                    tally.stamp(last)
                tally.add(in_flight, -2 - turn)
                tally.observe(seconds.labels(model="n"), 0.5)  # one observation alone
                await asyncio.sleep(0)
            tally.add(answers.labels(status="200"), -1)
            with pytest.raises(ValueError):  # as prometheus_client refuses it
                tally.flush()

        asyncio.run(scenario())
        read = CollectorRegistry()
        MultiProcessCollector(read, path=str(directory))
        return samples(read)

    before = time.time()
    theirs, ours = run(tmp_path / "theirs", fast=False), run(tmp_path / "ours", fast=True)
    stamp = ("last", ())
    assert before <= ours.pop(stamp) <= time.time() and before <= theirs.pop(stamp) <= time.time()
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for key, value in theirs.items():
        assert math.isclose(ours[key], value, rel_tol=1e-12) or (math.isnan(value) and math.isnan(ours[key])), key


def test_the_multiprocess_writes_are_made_for_the_prometheus_client_installed(tmp_path, monkeypatch):
    """MmapWrites is used only where prometheus_client's code is what it was written for: with the version
    installed here it is (else this fails, and service/tally.py needs reading against the new code)."""
    from prometheus_client import values

    import service.tally as tally_module

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    assert isinstance(tally_module._mmap_writes(), tally_module.MmapWrites)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    assert tally_module._mmap_writes() is None
