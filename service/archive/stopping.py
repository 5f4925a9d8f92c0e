"""Ctrl-C and SIGTERM as a request to stop between units, not an exception anywhere.

An exception raised by the signal could land inside the part writer's commit (between the
rename and its bookkeeping); a flag checked between units cannot. A second Ctrl-C raises
``KeyboardInterrupt`` at once for someone who really means it (the open part is then lost,
as with a kill, and redone by the next run).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Self


class StopRequest:
    """While entered (main thread only), SIGINT/SIGTERM set ``requested``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
