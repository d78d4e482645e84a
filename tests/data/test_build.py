"""`python -m tcdcn_jax.data.build`: every dataset name maps to its builder, a folder builds and its
splits are printed, and bad arguments fail clearly."""

import pytest

from tcdcn_jax.data import build, tfds_common
from tests.data import fixtures as fx


def test_every_dataset_name_maps_to_a_builder_of_its_own():
    classes = {name: build.builder_class(name) for name in build.BUILDERS}
    assert len(set(classes.values())) == len(classes)
    for name, cls in classes.items():
        assert issubclass(cls, tfds_common.FaceBuilder), name
        assert cls.__name__ == build.BUILDERS[name][1]
    with pytest.raises(ValueError, match=r"unknown dataset 'lfw'; choose one of \['300w', "):
        build.builder_class("lfw")


def test_main_builds_a_folder_and_prints_its_splits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))
    fx.write_mtfl(tmp_path / "MTFL", n_train=5, n_test=3)
    build.main(["--dataset=mtfl", f"--data_dir={tmp_path / 'MTFL'}"])
    lines = capsys.readouterr().out.splitlines()  # TFDS prints its own progress first
    start = next(i for i, line in enumerate(lines) if line.startswith("records in "))
    assert lines[start].startswith(f"records in {tmp_path / 'tfds'}")
    assert sorted(lines[start + 1:]) == ["  test: 3 faces", "  train: 5 faces"]


def test_main_refuses_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build.main(["--dataset=lfw", f"--data_dir={tmp_path}"])
    assert "invalid choice: 'lfw'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="does not exist"):
        build.main(["--dataset=mtfl", f"--data_dir={tmp_path / 'nowhere'}"])
