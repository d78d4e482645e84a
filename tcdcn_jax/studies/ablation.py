"""The paper's ablations: which auxiliary tasks help (Fig. 4, 6), what task-wise early stopping buys
(Fig. 7) and how the heads relate (Fig. 5b), over several seeds on the same data.

Layout of an ablation workdir W:
  W/<variant dir>/seed_<s>/   one ordinary training workdir per run (config.json, checkpoints/,
                              metrics.jsonl, summary.json); a run whose summary.json exists is kept
  W/ablation.json, W/ablation.md, W/*.png   the aggregate, rewritten at the end of every invocation
  W/.jax_cache/               persistent compilation cache: seeds of a variant reuse its compiled step
                              (unless JAX_COMPILATION_CACHE_DIR names one already)
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import distributed
from tcdcn_jax.eval import plots
from tcdcn_jax.eval import relatedness
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.train import workdir as workdir_lib
from tcdcn_jax.data import sources

ALL_TASKS = "pose,gender,glasses,smile"
BASELINE = "FLD"
NO_ES = "FLD+all (no ES)"
# Variant name -> config overrides. The single-task variants keep the base config's early stopping.
VARIANTS: dict[str, dict[str, Any]] = {
    "FLD": {"aux_tasks": ""},
    "FLD+pose": {"aux_tasks": "pose"},
    "FLD+gender": {"aux_tasks": "gender"},
    "FLD+glasses": {"aux_tasks": "glasses"},
    "FLD+smile": {"aux_tasks": "smile"},
    "FLD+all": {"aux_tasks": ALL_TASKS, "early_stopping": True},
    NO_ES: {"aux_tasks": ALL_TASKS, "early_stopping": False},
}
# Sizes of a smoke run (--quick): a few seconds per run once compiled. A constant learning rate: a
# dozen steps leave no room to warm up and decay.
QUICK: dict[str, Any] = dict(
    num_train=96, num_val=32, num_test=32, image_size=48, num_steps=12, batch_size=16,
    eval_every=4, log_every=4, checkpoint_every=12, eval_batch_size=16, schedule="constant",
    es_strip=2)
RELATEDNESS_VARIANTS = ("FLD+all", "FLD+smile")  # heat maps: all tasks, and the paper's Fig. 5b pair


def variant_dir(variant: str) -> str:
    """A folder name for a variant: 'FLD+all (no ES)' -> 'FLD+all_noES'."""
    return variant.replace(" (no ES)", "_noES").replace(" ", "_")


def run_dir(workdir: str, variant: str, seed: int) -> str:
    return os.path.join(workdir, variant_dir(variant), f"seed_{seed}")


def check_variants(variants: Sequence[str], seeds: Sequence[int]) -> None:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if not variants or not seeds:
        raise ValueError(f"need at least one variant and one seed, got {variants} and {seeds}")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct and >= 0, got {list(seeds)}")


def run_config(config: ml_collections.ConfigDict, variant: str, seed: int,
               quick: bool = False) -> ml_collections.ConfigDict:
    """The base config with a variant's overrides, the seed and, when quick, the smoke sizes."""
    c = config.copy_and_resolve_references()
    c.update(QUICK if quick else {})
    c.update(VARIANTS[variant])
    c.seed = int(seed)
    return c


def enable_compile_cache(path: str) -> None:
    """A persistent compilation cache: runs whose step compiles to the same program (the seeds of a
    variant; the single binary-task variants) load it instead of compiling again (~10 s on CPU each).
    A cache the user already set (JAX_COMPILATION_CACHE_DIR) is kept as it is."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_variants(config: ml_collections.ConfigDict, workdir: str, variants: Sequence[str],
                 seeds: Sequence[int], quick: bool = False, splits: sources.Splits | None = None,
                 train_fn: Callable[..., dict] | None = None,
                 allow_config_change: bool = False) -> dict[str, dict[int, dict]]:
    """Trains every (variant, seed) on one copy of the data; returns {variant: {seed: summary}}.

    A finished run of the same config is kept as it is; a half-done one resumes from its checkpoint
    (setup.finished_summary says what happens to a run of another config). `train_fn(config,
    workdir, splits)` defaults to loop.train_and_evaluate.
    """
    check_variants(variants, seeds)
    train_fn = train_fn or functools.partial(loop.train_and_evaluate,
                                             allow_config_change=allow_config_change)
    splits = splits or sources.load(run_config(config, variants[0], seeds[0], quick))
    results: dict[str, dict[int, dict]] = {v: {} for v in variants}
    # Seeds outermost: an ablation stopped part-way has every variant at the seeds it finished.
    for seed in seeds:
        for variant in variants:
            c, path = run_config(config, variant, seed, quick), run_dir(workdir, variant, seed)
            summary = setup.finished_summary(c, path, allow_config_change)
            if summary is not None:
                logging.info("ablation: %s seed %d already done (test NME %.4f), kept", variant, seed,
                             summary["test"]["nme"])
            else:
                logging.info("ablation: training %s seed %d in %s", variant, seed, path)
                summary = train_fn(c, path, splits)
            results[variant][int(seed)] = summary
    return results


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def _elementwise(rows: Sequence[Sequence[float | None]]) -> dict[str, list[float | None]]:
    a = np.asarray([[np.nan if x is None else x for x in r] for r in rows], np.float64)
    with warnings.catch_warnings():  # an all-NaN column (a pose with no faces) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=0)
        sd = np.nanstd(a, axis=0, ddof=1) if len(rows) > 1 else np.zeros(a.shape[1])
    clean = lambda x: [None if not np.isfinite(v) else float(v) for v in x]  # noqa: E731
    return {"mean": clean(mean), "sd": clean(sd)}


def aggregate(results: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean / sd / range over seeds of NME, failure rate, AUC, per-landmark and per-pose
    NME, attribute accuracies, and where each task stopped in each seed."""
    out = {}
    for variant, by_seed in results.items():
        tests = [s["test"] for s in by_seed.values()]
        tasks = list(tests[0].get("accuracy", {}))
        out[variant] = {
            "seeds": list(by_seed),
            "nme": _stats([t["nme"] for t in tests]),
            "failure_rate": _stats([t["failure_rate"] for t in tests]),
            "auc": _stats([t["auc"] for t in tests]),
            "per_landmark_nme": _elementwise([t["per_landmark_nme"] for t in tests]),
            "accuracy": {task: _stats([t["accuracy"][task] for t in tests]) for task in tasks},
            "task_stopped_at": {task: [s["task_stopped_at"].get(task) for s in by_seed.values()]
                                for task in tasks},
            "train_seconds": float(sum(s.get("seconds", 0.0) for s in by_seed.values())),
        }
        if all("per_pose_nme" in t for t in tests):
            out[variant]["per_pose_nme"] = _elementwise([t["per_pose_nme"] for t in tests])
        if all("mean_shape_nme" in t for t in tests):
            out[variant]["mean_shape_nme"] = float(np.mean([t["mean_shape_nme"] for t in tests]))
    return out


def comparisons(summary: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each variant against FLD, and FLD+all against FLD+all (no ES): the difference of seed means
    and whether it exceeds the seed spread, |delta| > sd_a + sd_b (sample sd over seeds)."""
    pairs = [(v, BASELINE) for v in summary if v != BASELINE and BASELINE in summary]
    if "FLD+all" in summary and NO_ES in summary:
        pairs.append(("FLD+all", NO_ES))
    rows = []
    for a, b in pairs:
        row: dict[str, Any] = {"a": a, "b": b}
        for metric in ("nme", "failure_rate"):
            sa, sb = summary[a][metric], summary[b][metric]
            delta, spread = sa["mean"] - sb["mean"], sa["sd"] + sb["sd"]
            row[metric] = {"delta": delta, "spread": spread, "beyond_spread": abs(delta) > spread,
                           "ranges_overlap": not (sa["max"] < sb["min"] or sb["max"] < sa["min"])}
        la, lb = summary[a]["per_landmark_nme"], summary[b]["per_landmark_nme"]
        d = np.asarray(la["mean"]) - np.asarray(lb["mean"])
        spread = np.asarray(la["sd"]) + np.asarray(lb["sd"])
        row["per_landmark"] = {"delta": d.tolist(), "beyond_spread": (np.abs(d) > spread).tolist()}
        rows.append(row)
    return rows


def _read_records(path: str) -> list[dict]:
    """metrics.jsonl; a resumed run logs some evaluations twice, the last one wins."""
    by_step: dict[int, dict] = {}
    with open(os.path.join(path, "metrics.jsonl")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def _relatedness(workdir: str, variant: str, seeds: Sequence[int]) -> dict[str, Any]:
    per_seed = [relatedness.head_correlations(checkpoints.load_params(
        run_dir(workdir, variant, s))[1]) for s in seeds]
    return relatedness.mean_correlations(per_seed)


def figures(workdir: str, summary: Mapping[str, Mapping[str, Any]],
            results: Mapping[str, Mapping[int, Mapping[str, Any]]], point_names: Sequence[str],
            rel: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The ablation's PNGs; returns {figure: path}."""
    out = {"per_landmark": plots.save_per_landmark_bars(
        {v: s["per_landmark_nme"]["mean"] for v, s in summary.items()},
        os.path.join(workdir, "per_landmark.png"), point_names,
        errors={v: s["per_landmark_nme"]["sd"] for v, s in summary.items()},
        failure={v: (s["failure_rate"]["mean"], s["failure_rate"]["sd"]) for v, s in summary.items()},
        title="Mean error per landmark (mean ± sd over seeds)")}
    pose = {v: summary[v]["per_pose_nme"] for v in (BASELINE, "FLD+pose", "FLD+all")
            if v in summary and "per_pose_nme" in summary[v]}
    if pose:
        out["per_pose"] = plots.save_per_pose_bars(
            {v: p["mean"] for v, p in pose.items()}, os.path.join(workdir, "per_pose.png"),
            errors={v: p["sd"] for v, p in pose.items()}, title="Mean error per pose (mean ± sd)")
    curves = [v for v in ("FLD+all", NO_ES) if v in results]
    if curves:
        first = {v: min(results[v]) for v in curves}
        out["training_curves"] = plots.save_training_curves(
            {f"{v}, seed {first[v]}": _read_records(run_dir(workdir, v, first[v])) for v in curves},
            os.path.join(workdir, "training_curves.png"),
            stopped_at={f"{v}, seed {first[v]}": results[v][first[v]]["task_stopped_at"]
                        for v in curves})
    for v, r in rel.items():
        out[f"relatedness_{v}"] = plots.save_heatmap(
            np.asarray(r["r"]), r["rows"], r["columns"],
            os.path.join(workdir, f"relatedness_{variant_dir(v)}.png"),
            title=f"{v}: Pearson r, landmark vs task head weights\n(mean over {r['num_models']} seeds)")
    return out


def _pm(s: Mapping[str, float], scale: float = 1.0, digits: int = 4) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    """ablation.md: the table of Fig. 4, the differences against the seed spread, and the rest."""
    summary, names = report["summary"], report["point_names"]
    lines = _main_table(report)
    lines += _comparison_table(report["comparisons"], names, len(report["seeds"]))
    lines += _pose_and_task_tables(summary)
    for v, r in report["relatedness"].items():
        r_arr = np.asarray(r["r"])
        lines += ["", f"## Task relatedness in {v} (Pearson r of head weights, mean over seeds)",
                  "",
                  "| coordinate | " + " | ".join(r["columns"]) + " |",
                  "|---|" + "---|" * len(r["columns"])]
        lines += [f"| {row} | " + " | ".join(f"{x:+.2f}" for x in r_arr[i]) + " |"
                  for i, row in enumerate(r["rows"])]
    lines += ["", "## Figures", ""] + [f"- {k}: `{os.path.basename(p)}`"
                                       for k, p in report["figures"].items()]
    return "\n".join(lines) + "\n"


def _main_table(report: Mapping[str, Any]) -> list[str]:
    """The setup paragraph, NME / failure / AUC / per-landmark NME per variant, the baseline."""
    c, summary, names = report["config"], report["summary"], report["point_names"]
    lines = [
        "# Ablation: TCDCN variants (paper Fig. 4, 5b, 6, 7)", "",
        f"Data: {c['dataset']} (data_seed {c['data_seed']}), {c['num_train']} train / {c['num_val']} "
        f"validation / {c['num_test']} test faces. Training: {c['num_steps']} steps at batch "
        f"{c['batch_size']}, {c['trunk']} trunk, early stopping epsilon {c['es_epsilon']} strip "
        f"{c['es_strip']}. Seeds {', '.join(map(str, report['seeds']))} (init, augmentation, batch "
        f"order); the data is the same for every run. Test NME is normalised by the inter-ocular "
        f"distance; a failure is NME > 0.10. Wall time of this invocation: "
        f"{report['seconds']:.0f} s "
        f"(training time summed over runs: {sum(s['train_seconds'] for s in summary.values()):.0f} s).",
        "", "| variant | NME (mean ± sd) | failure % (mean ± sd) | AUC@0.10 | "
        + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names)]
    for v, s in summary.items():
        per = " | ".join(f"{m:.4f}" for m in s["per_landmark_nme"]["mean"])
        lines.append(f"| {v} | {_pm(s['nme'])} | {_pm(s['failure_rate'], 100, 1)} | "
                     f"{_pm(s['auc'], 1, 3)} | {per} |")
    ms = [s["mean_shape_nme"] for s in summary.values() if "mean_shape_nme" in s]
    if ms:
        lines += ["", f"Mean-shape baseline (the training mean shape placed in each box): NME "
                      f"{ms[0]:.4f}."]
    return lines


def _comparison_table(comparisons: Sequence[Mapping[str, Any]], names: Sequence[str],
                      num_seeds: int) -> list[str]:
    """Each pair's NME and failure differences against the seed spread, and the landmarks
    beyond it."""
    lines = ["", "## Differences against the seed spread", "",
             "Δ = mean(a) − mean(b) over seeds; spread = sd(a) + sd(b) (sample sd). "
             "'beyond' marks |Δ| > spread" + (" (with one seed sd = 0: no spread is known)."
                                              if num_seeds < 2 else "."), "",
             "| a vs b | ΔNME | spread | beyond | Δfailure (pts) | spread | beyond | "
             "landmarks with |Δ| > spread |", "|---|---|---|---|---|---|---|---|"]
    for r in comparisons:
        n, f = r["nme"], r["failure_rate"]
        per = r["per_landmark"]
        lm = [f"{names[k]} ({d:+.4f})"
              for k, (d, b) in enumerate(zip(per["delta"], per["beyond_spread"])) if b]
        lines.append(f"| {r['a']} vs {r['b']} | {n['delta']:+.4f} | {n['spread']:.4f} | "
                     f"{'yes' if n['beyond_spread'] else 'no'} | {100 * f['delta']:+.1f} | "
                     f"{100 * f['spread']:.1f} | {'yes' if f['beyond_spread'] else 'no'} | "
                     f"{', '.join(lm) or '-'} |")
    return lines


def _pose_and_task_tables(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """NME per pose class, attribute accuracies and the step each task stopped at."""
    lines = []
    pose_rows = [(v, s["per_pose_nme"]) for v, s in summary.items() if "per_pose_nme" in s]
    if pose_rows:
        lines += ["", "## NME per pose (mean over seeds)", "",
                  "| variant | " + " | ".join(plots.POSE_CLASSES) + " |",
                  "|---|" + "---|" * len(plots.POSE_CLASSES)]
        for v, p in pose_rows:
            lines.append(f"| {v} | " + " | ".join("-" if m is None else f"{m:.4f}"
                                                   for m in p["mean"]) + " |")
    lines += ["", "## Attribute accuracy and task stops", "",
              "| variant | accuracy (mean over seeds) | step where each task stopped, per seed |",
              "|---|---|---|"]
    for v, s in summary.items():
        if s["accuracy"]:
            acc = ", ".join(f"{t} {a['mean']:.3f}" for t, a in s["accuracy"].items())
            stops = "; ".join(f"{t} " + ", ".join("-" if x is None else str(x) for x in st)
                              for t, st in s["task_stopped_at"].items())
            lines.append(f"| {v} | {acc} | {stops} |")
    return lines


def report(config: ml_collections.ConfigDict, workdir: str,
           results: Mapping[str, Mapping[int, Mapping[str, Any]]], seeds: Sequence[int],
           quick: bool, seconds: float) -> dict[str, Any]:
    """Aggregates, draws, and writes ablation.json and ablation.md; returns the JSON content."""
    summary = aggregate(results)
    first = next(iter(summary.values()))
    point_names = [n.rsplit(" ", 1)[0] for n in
                   relatedness.coordinate_names(len(first["per_landmark_nme"]["mean"]))[::2]]
    rel = {v: _relatedness(workdir, v, list(results[v])) for v in RELATEDNESS_VARIANTS
           if v in results}
    base = json.loads(run_config(config, BASELINE, seeds[0], quick).to_json())
    base.pop("aux_tasks")
    base.pop("seed")
    out = {"config": base, "quick": quick, "variants": list(results), "seeds": list(seeds),
           "seconds": seconds, "point_names": point_names, "summary": summary,
           "comparisons": comparisons(summary), "relatedness": rel,
           "runs": {v: {str(s): {k: r[k] for k in ("test", "task_stopped_at", "seconds", "steps")}
                        for s, r in by_seed.items()} for v, by_seed in results.items()}}
    if not distributed.is_primary():  # one writer per ablation
        return out
    out["figures"] = figures(workdir, summary, results, point_names, rel)
    workdir_lib.write_text(os.path.join(workdir, "ablation.json"), json.dumps(out, indent=1))
    workdir_lib.write_text(os.path.join(workdir, "ablation.md"), markdown(out))
    return out


def run(config: ml_collections.ConfigDict, workdir: str, variants: Sequence[str] = tuple(VARIANTS),
        seeds: Sequence[int] = (0, 1, 2), quick: bool = False, compile_cache: bool = True,
        allow_config_change: bool = False) -> dict[str, Any]:
    """The whole ablation: train what is missing, then write ablation.json / .md and the PNGs."""
    t0 = time.time()
    check_variants(variants, seeds)
    os.makedirs(workdir, exist_ok=True)
    if compile_cache:
        enable_compile_cache(os.path.join(workdir, ".jax_cache"))
    setup.quiet_library_logs()
    results = run_variants(config, workdir, variants, seeds, quick,
                           allow_config_change=allow_config_change)
    out = report(config, workdir, results, seeds, quick, time.time() - t0)
    logging.info("ablation done in %.0f s: %s", time.time() - t0,
                 {v: round(s["nme"]["mean"], 4) for v, s in out["summary"].items()})
    return out
