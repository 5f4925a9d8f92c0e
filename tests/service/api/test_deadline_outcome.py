"""A request cut off by its own deadline timer is counted as a timeout, whatever the clock says.

The loop's timer may fire a fraction of a millisecond before ``time.monotonic()`` reaches the
deadline (libuv keeps whole milliseconds); re-deriving "did the deadline pass?" from the clock
then counted such a request as an error. The timer records that it fired.
"""

from __future__ import annotations

import asyncio
import time

from service.api.deadlines import REQUEST_TIMER, RequestTimer, outcome_of


def test_cancellation_by_the_timer_is_a_timeout_even_before_the_clock_reaches_the_deadline():
    async def request(timers: list[RequestTimer]) -> str:
        timer = RequestTimer(time.monotonic() + 3600)  # far in the future on the clock
        token = REQUEST_TIMER.set(timer)
        timers.append(timer)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            return outcome_of(exc)
        finally:
            timer.handle.cancel()
            REQUEST_TIMER.reset(token)
        return "success"

    async def scenario() -> tuple[str, str]:
        timers: list[RequestTimer] = []
        gone = asyncio.create_task(request(timers))
        await asyncio.sleep(0)
        gone.cancel()  # a cancellation the timer did not cause: the client went away
        timed_out = asyncio.create_task(request(timers))
        await asyncio.sleep(0)
        timers[-1].expire()  # the loop fired it (early, as far as time.monotonic() goes)
        return await gone, await timed_out

    assert asyncio.run(scenario()) == ("error", "timeout")
