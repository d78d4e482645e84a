"""Build a real dataset's records once, ahead of training, and print its splits.

    python -m tcdcn_jax.data.build --dataset=mtfl --data_dir=/data/MTFL [--skip_bad_rows]

Training builds on first use too (same cache), so this is only a way to check a folder early.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Sequence

# dataset name (config.dataset) -> (module, builder class)
BUILDERS = {
    "mtfl": ("mtfl", "TcdcnMtfl"),
    "celeba": ("celeba", "TcdcnCeleba"),
    "mafl": ("celeba", "TcdcnMafl"),
    "aflw": ("aflw", "TcdcnAflw"),
    "300w": ("ibug300w", "TcdcnIbug300w"),
    "wflw": ("wflw", "TcdcnWflw"),
}


def builder_class(dataset: str):
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}")
    module, name = BUILDERS[dataset]
    return getattr(importlib.import_module(f"tcdcn_jax.data.{module}"), name)


def main(argv: Sequence[str] | None = None) -> None:
    from tcdcn_jax.data import tfds_common

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(BUILDERS))
    parser.add_argument("--data_dir", required=True, help="the dataset folder, as published")
    parser.add_argument("--skip_bad_rows", action="store_true",
                        help="skip (and count) bad rows instead of stopping at the first")
    parser.add_argument("--celeba_images", default="auto",
                        choices=("auto", "aligned", "align", "wild"),
                        help="CelebA / MAFL photo set ('align' means 'aligned')")
    args = parser.parse_args(argv)
    options = None
    if args.dataset in ("celeba", "mafl"):
        from tcdcn_jax.data.celeba import image_set_choice

        options = {"images": image_set_choice(args.celeba_images)}
    builder = tfds_common.prepare(builder_class(args.dataset), args.data_dir,
                                  skip_bad=args.skip_bad_rows, options=options)
    print(f"records in {builder.data_dir}")
    for name, split in builder.info.splits.items():
        print(f"  {name}: {split.num_examples} faces")


if __name__ == "__main__":
    main()
