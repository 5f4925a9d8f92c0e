"""DynamicBatcher: rows not requests, split and merge, bounded queue, deadlines, draining."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.inference.batcher import (
    BatcherClosed,
    DeadlineExceeded,
    DynamicBatcher,
    QueueFull,
    RequestTooLarge,
)
from service.metrics import BatchStats


class Recorder:
    """A batch function that remembers every list it was called with."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        return [x * 10 for x in items]


def run(coro):
    return asyncio.run(coro)


def test_oversized_request_is_split_and_reassembled_in_order():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_s=0.0)
        out = await b.submit(list(range(10)))
        await b.close()
        return fn, out

    fn, out = run(main())
    assert out == [x * 10 for x in range(10)]
    assert [len(c) for c in fn.calls] == [4, 4, 2]
    assert [x for c in fn.calls for x in c] == list(range(10))


def test_small_requests_share_one_batch():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_s=0.5)
        # all five are queued before the loop's first await returns, so they fill one batch
        outs = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(5)))
        await b.close()
        return fn, outs

    fn, outs = run(main())
    assert outs == [[i * 10, (i + 100) * 10] for i in range(5)]
    assert len(fn.calls) == 1 and sorted(fn.calls[0]) == sorted(
        x for i in range(5) for x in (i, i + 100))


def test_a_full_batch_does_not_wait_for_the_queue_delay():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_s=3600.0)
        out = await b.submit([1, 2, 3, 4])  # would hang for an hour if the delay applied
        await b.close()
        return out

    assert run(main()) == [10, 20, 30, 40]


def test_batch_function_must_return_one_output_per_input():
    async def main():
        b = DynamicBatcher(lambda items: items[:-1], max_batch_size=8, max_queue_delay_s=0)
        try:
            with pytest.raises(RuntimeError, match="2 outputs for 3 inputs"):
                await b.submit([1, 2, 3])
        finally:
            await b.close()

    run(main())


def test_bounded_queue_rejects_and_oversized_request_never_fits():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=3600.0, max_queue_rows=6)
        first = asyncio.ensure_future(b.submit([1, 2, 3, 4]))
        await asyncio.sleep(0)  # let it enqueue
        assert b.depth == 4
        with pytest.raises(QueueFull):
            await b.submit([5, 6, 7])
        with pytest.raises(RequestTooLarge):
            await b.submit(list(range(7)))
        await b.close()  # closing flushes the waiting partial batch
        return await first, fn

    out, fn = run(main())
    assert out == [10, 20, 30, 40]
    assert fn.calls == [[1, 2, 3, 4]]  # the rejected rows never reached the function


def test_expired_request_is_dropped_before_the_function_sees_it():
    async def main():
        fn = Recorder()
        stats = []
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0.3, on_stats=stats.append)
        late = b.submit([1, 2], deadline=time.monotonic() + 0.05)
        ok = b.submit([3])
        results = await asyncio.gather(late, ok, return_exceptions=True)
        await b.close()
        return results, fn, stats

    (late, ok), fn, stats = run(main())
    assert isinstance(late, DeadlineExceeded)
    assert ok == [30]
    assert fn.calls == [[3]]
    assert [s.size for s in stats if isinstance(s, BatchStats)] == [1]


def test_past_deadline_is_refused_at_submit():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0)
        with pytest.raises(DeadlineExceeded):
            await b.submit([1], deadline=time.monotonic() - 1)
        await b.close()
        return fn

    assert run(main()).calls == []


def test_close_drains_accepted_work_and_refuses_new():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=2, max_queue_delay_s=3600.0)
        pending = [asyncio.ensure_future(b.submit([i])) for i in range(5)]
        await asyncio.sleep(0)
        await b.close()
        with pytest.raises(BatcherClosed):
            await b.submit([99])
        return [await p for p in pending]

    assert run(main()) == [[0], [10], [20], [30], [40]]


def test_failure_in_function_fails_only_its_batch():
    async def main():
        def fn(items):
            if 13 in items:
                raise ValueError("unlucky")
            return items

        b = DynamicBatcher(fn, max_batch_size=1, max_queue_delay_s=0)
        results = await asyncio.gather(b.submit([13]), b.submit([7]), return_exceptions=True)
        await b.close()
        return results

    bad, good = run(main())
    assert isinstance(bad, ValueError) and good == [7]


class Gate(Recorder):
    """A batch function that holds every batch until released, so a test sees which batches
    are in flight at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        out = super().__call__(items)
        self.release.wait(30)
        return out


async def until(predicate, what: str) -> None:
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def test_an_idle_instance_takes_what_is_queued_and_a_busy_one_lets_rows_gather():
    """Triton's instance semantics: with two batches allowed, a request arriving while one
    runs starts the second at once; rows arriving while both run form the next batch."""
    async def main():
        fn = Gate()
        b = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_s=0.0,
                           max_concurrent_batches=2)
        first = asyncio.create_task(b.submit([1]))
        await until(lambda: len(fn.calls) == 1, "the first batch started")
        second = asyncio.create_task(b.submit([2, 3]))
        await until(lambda: len(fn.calls) == 2, "a partial batch started beside the first")
        third = asyncio.create_task(b.submit([4]))
        fourth = asyncio.create_task(b.submit([5, 6]))
        for _ in range(20):  # both instances busy: the new rows must wait, together
            await asyncio.sleep(0)
        calls_while_busy = len(fn.calls)
        fn.release.set()
        outs = await asyncio.gather(first, second, third, fourth)
        await b.close()
        return fn, calls_while_busy, outs

    fn, calls_while_busy, outs = run(main())
    assert calls_while_busy == 2
    assert fn.calls[:2] == [[1], [2, 3]]
    # the gathered rows run once instances free up, in order (one batch, or shared by both)
    assert [x for call in fn.calls[2:] for x in call] == [4, 5, 6]
    assert outs == [[10], [20, 30], [40], [50, 60]]


def test_idle_instances_share_the_queue():
    """Eight rows queued, two idle instances: 4 + 4 on two cores, not 8 on one."""
    async def main():
        fn = Gate()
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0.0,
                           max_concurrent_batches=2)
        pending = [asyncio.create_task(b.submit([i])) for i in range(8)]
        await until(lambda: len(fn.calls) == 2, "both instances started")
        fn.release.set()
        outs = await asyncio.gather(*pending)
        await b.close()
        return fn, outs

    fn, outs = run(main())
    assert fn.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert outs == [[10 * i] for i in range(8)]


class Gates(Recorder):
    """Holds call i until ``release(i)``: a test finishes one running batch, not all."""

    def __init__(self) -> None:
        super().__init__()
        self.events = [threading.Event() for _ in range(8)]

    def __call__(self, items: list[int]) -> list[int]:
        i = len(self.calls)
        out = super().__call__(items)
        self.events[i].wait(30)
        return out

    def release(self, *calls: int) -> None:
        for i in calls or range(len(self.events)):
            self.events[i].set()


async def one_batch_running(balance_delay_s: float
                            ) -> tuple[Gates, DynamicBatcher, asyncio.Task]:
    """A two-instance batcher where [0, 1, 2, 3] split over both idle instances and the
    second half finished, so a 2-row batch is left running beside an idle instance."""
    fn = Gates()
    b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0.0,
                       max_concurrent_batches=2, balance_delay_s=balance_delay_s)
    task = asyncio.create_task(b.submit([0, 1, 2, 3]))
    await until(lambda: len(fn.calls) == 2, "both halves started")
    fn.release(1)
    await until(lambda: len(b._running) == 1, "the second half finished")
    return fn, b, task


def test_beside_a_running_batch_an_idle_instance_waits_for_as_many_rows():
    async def main():
        fn, b, first = await one_batch_running(balance_delay_s=30.0)
        lone = asyncio.create_task(b.submit([4]))
        for _ in range(50):
            await asyncio.sleep(0)
        calls_with_one_row_queued = len(fn.calls)
        other = asyncio.create_task(b.submit([5]))
        await until(lambda: len(fn.calls) == 3, "the balanced batch started")
        fn.release()
        outs = await asyncio.gather(first, lone, other)
        await b.close()
        return fn, calls_with_one_row_queued, outs

    fn, calls_with_one_row_queued, outs = run(main())
    assert calls_with_one_row_queued == 2
    assert fn.calls == [[0, 1], [2, 3], [4, 5]]
    assert outs == [[0, 10, 20, 30], [40], [50]]


def test_balance_waits_no_longer_than_its_delay():
    async def main():
        fn, b, first = await one_batch_running(balance_delay_s=0.05)
        t0 = time.monotonic()
        lone = asyncio.create_task(b.submit([4]))
        await until(lambda: len(fn.calls) == 3, "the lone row started after the delay")
        waited = time.monotonic() - t0
        fn.release()
        outs = await asyncio.gather(first, lone)
        await b.close()
        return fn, waited, outs

    fn, waited, outs = run(main())
    assert fn.calls == [[0, 1], [2, 3], [4]]
    assert 0.04 <= waited < 5
    assert outs == [[0, 10, 20, 30], [40]]


def test_concurrent_batches_drain_on_close():
    async def main():
        fn = Recorder()
        b = DynamicBatcher(fn, max_batch_size=3, max_queue_delay_s=0.0,
                           max_concurrent_batches=2)
        pending = [asyncio.create_task(b.submit(list(range(i * 10, i * 10 + 5))))
                   for i in range(4)]
        await asyncio.sleep(0)
        await b.close()  # everything accepted is answered before close returns
        return fn, [p.result() for p in pending]

    fn, outs = run(main())
    assert outs == [[x * 10 for x in range(i * 10, i * 10 + 5)] for i in range(4)]
    assert sorted(x for c in fn.calls for x in c) == sorted(
        x for i in range(4) for x in range(i * 10, i * 10 + 5))
    assert all(len(c) <= 3 for c in fn.calls)


def test_expired_request_leaves_the_queue_at_its_deadline_while_every_instance_is_busy():
    """The only instance runs a long batch, so the loop sleeps until it finishes: a request
    whose deadline passes meanwhile must still answer at its deadline and give its rows
    back at once (the next request fits), not when the long batch ends."""
    async def main():
        fn = Gate()
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0.0, max_queue_rows=4)
        long_batch = asyncio.create_task(b.submit([1]))
        await until(lambda: len(fn.calls) == 1, "the long batch started")
        deadline = time.monotonic() + 0.02
        with pytest.raises(DeadlineExceeded):
            await b.submit([2, 3, 4], deadline=deadline)
        overshoot = time.monotonic() - deadline
        depth_after = b.depth
        fits = asyncio.create_task(b.submit([5, 6, 7, 8]))  # QueueFull if 2-4 were still held
        await asyncio.sleep(0)
        fn.release.set()
        outs = await asyncio.gather(long_batch, fits)
        await b.close()
        return fn, overshoot, depth_after, outs

    fn, overshoot, depth_after, outs = run(main())
    assert overshoot <= 0.25
    assert depth_after == 0
    assert outs == [[10], [50, 60, 70, 80]]
    assert fn.calls == [[1], [5, 6, 7, 8]]  # the expired rows never reached the function


def test_a_cancelled_caller_gives_its_rows_back_at_once():
    """A caller cancelled from outside (client gone, the API's deadline timer, shutdown)
    leaves the queue when it is cancelled, not when the loop next wakes."""
    async def main():
        fn = Gate()
        b = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_s=0.0, max_queue_rows=4)
        long_batch = asyncio.create_task(b.submit([1]))
        await until(lambda: len(fn.calls) == 1, "the long batch started")
        waiting = asyncio.create_task(b.submit([2, 3]))
        await until(lambda: b.depth == 2, "the second request queued")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        depth_after = b.depth
        fn.release.set()
        await long_batch
        await b.close()
        return fn, depth_after

    fn, depth_after = run(main())
    assert depth_after == 0
    assert fn.calls == [[1]]
