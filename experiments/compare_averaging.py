r"""TCDCN-Averaged on trained 68-point models: which translation grid, and how much it gains.

  python -m experiments.compare_averaging --workdirs='runs/transfer_study/finetune_*' \
      [--grids=2x2,4x2,4x1,8x1] [--out=runs/transfer_study/averaging_grids.json]

Each grid is STEPxRADIUS: translations on a STEP px grid of that radius without its corners (2x2 is
the default of the fine-tune config: the crop plus 20 shifts of at most 4 px). For every workdir the
test split of its own config is predicted once plainly and once per grid; the table gives NME x 100 as
mean ± sample sd over the workdirs, and the conv maps each grid costs (report trunk: sharing_cost).
The time cost of a grid: `python -m experiments.benchmark_averaging --step_px=S --radius=R`.
"""

from __future__ import annotations

import glob
import json
import sys

import numpy as np
from absl import app, flags, logging

from tcdcn_jax.model import averaging
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import transfer
from tcdcn_jax.data import sources

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Fine-tuned workdirs (glob patterns allowed).",
                              required=True)
_GRIDS = flags.DEFINE_list("grids", ["2x2", "4x2", "4x1", "8x1"], "Grids as STEPxRADIUS.")
_OUT = flags.DEFINE_string("out", "", "Write the per-workdir results and the table here (JSON).")
_BATCH = flags.DEFINE_integer("batch_size", 250, "Faces per jitted call.")


def parse_grid(text: str) -> tuple[int, int]:
    """'2x2' -> (step_px, radius); a clear ValueError for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"grid {text!r} is not STEPxRADIUS (e.g. 2x2)")
    return int(parts[0]), int(parts[1])


def _mean_sd(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "-"
    v = 100 * np.asarray(values)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.2f} ± {sd:.2f}"


def _hard(summary: dict) -> float | None:
    return summary["slices"].get("hard", {}).get("nme")  # real datasets may lack the slice labels


def table(results: dict[str, dict]) -> str:
    """Markdown: one row for the single pass, one per grid (NME x 100 over the workdirs)."""
    runs = list(results.values())
    lines = ["| prediction | windows | conv maps (conv1-4) | NME | gain over single | hard NME |",
             "|---|---|---|---|---|---|",
             f"| single pass | 1 | 1, 1, 1, 1 | {_mean_sd([r['single']['nme'] for r in runs])} | - | "
             f"{_mean_sd([_hard(r['single']) for r in runs])} |"]
    for name in runs[0]["grids"]:
        grid = [r["grids"][name] for r in runs]
        maps = grid[0].get("sharing", {}).get("conv_maps_per_layer", {})
        maps_text = ", ".join(str(maps[k]) for k in sorted(maps)) or "full passes"
        gain = [r["single"]["nme"] - g["nme"] for r, g in zip(runs, grid)]
        lines.append(f"| {name} grid | {grid[0]['translations']} | {maps_text} | "
                     f"{_mean_sd([g['nme'] for g in grid])} | {_mean_sd(gain)} | "
                     f"{_mean_sd([_hard(g) for g in grid])} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        grids = {g: averaging.grid_offsets(*parse_grid(g)) for g in _GRIDS.value}
    except ValueError as e:
        sys.exit(f"error: {e}")
    workdirs = sorted({w for pattern in _WORKDIRS.value for w in (glob.glob(pattern) or [pattern])})
    results = {}
    for i, workdir in enumerate(workdirs):
        try:
            config = checkpoints.read_config(workdir)
        except FileNotFoundError as e:
            sys.exit(f"error: {workdir}: {e}")
        logging.info("[%d/%d] %s", i + 1, len(workdirs), workdir)
        results[workdir] = transfer.compare_grids(workdir, sources.load(config).test, grids,
                                                  _BATCH.value)
    text = table(results)
    print(text)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"workdirs": results, "table": text}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
