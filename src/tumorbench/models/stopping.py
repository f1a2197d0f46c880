"""Stop a training at the end of its current batch when the process is asked to stop.

A cluster asks before it kills: at preemption, `scontrol requeue`, a node set down, or `scancel`, every
process of the task gets SIGTERM and, KillWait (or the partition's GraceTime) seconds later, SIGKILL; the
task script of `tumorbench slurm submit` passes on the signal Slurm sends it shortly before the time limit
(`--signal`). Ctrl-C at a terminal sends SIGINT. The training finishes the batch it is in, saves its resume
state, and the stage exits with STOPPED_EXIT, so at most one batch is lost and a rerun continues from there.
A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading

from tumorbench.core.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
STOPPED_EXIT = 75  # EX_TEMPFAIL: "try again later"; a cluster may requeue on it (slurm.conf RequeueExit=75)


class TrainingStopped(UserError):
    """A signal stopped the training after its resume state was saved; a rerun continues from there."""

    exit_code = STOPPED_EXIT


class StopRequest:
    """Context manager: while inside, the stop signals set `signal` (its name) instead of ending the process.
    Outside the main thread (where Python delivers signals) nothing is installed and no stop is requested."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        # Slurm may send SIGTERM both to the task and through the task script: a repeat changes nothing
        self.signal = self.signal or signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
