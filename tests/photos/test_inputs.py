"""What `tcdcn predict` reads: images found by content (hidden files skipped, subfolders on
request), box CSVs (header, several faces per image, paths from the CSV's folder, errors naming
file:line)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tcdcn_jax.photos import inputs


def _png(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format=fmt)
    return path


def test_images_are_recognised_by_content(tmp_path):
    assert inputs.is_image(str(_png(tmp_path / "no_extension")))
    assert inputs.is_image(str(_png(tmp_path / "photo.txt", "JPEG")))
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    assert not inputs.is_image(str(tmp_path / "text.jpg"))
    assert not inputs.is_image(str(tmp_path / "empty.png"))


def test_find_images_in_order_hidden_skipped_recursive_on_request(tmp_path):
    for name in ("b.png", "a", ".hidden.png", "sub/c.png", ".cache/d.png"):
        _png(tmp_path / "f" / name)
    (tmp_path / "f" / "notes.jpg").write_text("text")
    said: list[str] = []
    flat = inputs.find_images([str(tmp_path / "f"), "-", "-", "loose.jpg"], False, said.append)
    assert [it.stem for it in flat] == ["a", "b", "stdin", "loose"]
    assert flat[2] == inputs.Item(inputs.STDIN_KEY, "stdin", None)
    assert flat[3].path == "loose.jpg"  # the loader says 'no such file' when its turn comes
    assert len(said) == 1 and "stdin" in said[0]
    deep = inputs.find_images([str(tmp_path / "f")], True, said.append)
    assert [it.stem for it in deep] == ["a", "b", os.path.join("sub", "c")]
    assert deep[2].key == str(tmp_path / "f" / "sub" / "c.png")


def test_box_csv_rows_header_and_paths(tmp_path, monkeypatch):
    _png(tmp_path / "csvdir" / "a.png")
    _png(tmp_path / "cwd" / "b.png")
    monkeypatch.chdir(tmp_path / "cwd")
    csv_file = tmp_path / "csvdir" / "boxes.csv"
    csv_file.write_text("\ufeffpath,left,top,width,height\n"
                        "a.png,1,2,3,4\n"
                        "b.png, -5 , -6 ,70,80\n\n"
                        "a.png,10,20,30,40\n")
    table = inputs.read_box_csv(str(csv_file))
    a = os.path.realpath(tmp_path / "csvdir" / "a.png")
    b = os.path.realpath(tmp_path / "cwd" / "b.png")
    assert table.boxes == {a: [(1, 2, 3, 4), (10, 20, 30, 40)], b: [(-5, -6, 70, 80)]}
    assert [it.key for it in inputs.items_from_csv(table)] == [str(tmp_path / "csvdir" / "a.png"),
                                                               "b.png"]


@pytest.mark.parametrize("text, words", [
    ("a.png,1,2,3\n", ":1: expected path,left,top,width,height, got 4 fields"),
    ("path,left,top,width,height\na.png,1,2,x,4\n", ":2: left,top,width,height must be numbers"),
    ("a.png,1,2,inf,4\n", ":1: box values must be finite"),
    ("path,left,top,width,height\n", "no rows"),
])
def test_box_csv_errors_name_file_and_line(tmp_path, text, words):
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text(text)
    with pytest.raises(inputs.InputError, match=words) as err:
        inputs.read_box_csv(str(csv_file))
    assert str(csv_file) in str(err.value) and "\n" not in str(err.value)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_any_box_csv_bytes_give_a_table_or_one_input_error(tmp_path_factory, data):
    csv_file = tmp_path_factory.mktemp("fuzz") / "boxes.csv"
    csv_file.write_bytes(data)
    try:
        table = inputs.read_box_csv(str(csv_file))
    except inputs.InputError as err:
        assert str(csv_file) in str(err) and "\n" not in str(err)
    else:
        assert all(len(box) == 4 for boxes in table.boxes.values() for box in boxes)
