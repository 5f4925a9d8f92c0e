"""A worker's half of the ``--workers`` reload protocol: ask the supervisor to reload all.

Why a module of its own: the reload routes (routers/repository.py) run inside the app, and the
supervisor (workers.py) starts the app; with the worker's half here, neither imports the other
through the app, and the protocol (an environment variable naming the supervisor, SIGUSR1 to
it) is written down once.
"""

from __future__ import annotations

import os
import signal

SUPERVISOR_ENV = "SPECULA_SUPERVISOR_PID"  # set by the supervisor for the workers it spawns


def notify_supervisor() -> bool:
    """Ask the supervisor (if this process is one of its workers) to have every worker
    reload; True when there is one."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or int(supervisor) != os.getppid():
        return False
    os.kill(int(supervisor), signal.SIGUSR1)
    return True
