"""A training run of a study as a job an executor runs: one `loralab train` process, isolated from the
others (its crash, OOM or kill -9 is its own), with its log in a file.

Executors (`local`: subprocesses on this machine; `ray`: Ray tasks on a cluster) only run jobs and
report exit codes; the study runner decides what a job is and what its exit code means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Job:
    id: str  # RunRecord.id: "<name>-s<seed>"
    argv: list[str]  # e.g. [sys.executable, "-m", "loralab", "train", CONFIG, "--output", RUN_DIR, "--quiet"]
    log: Path  # stdout and stderr of the process, appended
    env: dict[str, str] = field(default_factory=dict)  # added to the parent's environment
    cwd: Path | None = None
    gpus: int = 0  # what the job needs (Ray: num_gpus); 0 on a CPU-only machine
    cpus: int = 1


@dataclass
class Finished:
    job: Job
    exit_code: int  # negative: killed by that signal (subprocess convention)
    seconds: float


class Executor(Protocol):
    """Runs jobs, at most `max_parallel` at a time. `submit` never blocks; `wait` blocks until at
    least one submitted job has finished and returns the finished ones; `shutdown` stops what is
    still running (Ctrl-C of the study) and returns."""

    max_parallel: int

    def submit(self, job: Job) -> None: ...

    def running(self) -> int: ...

    def wait(self) -> list[Finished]: ...

    def shutdown(self) -> None: ...
