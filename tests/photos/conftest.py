"""Shared fixtures of the photo tests: the dev photos and the authors' weights, loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import OFFICIAL_DIR

# The dev photos (dlib's examples with machine labels), read where they are.
DEV_DIR = Path(os.environ.get("TCDCN_DEV_DIR", OFFICIAL_DIR.parent / "dev-photos"))


@pytest.fixture(scope="session")
def dev():
    from tcdcn_jax.photos import dev_set

    return dev_set.load(str(DEV_DIR))


@pytest.fixture(scope="session")
def official_params():
    from tcdcn_jax.photos import official

    return official.load_official_params(OFFICIAL_DIR / "model.mat")


@pytest.fixture(scope="session")
def authors_example():
    """(rgb image, box from list.txt, the 68 points of output.txt) of the authors' test image."""
    name, *box = (OFFICIAL_DIR / "list.txt").read_text().split()
    with Image.open(OFFICIAL_DIR / name.replace("\\", "/")) as im:
        rgb = np.asarray(im.convert("RGB"))
    ref = np.asarray((OFFICIAL_DIR / "output.txt").read_text().split()[1:], np.float64)
    return rgb, [float(v) for v in box], ref.reshape(68, 2)
