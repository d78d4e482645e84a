"""The `tcdcn` command: each bad input is one stderr line and exit status 2 while the other images
are still processed; import-official + predict reproduce the authors' output; drawing; folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax.photos import cli
from tests.photos.test_predictor import make_workdir, official_dir, official_example
from tests.support import REPO

BOX = "10,10,40,40"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {name: d / name for name in ("good.png", "tiny.png", "blank.png", "cut.jpg",
                                         "text.png", "face.jpg")}
    Image.fromarray(rng.integers(0, 256, (80, 90), dtype=np.uint8)).save(paths["good.png"])
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(paths["tiny.png"])
    Image.fromarray(np.full((120, 120), 128, np.uint8)).save(paths["blank.png"])
    image, _, _ = official_example()
    paths["cut.jpg"].write_bytes(image.read_bytes()[:20000])
    paths["text.png"].write_text("not an image\n")
    shutil.copy(image, paths["face.jpg"])
    return paths


def _run(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line], captured.out


def _errors(lines: list[str]) -> list[str]:
    assert not any("Traceback" in line for line in lines), lines
    return [line for line in lines if line.startswith("tcdcn: error:")]


def test_bad_files_in_a_fresh_process_one_line_each(tmp_path, workdir, images):
    out = tmp_path / "out.json"
    argv = [sys.executable, "-m", "tcdcn_jax.photos.cli", "predict", images["good.png"],
            tmp_path / "missing.png", images["cut.jpg"], images["text.png"], images["tiny.png"],
            "--weights", workdir, "--box", BOX, "--json", out]
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = _errors(proc.stderr.splitlines())
    assert len(errors) == 4, proc.stderr
    for name, words in [("missing.png", "no such file"), ("cut.jpg", "not a readable image"),
                        ("text.png", "not a readable image"), ("tiny.png", "outside")]:
        assert any(name in e and words in e for e in errors), (name, errors)
    doc = json.loads(out.read_text())
    by_name = {Path(r["image"]).name: r for r in doc["images"]}
    assert len(by_name["good.png"]["faces"]) == 1
    assert np.shape(by_name["good.png"]["faces"][0]["landmarks"]) == (5, 2)
    assert set(by_name["good.png"]["faces"][0]["aux"]) == {"pose", "gender"}
    assert "outside" in by_name["tiny.png"]["error"]


def test_no_face_found_and_detected_face(capsys, workdir, images):
    code, lines, out = _run(capsys, "predict", images["blank.png"], images["face.jpg"],
                            "--weights", workdir)
    assert code == 2
    errors = _errors(lines)
    assert len(errors) == 1 and "blank.png" in errors[0] and "no face found" in errors[0]
    doc = json.loads(out)
    faces = {Path(r["image"]).name: r.get("faces") for r in doc["images"]}
    assert faces["blank.png"] is None and len(faces["face.jpg"]) == 1
    left, top, width, _ = faces["face.jpg"][0]["box"]
    assert abs(left - 296) < 15 and abs(top - 289) < 15 and abs(width - 271) < 15


@pytest.mark.parametrize("argv, words", [
    (["--box", "0,0,0,10"], "below 1 px"),
    (["--box", "1,2,3"], "--box must be"),
    (["--box", "a,b,c,d"], "--box must be"),
    (["--box", "1,2,3,4", "--batch-size", "0"], "--batch-size"),
])
def test_bad_boxes_and_options(capsys, workdir, images, argv, words):
    code, lines, _ = _run(capsys, "predict", images["good.png"], "--weights", workdir, *argv)
    assert code == 2
    errors = _errors(lines)
    assert len(errors) == 1 and words in errors[0], errors


def test_weights_that_do_not_fit_or_do_not_exist(capsys, tmp_path, workdir, images):
    wrong = tmp_path / "wrong"
    shutil.copytree(workdir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["trunk"] = "report"  # eccv params under a report config: shapes differ
    (wrong / "config.json").write_text(json.dumps(config))
    for weights, words in [(wrong, "does not fit a report TCDCN"), (tmp_path / "nope", "no such"),
                           (tmp_path / "nope.mat", "no such file")]:
        code, lines, out = _run(capsys, "predict", images["good.png"], "--weights", weights,
                                "--box", BOX)
        assert code == 2 and out == ""
        errors = _errors(lines)
        assert len(errors) == 1 and words in errors[0] and str(weights) in errors[0], errors


def test_import_official_then_predict_reproduces_the_authors_output(capsys, tmp_path, images):
    image, box, points = official_example()
    code, lines, out = _run(capsys, "import-official", official_dir() / "model.mat",
                            tmp_path / "official")
    assert code == 0, lines
    assert (tmp_path / "official" / "config.json").is_file()
    code, lines, _ = _run(capsys, "predict", image, "--weights", tmp_path / "official", "--box",
                          ",".join(str(v) for v in box), "--json", tmp_path / "out.json",
                          "--draw", tmp_path / "draw")
    assert code == 0, lines
    doc = json.loads((tmp_path / "out.json").read_text())
    lm = np.array(doc["images"][0]["faces"][0]["landmarks"])
    assert lm.shape == (68, 2)
    assert np.linalg.norm(lm - points, axis=1).mean() < 2.5
    drawn = Image.open(doc["images"][0]["drawn"])
    assert drawn.size == Image.open(image).size
    # Red landmark dots were drawn where the points are.
    x, y = np.round(lm[30]).astype(int)
    assert drawn.convert("RGB").getpixel((int(x), int(y))) == (255, 0, 0)


def test_a_sideways_phone_photo_is_read_and_drawn_upright(capsys, tmp_path, workdir):
    from tcdcn_jax.photos.predictor import Predictor

    upright = np.random.default_rng(3).integers(0, 256, (90, 60), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored a quarter turn anticlockwise; viewers turn it back clockwise
    Image.fromarray(np.rot90(upright, k=1)).save(tmp_path / "phone.png", exif=exif.tobytes())
    box = (5.0, 20.0, 45.0, 50.0)  # in the upright photo, as the user sees it
    code, lines, _ = _run(capsys, "predict", tmp_path / "phone.png", "--weights", workdir,
                          "--box", ",".join(map(str, box)), "--json", tmp_path / "out.json",
                          "--draw", tmp_path / "draw")
    assert code == 0, lines
    doc = json.loads((tmp_path / "out.json").read_text())
    (want,) = Predictor.from_checkpoint(workdir).predict(upright, [box])
    np.testing.assert_allclose(doc["images"][0]["faces"][0]["landmarks"], want.landmarks, atol=1e-3)
    assert Image.open(doc["images"][0]["drawn"]).size == (60, 90)


def test_import_official_refuses_bad_files(capsys, tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"\x00" * 100)
    for path, words in [(tmp_path / "none.mat", "no such file"), (tmp_path / "bad.mat", ".mat")]:
        code, lines, _ = _run(capsys, "import-official", path, tmp_path / "out")
        assert code == 2
        errors = _errors(lines)
        assert len(errors) == 1 and words in errors[0], errors


def test_folder_with_progress(capsys, tmp_path, workdir, images):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("good.png", "blank.png"):
        shutil.copy(images[name], folder / name)
    (folder / "notes.txt").write_text("skipped: not an image extension")
    code, lines, out = _run(capsys, "predict", folder, "--weights", workdir, "--box", BOX,
                            "--progress")
    assert code == 0, lines
    assert "[2/2] images, 2 faces" in "".join(lines)
    doc = json.loads(out)
    assert [Path(r["image"]).name for r in doc["images"]] == ["blank.png", "good.png"]
