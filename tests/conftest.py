"""Suite-wide: never contact the hub, never write to the user's real loralab cache."""

from __future__ import annotations

import os
import tempfile


def pytest_configure() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("LORALAB_CACHE_DIR", tempfile.mkdtemp(prefix="loralab-test-cache-"))
