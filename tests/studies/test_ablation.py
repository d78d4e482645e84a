"""The ablation: configs per variant, aggregation against the seed spread by hand, resuming, and a
--quick run of the command end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.studies import ablation
from tcdcn_jax.train import loop

from tests.support import REPO, assert_drawn_png


def _summary(nme: float, failure: float, per_landmark, per_pose=None, stopped=None) -> dict:
    test = {"nme": nme, "failure_rate": failure, "auc": 1 - nme, "per_landmark_nme": per_landmark,
            "accuracy": {t: 0.5 for t in (stopped or {})}, "mean_shape_nme": 0.5}
    if per_pose is not None:
        test["per_pose_nme"] = per_pose
    return {"test": test, "task_stopped_at": stopped or {}, "seconds": 1.0, "steps": 10}


def test_run_config_applies_variant_seed_and_quick_without_touching_the_base():
    base = get_config()
    c = ablation.run_config(base, "FLD+all (no ES)", 2)
    assert (c.aux_tasks, c.early_stopping, c.seed) == (ablation.ALL_TASKS, False, 2)
    assert ablation.run_config(base, "FLD", 0).aux_tasks == ""
    assert ablation.run_config(base, "FLD+smile", 1).early_stopping == base.early_stopping
    q = ablation.run_config(base, "FLD+pose", 0, quick=True)
    assert q.num_steps == ablation.QUICK["num_steps"] and q.aux_tasks == "pose"
    assert base.num_steps == get_config().num_steps and base.seed == 0
    assert ablation.run_dir("W", "FLD+all (no ES)", 1) == os.path.join("W", "FLD+all_noES", "seed_1")


def test_bad_variants_and_seeds_fail_clearly():
    with pytest.raises(ValueError, match="unknown variants"):
        ablation.check_variants(["FLD+age"], [0])
    with pytest.raises(ValueError, match="distinct"):
        ablation.check_variants(["FLD"], [1, 1])


def test_aggregate_and_comparisons_by_hand():
    results = {
        "FLD": {s: _summary(n, f, [n, 0.2], [0.3, None, 0.1, 0.1, 0.3])
                for s, n, f in ((0, 0.10, 0.2), (1, 0.12, 0.3), (2, 0.14, 0.4))},
        "FLD+pose": {s: _summary(n, f, [n, 0.2], [0.2, None, 0.1, 0.1, 0.2], {"pose": st})
                     for s, n, f, st in ((0, 0.05, 0.2, 100), (1, 0.06, 0.4, 200),
                                         (2, 0.07, 0.3, None))},
    }
    summary = ablation.aggregate(results)
    fld, pose = summary["FLD"], summary["FLD+pose"]
    assert fld["nme"]["mean"] == pytest.approx(0.12) and fld["nme"]["sd"] == pytest.approx(0.02)
    assert (fld["nme"]["min"], fld["nme"]["max"]) == (0.10, 0.14)
    assert pose["failure_rate"]["mean"] == pytest.approx(0.3)
    assert pose["failure_rate"]["sd"] == pytest.approx(0.1)
    np.testing.assert_allclose(fld["per_landmark_nme"]["mean"], [0.12, 0.2])
    np.testing.assert_allclose(fld["per_landmark_nme"]["sd"], [0.02, 0.0], atol=1e-12)
    assert fld["per_pose_nme"]["mean"][1] is None and fld["per_pose_nme"]["mean"][0] == 0.3
    assert pose["task_stopped_at"] == {"pose": [100, 200, None]}
    assert fld["accuracy"] == {}

    (row,) = ablation.comparisons(summary)
    assert (row["a"], row["b"]) == ("FLD+pose", "FLD")
    # NME: delta -0.06, spread 0.01 + 0.02: beyond; failure: delta 0, spread 0.2: not.
    assert row["nme"]["delta"] == pytest.approx(-0.06) and row["nme"]["spread"] == pytest.approx(0.03)
    assert row["nme"]["beyond_spread"] and not row["nme"]["ranges_overlap"]
    assert not row["failure_rate"]["beyond_spread"] and row["failure_rate"]["ranges_overlap"]
    assert row["per_landmark"]["beyond_spread"] == [True, False]


def test_comparisons_include_early_stopping_pair():
    mk = lambda n: {s: _summary(n + 0.01 * s, 0.0, [n]) for s in range(2)}  # noqa: E731
    summary = ablation.aggregate({"FLD+all": mk(0.1), "FLD+all (no ES)": mk(0.3)})
    (row,) = ablation.comparisons(summary)
    assert (row["a"], row["b"]) == ("FLD+all", "FLD+all (no ES)")
    assert row["nme"]["delta"] == pytest.approx(-0.2) and row["nme"]["beyond_spread"]


def test_run_variants_loads_once_trains_each_run_once_and_resumes(tmp_path):
    calls = []

    def fake_train(config, workdir, splits):
        calls.append((config.aux_tasks, config.early_stopping, config.seed, workdir, id(splits)))
        os.makedirs(workdir, exist_ok=True)
        (open(os.path.join(workdir, "config.json"), "w")).write(config.to_json())
        summary = _summary(0.1, 0.0, [0.1] * 5)
        json.dump(summary, open(os.path.join(workdir, "summary.json"), "w"))
        return summary

    base, splits = get_config(), object()
    variants = ["FLD", "FLD+all", "FLD+all (no ES)"]
    out = ablation.run_variants(base, str(tmp_path), variants, [0, 1], splits=splits,
                                train_fn=fake_train)
    # Seed by seed: a stopped ablation has every variant at the seeds it finished.
    assert [c[:3] for c in calls] == [("", True, 0), (ablation.ALL_TASKS, True, 0),
                                      (ablation.ALL_TASKS, False, 0), ("", True, 1),
                                      (ablation.ALL_TASKS, True, 1), (ablation.ALL_TASKS, False, 1)]
    assert {c[4] for c in calls} == {id(splits)}, "every run must get the same data"
    assert calls[4][3] == ablation.run_dir(str(tmp_path), "FLD+all", 1)
    assert set(out) == set(variants) and set(out["FLD"]) == {0, 1}

    # Interrupted after three runs: only the missing ones train again.
    os.remove(os.path.join(ablation.run_dir(str(tmp_path), "FLD+all (no ES)", 1), "summary.json"))
    calls.clear()
    ablation.run_variants(base, str(tmp_path), variants, [0, 1], splits=splits, train_fn=fake_train)
    assert [c[:3] for c in calls] == [(ablation.ALL_TASKS, False, 1)]

    other = get_config()
    other.num_steps = 7
    with pytest.raises(ValueError, match="different config.*num_steps"):
        ablation.run_variants(other, str(tmp_path), variants, [0, 1], splits=splits,
                              train_fn=fake_train)
    # Allowed, every run of the old config trains on under the new one.
    calls.clear()
    ablation.run_variants(other, str(tmp_path), variants, [0, 1], splits=splits,
                          train_fn=fake_train, allow_config_change=True)
    assert len(calls) == 6 and {c[3] for c in calls} == {
        ablation.run_dir(str(tmp_path), v, s) for v in variants for s in (0, 1)}


def test_quick_ablation_end_to_end(tmp_path, monkeypatch, subprocess_env):
    workdir, data = tmp_path / "abl", tmp_path / "data"
    variants = ["FLD", "FLD+all", "FLD+all (no ES)"]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.ablate",
         "--flagfile=experiments/flagfiles/ablate_quick.flags", f"--workdir={workdir}",
         f"--config.data_dir={data}", "--variants=" + ",".join(variants), "--seeds=0,1"],
        capture_output=True, text=True, cwd=REPO, env=subprocess_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The session's compilation cache (JAX_COMPILATION_CACHE_DIR) is kept, not replaced by its own.
    assert not (workdir / ".jax_cache").exists()

    report = json.loads((workdir / "ablation.json").read_text())
    assert report["quick"] and report["variants"] == variants and report["seeds"] == [0, 1]
    assert report["config"]["num_steps"] == ablation.QUICK["num_steps"]
    for v in variants:
        s = report["summary"][v]
        assert s["nme"]["n"] == 2 and np.isfinite(s["nme"]["mean"]) and s["nme"]["sd"] >= 0
        assert len(s["per_landmark_nme"]["mean"]) == 5
        for seed in (0, 1):
            assert (workdir / ablation.variant_dir(v) / f"seed_{seed}" / "summary.json").exists()
    assert {(r["a"], r["b"]) for r in report["comparisons"]} == {
        ("FLD+all", "FLD"), ("FLD+all (no ES)", "FLD"), ("FLD+all", "FLD+all (no ES)")}
    rel = report["relatedness"]["FLD+all"]
    assert np.asarray(rel["r"]).shape == (10, 11) and rel["num_models"] == 2
    assert np.all(np.abs(np.asarray(rel["r"])) <= 1)
    assert all(s is None for s in report["summary"]["FLD+all (no ES)"]["task_stopped_at"]["pose"])
    for name in ("per_landmark", "per_pose", "training_curves", "relatedness_FLD+all"):
        assert_drawn_png(report["figures"][name])
    md = (workdir / "ablation.md").read_text()
    assert "| FLD+all (no ES) |" in md and "FLD+all vs FLD+all (no ES)" in md

    # Rerunning the same ablation trains nothing and rewrites the report.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(loop, "train_and_evaluate", no_training)
    config = get_config()
    config.data_dir = str(data)
    again = ablation.run(config, str(workdir), variants, [0, 1], quick=True, compile_cache=False)
    assert again["summary"]["FLD"]["nme"] == report["summary"]["FLD"]["nme"]
