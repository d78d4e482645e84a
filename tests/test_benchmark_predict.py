"""The predict benchmark runs on real photos and prints figures that agree with each other (no
timing is asserted)."""

import json
import os

from experiments import benchmark_predict
from tests.photos.conftest import DEV_DIR

DEV_PHOTOS = ("2008_001009.jpg", "2009_004587.jpg")  # two faces each


def test_benchmark_predict_prints_consistent_figures(capsys, tmp_path):
    for name in DEV_PHOTOS:  # a small folder: links to two dev photos, read where they are
        os.symlink(DEV_DIR / name, tmp_path / name)
    result = benchmark_predict.main(["--photos_dir", str(tmp_path), "--repeats", "1",
                                     "--copies", "1", "--skip_cold", "--skip_big"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert result["photos_in_folder"] == 3 and result["faces_in_folder"] >= 3
    assert result["faces_one_photo"] >= 1 and result["detector"]
    stages = result["stage_ms"]
    assert set(stages) == {"decode", "detect", "crop", "network", "write"}
    assert all(v > 0 for v in stages.values()) and result["photos_per_s_folder"] > 0
    if "dlib_ms_per_photo_640" in result:  # the optional bench extra
        ratio = result["dlib_ms_per_photo_640"] / result["ms_per_photo_640"]
        assert abs(result["speedup_vs_dlib_end_to_end"] - ratio) < 0.02
