"""Paths the tests share: the repository root and the read-only reference folder beside it."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The authors' released files (model.mat, the example image and its output), read where they are.
OFFICIAL_DIR = Path(os.environ.get("TCDCN_OFFICIAL_DIR",
                                   REPO.parent / "shared" / "reference" / "official-tcdcn"))
