"""Errors that loralab reports to a person, and how each maps to a one-line message.

Every error a user can cause (bad config, unknown model, a target that matches nothing) is a
`LoralabError`. The CLI catches these in one place (`loralab.cli`) and prints their `message()`
without a traceback unless `--debug` is given; anything else is a bug and keeps its traceback.
The collected-problems design follows torchtune's `ConfigError`: validation gathers every problem
and reports them at once instead of stopping at the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is, what is wrong, and how to fix it."""

    file: str
    key: str  # dotted key path inside the file ("lora.config.lora_alpha"); "" for the file itself
    message: str
    fix: str = ""

    def line(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        text = f"{where}: {self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class LoralabError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 2

    def message(self) -> str:
        return str(self)


class ConfigError(LoralabError):
    """A configuration with one or more problems; all of them are reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.message())

    def message(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the configuration:"
        return "\n".join([head, *("  - " + p.line() for p in self.problems)])


class ModelResolutionError(LoralabError):
    """`model.name_or_path` names nothing loralab can find."""


class PlanError(LoralabError):
    """The LoRA config cannot be applied to the architecture (e.g. a target that matches nothing)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.message())

    def message(self) -> str:
        return "\n".join(p.line() for p in self.problems)


@dataclass
class Notes:
    """Non-fatal notes gathered while loading (e.g. a transformers-4 field mapped to its v5 form)."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append(text)


class InputError(LoralabError):
    """A file or command-line value loralab was given is missing, damaged or not allowed. One line per
    problem, each naming the path or flag and a fix; unlike ConfigError there is no heading, because
    these almost always come one at a time and a person reads the first line of an error."""

    def __init__(self, problems: Problem | list[Problem]):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__(self.message())

    def message(self) -> str:
        return "\n".join(p.line() for p in self.problems)


class UsageError(InputError):
    """Command-line arguments that cannot run as given: a missing argument, options that exclude each
    other, a count or rate outside its range. Exit code 2, as click's own usage errors."""


class RunDirError(InputError):
    """A run directory lacks a file the command needs, or holds a damaged or unsafe one (pickles)."""
