"""One thing preflight (or a precision/loading check) found: what will fail and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """`check` names the check ("precision.fp16_on_bf16"); `message` says what will fail, `fix` what to do."""

    check: str
    severity: Severity
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.severity}] {self.check}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text
