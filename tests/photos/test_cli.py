"""The `tcdcn` command: results streamed one JSON line per image (kept after an interrupt), every
input or usage error one line naming the file with exit status 2 (output paths checked before any
work), phone photos and 16-bit images, stdin, folders (recursive, content sniffing), per-image box
CSVs, negative boxes, the three formats, --version without heavy imports, every Predictor option
passed through (--refine, --averaged and --detector change the result as the Predictor's own do),
and the authors' model reproduced through import-official + predict."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax.data.ibug300w import read_pts
from tcdcn_jax.photos import cli
from tcdcn_jax.photos.predictor import Predictor
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


def _run(capsys, *argv) -> tuple[int, list[str], str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line], captured.out


def _errors(lines: list[str]) -> list[str]:
    assert not any("Traceback" in line for line in lines), lines
    return [line for line in lines if line.startswith("tcdcn: error:")]


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@functools.lru_cache(maxsize=1)
def _reference(workdir: Path) -> Predictor:
    return Predictor.from_checkpoint(workdir)


def _want(workdir: Path, image, box) -> np.ndarray:
    """The landmarks the library gives for this image and box."""
    (face,) = _reference(workdir).predict(image, [box])
    return face.landmarks


def test_bad_files_one_line_each_and_a_line_per_image(capsys, tmp_path, workdir, images):
    out = tmp_path / "out.jsonl"
    csv_file = tmp_path / "boxes.csv"  # boxes for two of the files; the others fail before that
    csv_file.write_text("".join(f"{images[n]},{BOX}\n" for n in ("good.png", "tiny.png")))
    code, lines, stdout = _run(capsys, "predict", images["good.png"], tmp_path / "missing.png",
                               images["cut.jpg"], images["text.png"], images["tiny.png"],
                               "--weights", workdir, "--boxes", csv_file, "--out", out)
    assert code == 2 and stdout == ""
    errors = _errors(lines)
    assert len(errors) == 4, lines
    for name, words in [("missing.png", "no such file"), ("cut.jpg", "not a readable image"),
                        ("text.png", "not a readable image"), ("tiny.png", "outside")]:
        assert any(name in e and words in e for e in errors), (name, errors)
    records = _records(out.read_text())  # one self-contained line per image found
    by_name = {Path(r["image"]).name: r for r in records}
    assert list(by_name) == ["good.png", "missing.png", "cut.jpg", "text.png", "tiny.png"]
    (face,) = by_name["good.png"]["faces"]
    assert set(face) == {"box", "score", "landmarks", "points5", "aux"}
    assert np.shape(face["landmarks"]) == (5, 2) and face["points5"] == face["landmarks"]
    assert face["score"] is None and by_name["good.png"]["detector"] is None
    assert set(face["aux"]) == {"pose", "gender"}
    assert "outside" in by_name["tiny.png"]["error"] and "tiny.png" in by_name["tiny.png"]["error"]


def test_an_interrupt_keeps_every_line_already_written(tmp_path, workdir, subprocess_env):
    photo = tmp_path / "big.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (1500, 1500, 3), dtype=np.uint8)).save(photo)
    argv = [sys.executable, "-m", "tcdcn_jax.photos.cli", "predict", *[photo] * 400,
            "--weights", workdir, "--boxes", tmp_path / "boxes.csv"]
    (tmp_path / "boxes.csv").write_text(f"big.jpg,{BOX}\n")
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=subprocess_env)
    first = proc.stdout.readline()  # streamed: here long before the 400th image
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    records = _records(first + rest)
    assert 1 <= len(records) < 400
    assert all(len(r["faces"]) == 1 for r in records)


def test_a_crash_keeps_the_lines_written_and_exits_1(capsys, monkeypatch, tmp_path, workdir,
                                                    images):
    real = Predictor.stream

    def crashing(*args, **kwargs):
        results = real(*args, **kwargs)
        yield next(results)
        raise RuntimeError("a bug")
    monkeypatch.setattr(Predictor, "stream", crashing)
    csv_file = _csv(tmp_path, [(images["good.png"], BOX), (images["blank.png"], BOX)])
    code, lines, _ = _run(capsys, "predict", "--weights", workdir, "--boxes", csv_file, "--out",
                          tmp_path / "out.jsonl")
    assert code == 1 and lines == ["tcdcn: internal error: RuntimeError: a bug"], lines
    (record,) = _records((tmp_path / "out.jsonl").read_text())
    assert Path(record["image"]).name == "good.png" and len(record["faces"]) == 1


def test_no_face_found_is_a_result_and_a_detected_face_has_a_score(capsys, workdir, images):
    code, lines, out = _run(capsys, "predict", images["blank.png"], images["face.jpg"],
                            "--weights", workdir)
    assert code == 0 and not _errors(lines)
    assert any("blank.png" in line and "no face found" in line for line in lines), lines
    blank, face = _records(out)
    assert blank["faces"] == [] and blank["detector"] == face["detector"] is not None
    found = face["faces"][0]  # best score first; a second face is cut by the left edge
    left, top, width, _ = found["box"]  # the face's 68 points span x 275..590, y 290..640
    assert abs(left + width / 2 - 431) < 40 and abs(top - 289) < 50 and 200 < width < 400
    assert isinstance(found["score"], float)


@pytest.mark.parametrize("argv, words", [
    (["--box", "0,0,0,10"], "below 1 px"),
    (["--box", "1,2,3"], "--box must be"),
    (["--box", "a,b,c,d"], "--box must be"),
    (["--box", "0,0,1e6,1e6"], "over 10 times"),
    (["--box", BOX, "--batch-size", "0"], "--batch-size"),
    (["--refine", "-1"], "--refine"),
    (["--min-score", "nan"], "--min-score must be a finite number"),
    (["--format", "xml"], "invalid choice"),
    (["--detector", "bogus"], "--detector bogus: unknown detector"),
])
def test_bad_boxes_and_options_one_line_exit_2(capsys, workdir, images, argv, words):
    code, lines, _ = _run(capsys, "predict", images["good.png"], "--weights", workdir, *argv)
    assert code == 2
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and words in errors[0], lines
    if "below" in words or "over" in words:
        assert "good.png" in errors[0] and "np.float" not in errors[0]


def test_negative_box_values_parse_either_way(capsys, workdir, images):
    box = "-20,-10,60,60"  # partly outside the photo: padded
    results = []
    for argv in (["--box", box], [f"--box={box}"]):
        code, lines, out = _run(capsys, "predict", images["good.png"], "--weights", workdir, *argv)
        assert code == 0, lines
        results.append(_records(out)[0]["faces"][0]["landmarks"])
    assert results[0] == results[1]
    want = _want(workdir, images["good.png"], [-20, -10, 60, 60])
    np.testing.assert_allclose(results[0], want, atol=1e-3)


def test_one_box_for_several_images_is_refused_before_any_work(capsys, tmp_path, images):
    code, lines, _ = _run(capsys, "predict", images["good.png"], images["blank.png"],
                          "--weights", tmp_path / "never-read", "--box", BOX)
    errors = _errors(lines)
    assert code == 2 and len(errors) == 1 and "--boxes" in errors[0], lines


@pytest.mark.parametrize("argv, words", [
    (["--out", "{tmp}/no/such/out.jsonl"], "does not exist"),
    (["--out", "{tmp}"], "is a folder"),
    (["--draw", "{tmp}/file.txt"], "is a file"),
    (["--draw", "{tmp}/no/such"], "does not exist"),
    (["--format", "pts"], "--out FOLDER"),
    (["--format", "pts", "--out", "{tmp}/file.txt"], "is a file"),
])
def test_output_paths_are_checked_before_any_work(capsys, tmp_path, images, argv, words):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, lines, _ = _run(capsys, "predict", images["good.png"], "--weights",
                          tmp_path / "never-read", *argv)
    errors = _errors(lines)
    assert code == 2 and len(errors) == 1 and words in errors[0], lines
    assert "never-read" not in errors[0]


def test_weights_that_do_not_fit_do_not_exist_or_come_from_the_environment(
        capsys, monkeypatch, tmp_path, workdir, images):
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
    monkeypatch.delenv(cli.WEIGHTS_ENV, raising=False)
    code, lines, _ = _run(capsys, "predict", images["good.png"], "--box", BOX)
    assert code == 2 and cli.WEIGHTS_ENV in _errors(lines)[0]
    monkeypatch.setenv(cli.WEIGHTS_ENV, str(tmp_path / "nope"))
    code, lines, _ = _run(capsys, "predict", images["good.png"], "--box", BOX)
    assert code == 2 and f"(from ${cli.WEIGHTS_ENV})" in _errors(lines)[0]
    monkeypatch.setenv(cli.WEIGHTS_ENV, str(workdir))
    code, lines, out = _run(capsys, "predict", images["good.png"], "--box", BOX)
    assert code == 0 and _records(out)[0]["weights"] == str(workdir)


def test_version_and_help_import_nothing_heavy(subprocess_env):
    code = ("import sys; from tcdcn_jax.photos import cli\n"
            "assert cli.main(['--version']) == 0 and cli.main(['predict', '--help']) == 0\n"
            "heavy = [m for m in ('jax', 'numpy', 'PIL', 'tqdm') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tcdcn 0.1.0 (jax ") and "--boxes" in proc.stdout


def _phone_photo(path: Path, upright: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    # 6: stored a quarter turn anticlockwise (viewers turn it back clockwise); 8: the other way.
    Image.fromarray(np.rot90(upright, k=1 if orientation == 6 else -1)).save(
        path, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_sideways_phone_photo_is_read_and_drawn_upright(capsys, tmp_path, workdir,
                                                          orientation):
    upright = np.random.default_rng(3).integers(0, 256, (90, 60), dtype=np.uint8)
    _phone_photo(tmp_path / "phone.png", upright, orientation)
    box = (5.0, 20.0, 45.0, 50.0)  # in the upright photo, as the user sees it
    code, lines, out = _run(capsys, "predict", tmp_path / "phone.png", "--weights", workdir,
                            "--box", ",".join(map(str, box)), "--draw", tmp_path / "draw")
    assert code == 0, lines
    (record,) = _records(out)
    np.testing.assert_allclose(record["faces"][0]["landmarks"], _want(workdir, upright, box),
                               atol=1e-3)
    assert Image.open(record["drawn"]).size == (60, 90)
    assert os.listdir(tmp_path / "draw") == ["phone.png"]  # written whole: no temporary left


def test_a_16_bit_image_is_scaled_and_stdin_is_an_image(capsys, monkeypatch, tmp_path, workdir):
    grey = np.random.default_rng(4).integers(0, 256, (70, 80), dtype=np.uint8)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    code, lines, out = _run(capsys, "predict", tmp_path / "deep.png", "--weights", workdir,
                            "--boxes", _csv(tmp_path, [("deep.png", BOX), ("-", BOX)]), "-")
    assert code == 0, lines
    deep, piped = _records(out)
    assert piped["image"] == "<stdin>"
    want = _want(workdir, grey, [10, 10, 40, 40])
    for record in (deep, piped):
        np.testing.assert_allclose(record["faces"][0]["landmarks"], want, atol=1e-3)


def test_stdin_that_is_a_terminal_is_refused(capsys, monkeypatch, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Terminal())
    code, lines, _ = _run(capsys, "predict", "-", "--weights", tmp_path / "never-read")
    assert code == 2 and "stdin is a terminal" in _errors(lines)[0]


def _csv(folder: Path, rows) -> Path:
    path = folder / "boxes.csv"
    path.write_text("path,left,top,width,height\n" + "".join(f"{p},{b}\n" for p, b in rows))
    return path


def _folder(tmp_path: Path) -> Path:
    """a.png, b (a PNG without an extension), notes.jpg (text), .hidden.png, sub/c.png."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for name in ("a.png", "b", ".hidden.png", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (60, 60), dtype=np.uint8)).save(root / name,
                                                                             format="PNG")
    (root / "notes.jpg").write_text("not a photo")
    return root


def test_folders_by_content_recursive_and_a_box_csv(capsys, tmp_path, workdir):
    root = _folder(tmp_path)
    # Relative to the CSV's folder; two rows for a: two faces; c is not listed: detector.
    csv_file = _csv(root, [("a.png", BOX), ("a.png", "0,0,30,30"), ("b", BOX)])
    code, lines, out = _run(capsys, "predict", root, "--weights", workdir, "--boxes", csv_file)
    assert code == 0, lines
    assert [(Path(r["image"]).name, len(r["faces"])) for r in _records(out)] == [("a.png", 2),
                                                                                ("b", 1)]
    code, lines, out = _run(capsys, "predict", root, "-r", "--weights", workdir, "--boxes",
                            csv_file, "--quiet")
    assert code == 0 and not lines, lines
    records = _records(out)
    assert [os.path.relpath(r["image"], root) for r in records] == ["a.png", "b", "sub/c.png"]
    assert records[2]["detector"] is not None and records[0]["detector"] is None
    # With no image named, the CSV's images.
    code, lines, out = _run(capsys, "predict", "--weights", workdir, "--boxes", csv_file)
    assert code == 0 and [Path(r["image"]).name for r in _records(out)] == ["a.png", "b"]


def test_a_folder_of_subfolders_says_recursive_and_bad_csv_rows_name_their_line(capsys, tmp_path):
    (tmp_path / "top" / "sub").mkdir(parents=True)
    code, lines, _ = _run(capsys, "predict", tmp_path / "top", "--weights", tmp_path / "w")
    assert code == 2 and "--recursive" in _errors(lines)[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,left,top,width,height\na.png,1,2,3,4\nb.png,1,2,x,4\n")
    code, lines, _ = _run(capsys, "predict", "--weights", tmp_path / "w", "--boxes", bad)
    assert code == 2 and f"{bad}:3" in _errors(lines)[0]


def test_csv_and_pts_formats(capsys, tmp_path, workdir, images):
    csv_file = _csv(tmp_path, [(images["good.png"], BOX), (images["good.png"], "5,5,50,50")])
    code, lines, out = _run(capsys, "predict", images["good.png"], images["blank.png"],
                            "--weights", workdir, "--boxes", csv_file, "--out",
                            tmp_path / "faces.csv")
    assert code == 0 and out == "", lines
    import csv

    rows = list(csv.DictReader(open(tmp_path / "faces.csv")))
    assert [(Path(r["image"]).name, r["face"]) for r in rows] == [
        ("good.png", "0"), ("good.png", "1"), ("blank.png", "")]
    assert rows[2]["error"] == "no face found" and rows[0]["error"] == ""
    want = _want(workdir, images["good.png"], [10, 10, 40, 40])
    got = np.array([[float(rows[0][f"{c}{i}"]) for c in "xy"] for i in range(5)])
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert float(rows[0]["left_eye_x"]) == float(rows[0]["x0"])
    assert rows[0]["pose"] and 0 <= float(rows[0]["pose_prob"]) <= 1

    code, lines, out = _run(capsys, "predict", images["good.png"], "--weights", workdir,
                            "--boxes", csv_file, "--format", "pts", "--out", tmp_path / "pts")
    assert code == 0 and out == "", lines
    assert sorted(os.listdir(tmp_path / "pts")) == ["good_1.pts", "good_2.pts"]
    np.testing.assert_allclose(read_pts(tmp_path / "pts" / "good_1.pts", 5) - 1, want, atol=1e-3)


def test_progress_bar_when_asked(capsys, tmp_path, workdir, images):
    csv_file = _csv(tmp_path, [(images["good.png"], BOX), (images["blank.png"], BOX)])
    code, lines, _ = _run(capsys, "predict", "--weights", workdir, "--boxes", csv_file,
                          "--progress")
    assert code == 0
    assert "2/2" in "".join(lines)


def test_import_official_then_predict_reproduces_the_authors_output(capsys, tmp_path):
    image, box, points = official_example()
    code, lines, out = _run(capsys, "import-official", official_dir() / "model.mat",
                            tmp_path / "official")
    assert code == 0, lines
    assert (tmp_path / "official" / "config.json").is_file()
    code, lines, out = _run(capsys, "predict", image, "--weights", tmp_path / "official", "--box",
                            ",".join(str(v) for v in box), "--refine", "0",
                            "--draw", tmp_path / "draw")
    assert code == 0, lines  # --refine 0: the authors' tool reads their box once
    notes = [line for line in lines if "a box height is ignored" in line]
    assert len(notes) == 1, lines
    (record,) = _records(out)
    lm = np.array(record["faces"][0]["landmarks"])
    assert lm.shape == (68, 2)
    assert np.linalg.norm(lm - points, axis=1).mean() < 1.1  # the conformance bound
    eyes = np.array(record["faces"][0]["points5"][:2])
    np.testing.assert_allclose(eyes, [lm[36:42].mean(0), lm[42:48].mean(0)], atol=2e-3)
    drawn = Image.open(record["drawn"])
    assert drawn.size == Image.open(image).size
    # Red landmark dots were drawn where the points are.
    x, y = np.round(lm[30]).astype(int)
    assert drawn.convert("RGB").getpixel((int(x), int(y))) == (255, 0, 0)


def test_every_predictor_option_reaches_the_predictor(capsys, monkeypatch, workdir, images):
    seen = []
    real = Predictor.from_path.__func__

    def spy(cls, path, **options):
        seen.append(options)
        return real(cls, path, **options)
    monkeypatch.setattr(Predictor, "from_path", classmethod(spy))
    code, lines, out = _run(capsys, "predict", images["face.jpg"], "--weights", workdir,
                            "--detector", "haar", "--min-score", "2.5", "--min-face", "30",
                            "--max-side", "320", "--refine", "1", "--averaged", "--backend", "jax",
                            "--batch-size", "8")
    assert code == 0, lines
    assert seen == [{"detector": "haar", "min_score": 2.5, "min_face": 30.0, "max_side": 320,
                     "refine": 1, "averaged": True, "backend": "jax", "batch_size": 8}]
    assert _records(out)[0]["detector"] == "haar"
    code, _, _ = _run(capsys, "predict", images["face.jpg"], "--weights", workdir)
    assert code == 0 and seen[1] == {}  # absent options: the Predictor's defaults


def _authors_points(capsys, *argv) -> np.ndarray:
    """The 68 points `tcdcn predict` gives on the authors' example in their box, with argv."""
    image, box, _ = official_example()
    code, lines, out = _run(capsys, "predict", image, "--weights", official_dir() / "model.mat",
                            "--box", ",".join(str(v) for v in box), *argv)
    assert code == 0, lines
    (record,) = _records(out)
    return np.array(record["faces"][0]["landmarks"])


def test_refine_and_averaged_change_what_the_cli_predicts(capsys):
    image, box, points = official_example()
    once, default = _authors_points(capsys, "--refine", "0"), _authors_points(capsys)
    # The authors' tool reads their box once: --refine 0 reproduces it, the default re-crops.
    assert np.linalg.norm(once - points, axis=1).mean() < 1.1
    assert np.linalg.norm(default - once, axis=1).mean() > 0.5
    averaged = _authors_points(capsys, "--refine", "0", "--averaged")
    want = Predictor.from_path(official_dir() / "model.mat", refine=0, averaged=True).predict(
        str(image), [box])[0].landmarks
    np.testing.assert_allclose(averaged, want, atol=1e-3)
    assert np.linalg.norm(averaged - once, axis=1).mean() > 0.1


def test_the_detector_option_chooses_the_detector(capsys, workdir, images):
    boxes = {}
    for name in ("haar", "mtcnn"):
        code, lines, out = _run(capsys, "predict", images["face.jpg"], "--weights", workdir,
                                "--detector", name, "--refine", "0")
        assert code == 0, lines
        (record,) = _records(out)
        assert record["detector"] == name
        boxes[name] = [face["box"] for face in record["faces"]]
        want = Predictor.from_path(workdir, detector=name, refine=0).predict(
            str(images["face.jpg"]))
        np.testing.assert_allclose(boxes[name], [face.box for face in want], atol=1e-2)
    assert boxes["haar"] != boxes["mtcnn"]  # each detector's own box, mapped to the model's
    code, lines, out = _run(capsys, "predict", images["face.jpg"], "--weights", workdir,
                            "--min-face", "5000")
    assert code == 0 and _records(out)[0]["faces"] == []  # no face is 5000 px wide


def test_import_official_and_export_refuse_bad_paths(capsys, tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"\x00" * 100)
    for argv, words in [
            (["import-official", tmp_path / "none.mat", tmp_path / "out"], "no such file"),
            (["import-official", tmp_path / "bad.mat", tmp_path / "out"], ".mat"),
            (["export", "--weights", tmp_path / "never-read", "--out", tmp_path], "is a folder")]:
        code, lines, _ = _run(capsys, *argv)
        errors = _errors(lines)
        assert code == 2 and len(errors) == 1 and words in errors[0], errors
