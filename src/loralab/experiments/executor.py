"""The local executor: each job a `subprocess.Popen` on this machine, at most `max_parallel` at once,
stdout and stderr appended to the job's log file.

Each child gets its own process group (so a shutdown reaches whatever it started, e.g. torchrun's
workers) and, on Linux, dies with the study process: after a `kill -9` of the study no orphan keeps
training, and `--resume` finds the run's folder free instead of "in use".
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import IO

from loralab.experiments.jobs import Finished, Job

_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.2


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the study process dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    start: float


class LocalExecutor:
    """`jobs.Executor` with local processes; jobs submitted beyond `max_parallel` wait in order."""

    def __init__(self, max_parallel: int = 1, grace_seconds: float = 10.0):
        self.max_parallel = max(1, max_parallel)
        self.grace_seconds = grace_seconds
        self._pending: deque[Job] = deque()
        self._running: list[_Running] = []

    def submit(self, job: Job) -> None:
        self._pending.append(job)
        self._start_pending()

    def running(self) -> int:
        return len(self._running)

    def pids(self) -> dict[str, int]:
        """job id -> process id of each running job."""
        return {r.job.id: r.proc.pid for r in self._running}

    def _start_pending(self) -> None:
        while self._pending and len(self._running) < self.max_parallel:
            job = self._pending.popleft()
            job.log.parent.mkdir(parents=True, exist_ok=True)
            log = job.log.open("ab")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **job.env}
            try:
                proc = subprocess.Popen(
                    job.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=job.cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            except OSError:
                log.close()
                raise
            self._running.append(_Running(job, proc, log, time.monotonic()))

    def wait(self) -> list[Finished]:
        if not self._running and not self._pending:
            return []
        while True:
            done = [r for r in self._running if r.proc.poll() is not None]
            if done:
                break
            time.sleep(POLL_SECONDS)
        finished = []
        for r in done:
            self._running.remove(r)
            r.log.close()
            code = r.proc.returncode
            finished.append(Finished(r.job, code, time.monotonic() - r.start))
        self._start_pending()
        return finished

    def shutdown(self) -> None:
        """SIGTERM every running job's process group, SIGKILL what is left after the grace period."""
        self._pending.clear()
        for r in self._running:
            _signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for r in self._running:
            try:
                r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(r.proc, signal.SIGKILL)
                r.proc.wait()
            r.log.close()
        self._running.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
