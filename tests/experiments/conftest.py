"""Studies (issue 11): many runs as one experiment.

The tiny-model fixtures of tests/train are shared here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
