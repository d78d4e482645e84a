"""MTFL reader: a fixture in the published layout is built, read back and trained on; bad data fails cleanly."""

import logging
import os
import pathlib

import numpy as np
import pytest

from tcdcn_jax.data import boxes, mtfl, sources, tfds_common
from tcdcn_jax.data.image_io import DataError
from tests.data import fixtures as fx
from tests.support import REPO


@pytest.fixture(autouse=True)
def tfds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))


@pytest.fixture
def root(tmp_path) -> pathlib.Path:
    return tmp_path / "MTFL"


def test_build_reads_back_landmarks_labels_and_splits_exactly(root):
    expected = fx.write_mtfl(root)
    builder = tfds_common.prepare(mtfl.TcdcnMtfl, root)
    for split in ("train", "test"):
        got, want = tfds_common.read_split(builder, split), expected[split]
        assert list(got["file"]) == want["files"]  # order kept, backslashes turned to '/'
        np.testing.assert_allclose(fx.photo_coords(got), want["landmarks"], atol=2e-3)
        for label in ("pose", "gender", "smile", "glasses"):
            np.testing.assert_array_equal(got[label], want[label], err_msg=label)
        assert got["image"].shape[1:] == (boxes.CROP_SIZE, boxes.CROP_SIZE)
        # The stored box is the convention's box, centred in the crop, long side 80 px.
        np.testing.assert_allclose(got["box"][:, 2:].max(1), boxes.CROP_SIZE / boxes.CROP_MARGIN,
                                   rtol=1e-5)
        np.testing.assert_allclose(got["box"][:, :2] + got["box"][:, 2:] / 2, 63.5, atol=1e-3)
        assert np.all(np.isnan(got["source_box"]))  # MTFL ships no box


def test_codes_are_one_based_and_map_to_our_classes(root):
    expected = fx.write_mtfl(root, n_train=6, n_test=3)
    first = (root / "training.txt").read_text().splitlines()[0].split()
    assert int(first[14]) == expected["train"]["pose"][0] + 1
    assert int(first[11]) == (1 if expected["train"]["gender"][0] == 1 else 2)  # 1 = male
    face = mtfl.parse_line(" lfw_5590\\a.jpg " + " ".join(["10"] * 10) + " 1 2 1 5", root,
                           root / "training.txt", 7)
    assert face.labels == {"gender": 1, "smile": 0, "glasses": 1, "pose": 4}
    assert face.file == "lfw_5590/a.jpg"


def test_sources_load_gives_splits_for_training(root):
    expected = fx.write_mtfl(root, n_train=6, n_test=3)
    splits = sources.load(fx.config("mtfl", root, num_val=2, data_seed=3))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4, 2, 3)
    assert splits.num_landmarks == 5
    assert set(splits.train.keys()) == {"image", "box", "landmarks", "pose", "gender", "smile",
                                        "glasses"}
    assert splits.train["image"].dtype == np.uint8 and splits.train["image"].ndim == 3
    assert splits.train["pose"].dtype == np.int32
    # Train + validation are exactly the training file's faces.
    pose = np.sort(np.concatenate([splits.train["pose"], splits.validation["pose"]]))
    np.testing.assert_array_equal(pose, np.sort(expected["train"]["pose"]))
    fx.check_flip(splits.test["image"], splits.test["box"], splits.test["landmarks"])


def _line(root, n=1):
    return (root / "training.txt").read_text().splitlines()[n - 1]


def _replace_line(root, n, text):
    lines = (root / "training.txt").read_text().splitlines()
    lines[n - 1] = text
    (root / "training.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("fault, message", [
    ("missing_image", "missing image"),
    ("unreadable_image", "unreadable image"),
    ("wrong_fields", "expected 15 fields"),
    ("nan", "NaN"),
    ("out_of_image", "outside the"),
    ("bad_code", "pose code"),
])
def test_bad_data_names_file_and_line_and_writes_nothing(root, fault, message):
    fx.write_mtfl(root, n_train=4, n_test=2)
    fields = _line(root, 3).split()
    if fault == "missing_image":
        os.remove(root / fields[0].replace("\\", "/"))
    elif fault == "unreadable_image":
        (root / fields[0].replace("\\", "/")).write_bytes(b"not a jpeg")
    elif fault == "wrong_fields":
        _replace_line(root, 3, " ".join(fields[:-1]))
    elif fault == "nan":
        _replace_line(root, 3, " ".join([fields[0], "nan", *fields[2:]]))
    elif fault == "out_of_image":
        _replace_line(root, 3, " ".join([fields[0], "5000", *fields[2:]]))
    elif fault == "bad_code":
        _replace_line(root, 3, " ".join([*fields[:-1], "6"]))
    with pytest.raises(DataError, match=message) as err:
        tfds_common.prepare(mtfl.TcdcnMtfl, root)
    assert "training.txt:3" in str(err.value)
    # Nothing half written: no dataset version folder, no records anywhere in the cache.
    cache = pathlib.Path(os.environ["TCDCN_TFDS_DIR"])
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_skip_bad_rows_logs_a_count(root, caplog):
    fx.write_mtfl(root, n_train=5, n_test=2)
    fields = _line(root, 2).split()
    _replace_line(root, 2, " ".join(fields[:-2]))
    os.remove(root / _line(root, 4).split()[0].replace("\\", "/"))
    with caplog.at_level(logging.WARNING):
        splits = sources.load(fx.config("mtfl", root, num_val=1, skip_bad_rows=True))
    assert len(splits.train) + len(splits.validation) == 3
    assert "skipped 2 bad rows, kept 3" in caplog.text


def test_missing_folder_and_unknown_dataset_are_clear(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sources.load(fx.config("mtfl", tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="set config.data_dir"):
        sources.load(fx.config("mtfl", ""))
    with pytest.raises(DataError, match="missing annotation file"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "README.txt").write_text("x")
        sources.load(fx.config("mtfl", tmp_path / "empty"))


def test_pretrain_flagfile_runs_a_few_steps(root, tmp_path, monkeypatch):
    from absl import flags
    from ml_collections import config_flags

    from tcdcn_jax.train import loop

    fx.write_mtfl(root, n_train=12, n_test=4)
    monkeypatch.chdir(REPO)  # flagfile paths are repo-relative
    # The command line `python -m experiments.pretrain` parses, with its flag definitions.
    argv = ["pretrain", "--flagfile=experiments/flagfiles/pretrain_mtfl.flags",
            f"--config.data_dir={root}", "--config.num_val=4", "--config.num_steps=2",
            "--config.batch_size=4", "--config.eval_every=2", "--config.log_every=1",
            "--config.checkpoint_every=2", "--config.eval_batch_size=4", "--config.warmup_steps=1"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", "tcdcn_jax/configs/pretrain.py", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", "", "", flag_values=fv)
    fv(argv)
    config = fv.config
    assert config.dataset == "mtfl" and config.augment.flip
    summary = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["steps"] == 2
    assert np.isfinite(summary["test"]["nme"])
    assert set(summary["task_stopped_at"]) == {"pose", "gender", "glasses", "smile"}
