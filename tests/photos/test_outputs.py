"""What `tcdcn predict` writes: .pts files the 300-W reader reads back, CSV rows per face, a JSON
line flushed per image, files that appear whole or not at all, unique output names."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from tcdcn_jax.data.ibug300w import read_pts
from tcdcn_jax.photos import outputs
from tcdcn_jax.photos.inputs import Item

ITEM = Item("photos/a.jpg", "a", "photos/a.jpg")


def _face(k: int = 68) -> dict:
    lm = np.round(np.random.default_rng(0).uniform(0, 100, (k, 2)), 3).tolist()
    return {"box": [1.0, 2.0, 30.0, 40.0], "score": 91.5, "landmarks": lm, "points5": lm[:5],
            "aux": {"pose": {"label": 2, "name": "frontal", "probs": [0.1, 0.1, 0.6, 0.1, 0.1]}}}


class _Stream(io.StringIO):
    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_pts_files_read_back_one_based(tmp_path):
    face = _face()
    writer = outputs.PtsWriter(str(tmp_path / "pts"))
    (tmp_path / "pts").mkdir()
    writer.write(ITEM, [face, face])
    writer.write(Item("b/a.png", "a", "b/a.png"), [face])  # same stem: a new name
    writer.write(Item("c.png", "c", "c.png"), [])  # no face: no file
    assert sorted(p.name for p in (tmp_path / "pts").iterdir()) == ["a-2_1.pts", "a_1.pts",
                                                                    "a_2.pts"]
    got = read_pts(tmp_path / "pts" / "a_1.pts")
    np.testing.assert_allclose(got - 1, face["landmarks"], atol=1e-9)


def test_csv_rows_per_face_and_for_an_image_without_one():
    stream = _Stream()
    writer = outputs.CsvWriter(stream, 68, ("pose",))
    writer.write(ITEM, [_face()])
    writer.write(Item("b.jpg", "b", "b.jpg"), None, error="b.jpg: not a readable image")
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert len(rows[0]) == 7 + 136 + 10 + 2 + 1
    assert rows[0]["score"] == "91.5" and rows[0]["pose"] == "frontal"
    assert float(rows[0]["pose_prob"]) == 0.6
    assert float(rows[0]["x67"]) == _face()["landmarks"][67][0]
    assert rows[1]["image"] == "b.jpg" and rows[1]["face"] == "" and "readable" in rows[1]["error"]
    assert stream.flushes == 3  # the header, then once per image


def test_jsonl_one_flushed_line_per_image():
    stream = _Stream()
    writer = outputs.JsonlWriter(stream, {"weights": "model.mat", "detector": "yunet"})
    writer.write(ITEM, [_face()], extra={"drawn": "out/a.png"})
    writer.write(ITEM, None, error="photos/a.jpg: no such file", extra={"detector": None})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["image", "faces", "weights", "detector", "drawn"]
    assert second == {"image": "photos/a.jpg", "error": "photos/a.jpg: no such file",
                      "weights": "model.mat", "detector": None}
    assert stream.flushes == 2


def test_a_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "x.png"
    with pytest.raises(RuntimeError):
        with outputs.atomic_file(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    with outputs.atomic_file(str(target)) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_output_path_checks(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    outputs.check_file_target(str(tmp_path / "new.jsonl"), "--out")
    outputs.check_folder_target(str(tmp_path / "new"), "--draw")
    for check, path, words in [
            (outputs.check_file_target, tmp_path, "is a folder"),
            (outputs.check_file_target, tmp_path / "no" / "x.jsonl", "does not exist"),
            (outputs.check_folder_target, tmp_path / "f.txt", "is a file"),
            (outputs.check_folder_target, tmp_path / "no" / "sub", "does not exist")]:
        with pytest.raises(outputs.InputError, match=words):
            check(str(path), "--out")
