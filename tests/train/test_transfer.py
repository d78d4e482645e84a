"""Transfer: the head swap, trunk equality at step 0, freezing, summary outputs, the study's bookkeeping."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from tcdcn_jax.configs import finetune as finetune_configs
from tcdcn_jax.model import build
from tcdcn_jax.studies import transfer_study
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import transfer
from tests.support import TASKS, random_params, random_splits, tiny_config

# The fine-tunes' tiny run: two steps of batch 8, one evaluation.
FINETUNE = dict(num_steps=2, batch_size=8, eval_every=2, log_every=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory) -> str:
    """A 5-point multi-task report-trunk workdir (random weights: only its numbers matter here)."""
    config = tiny_config(trunk="report", activation="relu")
    params = random_params(build.from_config(config, 5), seed=7)
    return checkpoints.write_weights(str(tmp_path_factory.mktemp("pretrain")), params, config)


def _finetune_config(init_from: str, **overrides):
    return tiny_config("finetune", **{**FINETUNE, "init_from": init_from,
                                      "averaging": {"radius": 1}, **overrides})


def test_step0_trunk_is_the_checkpoints_and_the_head_is_a_fresh_k_point_head(pretrain_dir, splits68):
    _, pretrained = checkpoints.load_params(pretrain_dir)
    params = transfer.initial_params(_finetune_config(pretrain_dir), splits68)
    flat_new = jax.tree_util.tree_leaves_with_path(params["trunk"])
    flat_old = dict(jax.tree_util.tree_leaves_with_path(pretrained["trunk"]))
    assert len(flat_new) == len(flat_old) == 10
    for path, leaf in flat_new:
        np.testing.assert_array_equal(np.asarray(leaf), flat_old[path])
    assert sorted(params["heads"]) == ["landmarks"]
    assert params["heads"]["landmarks"]["kernel"].shape == (512, 136)
    assert pretrained["heads"]["landmarks"]["kernel"].shape == (512, 10)
    assert set(TASKS) <= set(pretrained["heads"])


def test_from_scratch_does_not_load_the_trunk(pretrain_dir, splits68):
    _, pretrained = checkpoints.load_params(pretrain_dir)
    params = transfer.initial_params(_finetune_config(""), splits68)
    assert not np.array_equal(np.asarray(params["trunk"]["conv1"]["kernel"]),
                              pretrained["trunk"]["conv1"]["kernel"])


def test_any_k_gets_its_own_head(pretrain_dir):
    splits = random_splits(5, (16, 8, 8), seed=8)
    params = transfer.initial_params(_finetune_config(pretrain_dir, num_landmarks=5), splits)
    assert params["heads"]["landmarks"]["kernel"].shape == (512, 10)


def test_trunk_mismatch_fails_clearly(pretrain_dir, splits68):
    config = _finetune_config(pretrain_dir, activation="abs_tanh")
    with pytest.raises(ValueError, match="activation: pretrain 'relu' vs fine-tune 'abs_tanh'"):
        transfer.initial_params(config, splits68)


def test_auxiliary_tasks_are_refused(pretrain_dir, splits68, tmp_path):
    with pytest.raises(ValueError, match="without auxiliary tasks"):
        transfer.finetune(_finetune_config(pretrain_dir, aux_tasks="pose"), str(tmp_path), splits68)


def test_frozen_finetune_keeps_the_trunk_and_writes_the_summary(pretrain_dir, splits68, tmp_path):
    workdir = str(tmp_path / "ft")
    config = _finetune_config(pretrain_dir, trunk_lr_multiplier=0.0)
    summary = transfer.finetune(config, workdir, splits68)
    _, pretrained = checkpoints.load_params(pretrain_dir)
    step, tuned = checkpoints.load_params(workdir)
    assert step == 2
    for a, b in zip(jax.tree_util.tree_leaves(tuned["trunk"]),
                    jax.tree_util.tree_leaves(pretrained["trunk"])):
        np.testing.assert_array_equal(a, b)
    fresh = transfer.initial_params(config, splits68)["heads"]["landmarks"]["kernel"]
    assert not np.array_equal(tuned["heads"]["landmarks"]["kernel"], np.asarray(fresh))
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    test = on_disk["test"]
    for key in ("nme", "failure_rate", "mean_shape_nme"):
        assert np.isfinite(test[key])
    assert len(test["per_landmark_nme"]) == 68
    assert {"common", "challenging"} <= set(test) and test["common"]["num_faces"] == 8
    assert on_disk["slices"] == test["slices"] and on_disk["slices"]["occluded"]["num_faces"] == 6
    assert on_disk["averaged"]["sharing"]["translations"] == 5
    # The single pass is the loop's test pass, reported next to the Averaged one, not run again.
    common = on_disk["averaged"]["extra_tests"]["common"]
    assert common["single_nme"] == test["common"]["nme"]
    assert common["averaged_nme"] != common["single_nme"]
    assert sorted(on_disk["averaged"]["extra_tests"]) == ["challenging", "common"]
    assert on_disk["averaged"]["single_nme"] == test["nme"]
    assert on_disk["averaged"]["averaged"]["nme"] != test["nme"]


def _fake_summary(workdir: str, nme: float) -> None:
    os.makedirs(workdir, exist_ok=True)
    summary = {"test": {"nme": nme, "failure_rate": nme / 2, "mean_shape_nme": 0.3, "num_faces": 10},
               "slices": {"hard": {"nme": 2 * nme, "failure_rate": nme, "num_faces": 4}},
               "averaged": {"averaged": {"nme": nme - 0.01, "failure_rate": 0.0,
                                         "slices": {"hard": {"nme": 2 * nme - 0.01}}}}}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f)


def test_study_skips_finished_runs_and_aggregates_over_seeds(pretrain_dir, tmp_path):
    study = finetune_configs.get_config("study_quick")
    assert study.finetune.data_seed != study.pretrain.data_seed
    study.multitask_workdir = study.landmark_only_workdir = pretrain_dir
    workdir = str(tmp_path / "study")
    values = {"multitask": (0.05, 0.07), "landmark_only": (0.06, 0.08), "scratch": (0.10, 0.14)}
    for arm, per_seed in values.items():
        for seed, nme in zip((0, 1), per_seed):
            _fake_summary(transfer_study.finetune_workdir(workdir, arm, seed), nme)
    results = transfer_study.run_study(study, workdir)  # everything done: nothing trains
    m = results["arms"]["scratch"]["metrics"]
    np.testing.assert_allclose(m["nme"]["mean"], 0.12)
    np.testing.assert_allclose(m["nme"]["std"], np.std([0.10, 0.14], ddof=1))
    np.testing.assert_allclose(m["hard_nme"]["mean"], 0.24)
    with open(os.path.join(workdir, "transfer.md")) as f:
        table = f.read()
    assert "| multitask | 6.00 ± 1.41 |" in table and "| scratch | 12.00 ± 2.83 |" in table
    with open(os.path.join(workdir, "transfer.json")) as f:
        assert json.load(f)["seeds"] == [0, 1]


def test_study_reports_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="scratch arm, seed 0"):
        os.makedirs(tmp_path / "finetune_multitask_seed0")
        _fake_summary(str(tmp_path / "finetune_multitask_seed0"), 0.1)
        _fake_summary(str(tmp_path / "finetune_landmark_only_seed0"), 0.1)
        transfer_study.collect(str(tmp_path), [0])


def test_configs_load():
    ft = finetune_configs.get_config()
    assert (ft.num_landmarks, ft.aux_tasks, ft.trunk) == (68, "", "report")
    assert isinstance(finetune_configs.get_config("study"), ml_collections.ConfigDict)
    with pytest.raises(ValueError, match="unknown variant"):
        finetune_configs.get_config("nope")


def test_compare_grids_and_its_table(splits68, tmp_path):
    from experiments import compare_averaging
    from tcdcn_jax.model import averaging

    config = _finetune_config("")
    workdir = checkpoints.write_weights(str(tmp_path / "ft68"), random_params(
        build.from_config(config, 68)), config)
    grids = {"2x0": averaging.grid_offsets(2, 0), "2x1": averaging.grid_offsets(2, 1),
             "8x1": averaging.grid_offsets(*compare_averaging.parse_grid("8x1"))}
    res = transfer.compare_grids(workdir, splits68.test, grids, batch_size=16)
    # A grid of radius 0 is the untranslated window alone, standardised by its own statistics: the
    # single pass exactly.
    assert res["grids"]["2x0"]["nme"] == pytest.approx(res["single"]["nme"], rel=1e-6)
    assert res["grids"]["2x1"]["nme"] != pytest.approx(res["single"]["nme"], rel=1e-6)
    assert [res["grids"][g]["translations"] for g in grids] == [1, 5, 5]
    assert res["grids"]["8x1"]["sharing"]["conv_maps_per_layer"] == {
        "conv1": 1, "conv2": 1, "conv3": 1, "conv4": 1}  # 8 px = one conv4 cell: nothing branches
    table = compare_averaging.table({workdir: res, workdir + "_again": res})
    assert "| 2x1 grid | 5 | 1, 1, 3, 5 |" in table
    assert f"| single pass | 1 | 1, 1, 1, 1 | {100 * res['single']['nme']:.2f} ± 0.00 |" in table
    with pytest.raises(ValueError, match="STEPxRADIUS"):
        compare_averaging.parse_grid("2by2")
