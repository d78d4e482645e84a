"""Studies built from many runs: the paper's ablation and the 5 -> 68 transfer study."""
