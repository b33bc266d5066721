"""`--executor ray`: a study's runs as Ray tasks, on a local Ray instance or an existing cluster.

Each job is one Ray task that starts the job's `argv` as a subprocess on whatever node Ray places it,
so a run's crash, OOM or kill stays its own exactly as with the local executor. The task reads and
writes the study directory (the run's experiment.yaml, its run folder, its log) by the paths the driver
gave it, so **the study directory must be on a path every node can read and write** (a shared file
system mounted at the same path everywhere), and `argv[0]` (the driver's Python, with loralab
installed) must exist at the same path on every node. A local Ray instance has neither problem.

Ray is an optional extra (`pip install 'loralab[ray]'`); this module is imported only when
`--executor ray` is chosen.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loralab.errors import LoralabError
from loralab.experiments.jobs import Finished, Job

try:
    import ray
    import ray.exceptions
except ImportError:  # the extra is not installed: RayExecutor() says how to install it
    ray = None  # type: ignore[assignment]

INSTALL_HINT = "the ray executor needs `pip install 'loralab[ray]'`"
# The smallest object store Ray accepts is 75 MiB; the tasks only return (exit code, seconds), so a
# large store would only take memory away from the training processes.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
# After a polite cancel (SIGTERM to the run's process group) a run gets this long to exit before its
# Ray worker is killed outright.
CANCEL_GRACE_S = 10.0
FORCE_WAIT_S = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Any:
    """A preexec_fn that makes the kernel SIGKILL the run when its Ray worker dies (a forced
    `ray.cancel`, Ray's own OOM killer, `ray.shutdown`), so no training process outlives its task.
    Linux only; elsewhere None (a forced cancel may then leave the run's process behind)."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before the fork: the child must not load libraries between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the run's process group (the run and anything it started), then SIGKILL it."""
    for sig, grace in ((signal.SIGTERM, CANCEL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_job(argv: list[str], env: dict[str, str], cwd: str | None, log: str) -> tuple[int, float]:
    """The body of a Ray task: run one job to its end on this node; (exit code, seconds).

    The exit code follows the subprocess convention (negative: killed by that signal); 127/126 when
    `argv[0]` cannot be found or run on this node."""
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with path.open("ab") as out:
        # Which node ran it: on a cluster this is the first thing to know about a failed run.
        out.write(f"[loralab] ray task on {socket.gethostname()}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                # Unbuffered as with the local executor: the log shows a run's progress as it happens.
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a cancel reaches its children
                preexec_fn=_die_with_parent(),
            )
        except OSError as e:
            out.write(f"[loralab] cannot start {argv[0]!r} on {socket.gethostname()}: {e}\n".encode())
            return (127 if isinstance(e, FileNotFoundError) else 126), time.monotonic() - start
        try:
            # Polling keeps the task in Python bytecode, where a polite `ray.cancel` (KeyboardInterrupt)
            # is delivered.
            while True:
                try:
                    code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:
            _stop(proc)
            raise
    return code, time.monotonic() - start


def _failure_exit_code(error: Exception) -> int:
    """An exit code for a task that ended without reporting one: an exception in the task body (the
    log or the working directory is not reachable on that node) is 1; a worker or node that died
    (Ray's OOM killer, a lost node) counts as killed, -SIGKILL, as a process killed by the kernel."""
    return 1 if isinstance(error, ray.exceptions.RayTaskError) else -int(signal.SIGKILL)


class RayExecutor:
    """Runs jobs as Ray tasks, at most `max_parallel` submitted to Ray at once (the rest wait here).

    `address=None` starts a local Ray instance (`num_cpus`/`num_gpus` size it; default: the machine)
    or joins the one `ray start` left on this machine; `"auto"` or `"HOST:PORT"` joins an existing
    cluster. Each task asks Ray for `job.cpus` CPUs and `job.gpus` GPUs; a job that asks for no GPU
    gets one when the cluster has GPUs (one GPU per run wherever GPUs exist), since the driver that
    wrote the job may be a CPU-only head node. The study directory must be on a path every node can
    read and write.
    """

    def __init__(
        self,
        max_parallel: int,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
    ) -> None:
        if ray is None:
            raise LoralabError(INSTALL_HINT)
        if max_parallel < 1:
            raise LoralabError(f"--max-parallel must be at least 1, got {max_parallel}")
        self.max_parallel = max_parallel
        self._queue: collections.deque[Job] = collections.deque()
        self._inflight: dict[Any, tuple[Job, float]] = {}  # ObjectRef -> (job, time it went to Ray)
        # Shut Ray down at the end only if this executor connected this process to it; a caller that
        # had Ray running before keeps it.
        self._owns_connection = not ray.is_initialized()
        sizing: dict[str, Any] = {}
        if address is None:
            sizing = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v is not None}
            sizing["object_store_memory"] = OBJECT_STORE_BYTES
        try:
            _init(address, sizing)
        except ConnectionError as e:
            raise LoralabError(
                f"cannot reach the Ray cluster at {address!r}: {e} (fix: start it with `ray start --head` "
                "on the head node, or give no address for a local Ray instance)"
            ) from e
        node = getattr(getattr(ray, "_private", None), "worker", None)
        global_node = getattr(node, "_global_node", None)
        # A head node this process started cannot grow, so a job it can never fit is refused at once
        # instead of waiting forever; a cluster we joined may autoscale.
        self._fixed_size = self._owns_connection and bool(getattr(global_node, "head", False))
        resources = ray.cluster_resources()
        self._cluster_cpus = float(resources.get("CPU", 0))
        self._cluster_gpus = float(resources.get("GPU", 0))
        self._remote = ray.remote(run_job)

    def _gpus_for(self, job: Job) -> int:
        return job.gpus if job.gpus or self._cluster_gpus < 1 else 1

    def submit(self, job: Job) -> None:
        gpus = self._gpus_for(job)
        if self._fixed_size and (job.cpus > self._cluster_cpus or gpus > self._cluster_gpus):
            raise LoralabError(
                f"run {job.id} needs {job.cpus} CPUs and {gpus} GPUs, but the local Ray instance has "
                f"{self._cluster_cpus:g} CPUs and {self._cluster_gpus:g} GPUs "
                "(fix: run the study on a Ray cluster that has them, or ask for fewer per run)"
            )
        self._queue.append(job)
        self._fill()

    def _fill(self) -> None:
        while self._queue and len(self._inflight) < self.max_parallel:
            job = self._queue.popleft()
            ref = self._remote.options(
                num_cpus=job.cpus,
                num_gpus=self._gpus_for(job),
                name=f"loralab:{job.id}",
                max_retries=0,  # a run that died is recorded failed, never silently run twice
            ).remote(list(job.argv), dict(job.env), str(job.cwd) if job.cwd else None, str(job.log))
            self._inflight[ref] = (job, time.monotonic())

    def running(self) -> int:
        return len(self._inflight)

    def wait(self) -> list[Finished]:
        if not self._inflight:
            return []
        refs = list(self._inflight)
        ready: list[Any] = []
        while not ready:
            # A bounded wait keeps Ctrl-C of the study responsive.
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        finished = [self._collect(ref) for ref in ready]
        self._fill()
        return finished

    def _collect(self, ref: Any) -> Finished:
        job, sent = self._inflight.pop(ref)
        try:
            code, seconds = ray.get(ref)
            return Finished(job=job, exit_code=int(code), seconds=float(seconds))
        except ray.exceptions.RayError as e:
            code = _failure_exit_code(e)
            _note(job.log, f"[loralab] the Ray task of {job.id} failed ({type(e).__name__}): {e}")
            return Finished(job=job, exit_code=code, seconds=time.monotonic() - sent)

    def shutdown(self) -> None:
        self._queue.clear()
        refs = list(self._inflight)
        for ref in refs:
            ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: it SIGTERMs its run
        if refs:
            _, stuck = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S + 10)
            for ref in stuck:
                ray.cancel(ref, force=True)  # kills the worker; PDEATHSIG takes the run with it
            if stuck:
                # A forced cancel returns before the worker is gone: wait for it, so that the runs
                # are stopped when shutdown returns.
                ray.wait(stuck, num_returns=len(stuck), timeout=FORCE_WAIT_S)
        self._inflight.clear()
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


def _init(address: str | None, sizing: dict[str, Any]) -> None:
    common: dict[str, Any] = {
        "log_to_driver": False,  # each run's output goes to its own log, not the study's console
        "include_dashboard": False,
        "ignore_reinit_error": True,
    }
    try:
        ray.init(address=address, **common, **sizing)
    except ValueError as e:
        # With no address Ray still joins a cluster when RAY_ADDRESS is set or `ray start` left one on
        # this machine, and then refuses sizes, which only apply to a new instance. It checks before
        # connecting, so asking again without them is safe.
        if not sizing or "connecting to an existing cluster" not in str(e):
            raise
        ray.init(address=address, **common)


def _note(log: Path, line: str) -> None:
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError:
        pass  # the log's folder is not reachable from the driver either; the exit code still says it
