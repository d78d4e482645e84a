"""The `tcdcn` command: predict landmarks, import the authors' model, export a model.

    tcdcn predict IMAGE|FOLDER|- ... [--weights W]  [--box L,T,W,H]... | [--boxes boxes.csv]
                  [--format jsonl|csv|pts] [--out FILE_OR_FOLDER] [--draw FOLDER] [--recursive]
                  [--detector NAME] [--min-score S] [--min-face PX] [--max-side PX] [--refine N]
                  [--averaged] [--backend jax|onnxruntime|openvino] [--batch-size N]
                  [--progress | --quiet]
    tcdcn import-official model.mat OUT_WORKDIR
    tcdcn export --weights W --out model.bin [--platforms cpu,cuda]
    tcdcn export --weights W --out model.onnx [--format onnx]
    tcdcn --version

Results stream out one image at a time (formats: tcdcn_jax/photos/outputs.py). Output paths are
checked before any work. Errors in the input (a missing or unreadable image, a bad box, weights
that do not fit, a bad option) are one line each on stderr, naming the file; the other images are
still processed and the exit status is 2. Exit status 1 is a bug (set TCDCN_DEBUG=1 for the
traceback); 130 an interrupt (every line written before it is kept).

Compiled programs are kept in JAX's persistent compilation cache ($XDG_CACHE_HOME/tcdcn_jax/jax,
by default ~/.cache/tcdcn_jax/jax; JAX_COMPILATION_CACHE_DIR overrides), so only the first run
compiles. Heavy modules are imported when a command needs them: `--help` and `--version` load none.
The predict command itself (every Predictor option passed through): photos/cli_predict.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import sys
from typing import Sequence

from tcdcn_jax.photos.cli_predict import (WEIGHTS_ENV, cmd_predict, enable_compilation_cache,
                                          load_predictor)
from tcdcn_jax.photos.inputs import EXIT_INPUT, STDIN, InputError, one_line, parse_box

__all__ = ["main", "parse_box", "InputError"]

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_INPUT)


class _Version(argparse.Action):
    """--version, worked out only when asked (importlib.metadata, no jax import)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        import platform
        from importlib import metadata

        from tcdcn_jax import __version__

        def version(package: str) -> str:
            try:
                return metadata.version(package)
            except metadata.PackageNotFoundError:
                return "not installed"
        sys.stdout.write(f"tcdcn {__version__} (jax {version('jax')}, jaxlib {version('jaxlib')}, "
                         f"Python {platform.python_version()})\n")
        parser.exit()


def cmd_import_official(args) -> int:
    from tcdcn_jax.photos import export, outputs

    if not os.path.isfile(args.model):
        raise InputError(f"{args.model}: no such file")
    outputs.check_folder_target(args.out, "OUT_WORKDIR")
    try:
        out = export.import_official(args.model, args.out)
    except ValueError as err:
        raise InputError(str(err)) from None
    print(out)
    return 0


def cmd_export(args) -> int:
    import json

    from tcdcn_jax.photos import export, outputs

    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "stablehlo")
    platforms = None
    if args.platforms is not None:
        if fmt != "stablehlo":
            raise InputError("--platforms applies to --format stablehlo only")
        try:
            platforms = export.check_platforms(p.strip() for p in args.platforms.split(","))
        except ValueError as err:
            raise InputError(f"--platforms: {err}") from None
    outputs.check_file_target(args.out, "--out")  # before loading weights and tracing (seconds)
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise InputError("--format onnx needs the onnx package: pip install 'tcdcn_jax[onnx]'")
    enable_compilation_cache()
    predictor = load_predictor(args.weights, {})
    meta = export.export_model(predictor, args.out, platforms=platforms, format=fmt)
    print(json.dumps({"out": args.out, **meta}))
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="landmarks for the faces in images",
        description="Landmarks for the faces in images, streamed one image at a time (JSON Lines "
                    "by default). Negative box values: --box -10,-20,150,150 and "
                    "--box=-10,-20,150,150 both work.")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders (images recognised by content) or - (one image "
                        "from stdin)")
    p.add_argument("--weights", help=f"a workdir (ours or from import-official), the authors' "
                                     f"model.mat, or an exported model (default: ${WEIGHTS_ENV})")
    p.add_argument("--box", action="append", metavar="L,T,W,H",
                   help="face box in pixels (left, top, width, height), one image only; repeat "
                        "for more faces; without boxes a face detector finds the faces")
    p.add_argument("--boxes", metavar="CSV",
                   help="per-image boxes: rows path,left,top,width,height (several rows per "
                        "image for several faces; paths from the CSV's folder); images not "
                        "listed go through the detector; with no IMAGE, the CSV's images")
    p.add_argument("--format", choices=("jsonl", "csv", "pts"),
                   help="jsonl: one JSON object per image (default); csv: one row per face; "
                        "pts: an iBUG .pts file per face in the --out folder (default: csv for "
                        "an --out ending in .csv, else jsonl)")
    p.add_argument("--out", metavar="FILE_OR_FOLDER",
                   help="where results go: a file for jsonl and csv ('-' or absent: stdout), a "
                        "folder for pts (created if its parent exists)")
    p.add_argument("--draw", metavar="FOLDER", help="write an overlay PNG per image here "
                                                    "(created if its parent exists)")
    p.add_argument("-r", "--recursive", action="store_true", help="look into subfolders too")
    p.add_argument("--detector", metavar="NAME",
                   help="auto (default: the first installed of libfacedetection, mtcnn, dlib, "
                        "haar) or one of those")
    p.add_argument("--min-score", type=float, metavar="S",
                   help="drop detections scoring below S (the detector's own scale)")
    p.add_argument("--min-face", type=float, metavar="PX", help="drop faces narrower than PX")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="detect on a copy whose longer side is at most PX (default 640)")
    p.add_argument("--refine", type=int, metavar="N",
                   help="re-crop from the predicted points N times (default: 2 from given "
                        "boxes and Haar's, 0 from the other detectors)")
    p.add_argument("--averaged", action="store_true",
                   help="TCDCN-Averaged: average over shifted crops (slower, steadier)")
    p.add_argument("--backend", choices=("jax", "onnxruntime", "openvino"),
                   help="runtime of the network (default: jax, or onnxruntime for an ONNX "
                        "file)")
    p.add_argument("--batch-size", type=int, metavar="N", help="faces per network call")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true",
                       help="progress bar on stderr (default: when stderr is a terminal)")
    shown.add_argument("--quiet", action="store_true", help="no progress bar and no notes")
    p.set_defaults(func=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcdcn", description="TCDCN facial landmarks (JAX).")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_predict(sub)

    p = sub.add_parser("import-official", help="the authors' model.mat as a workdir")
    p.add_argument("model", help="model.mat from zhzhanp/TCDCN-face-alignment")
    p.add_argument("out", help="workdir to create")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("export", help="serialise a model as StableHLO (jax.export) or ONNX")
    p.add_argument("--weights", required=True, help="a workdir or the authors' model.mat")
    p.add_argument("--out", required=True,
                   help="output file (a .json sidecar is written next to it)")
    p.add_argument("--format", choices=("stablehlo", "onnx"),
                   help="stablehlo (jax.export) or onnx (needs the onnx extra); default: onnx "
                        "for an --out ending in .onnx, stablehlo otherwise")
    p.add_argument("--platforms", help="stablehlo only: comma-separated jax platforms to lower "
                                       "for, among cpu, cuda, rocm, tpu (default cpu,cuda)")
    p.set_defaults(func=cmd_export)
    return parser


_NEGATIVE_VALUE = re.compile(r"-\.?\d")


def join_negative_boxes(argv: Sequence[str]) -> list[str]:
    """`--box -100,-100,150,150` -> `--box=-100,-100,150,150`: argparse reads a value starting with
    '-' (other than a lone number) as an option."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if out and out[-1] == "--box" and _NEGATIVE_VALUE.match(arg) and "--" not in argv[:i]:
            out[-1] = f"--box={arg}"
        else:
            out.append(arg)
    return out


def _check_numbers(args) -> None:
    for name, low in (("batch_size", 1), ("refine", 0), ("max_side", 16), ("min_face", 0)):
        value = getattr(args, name, None)
        if value is not None and not value >= low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {value:g}")
    score = getattr(args, "min_score", None)
    if score is not None and not math.isfinite(score):  # argparse's float() takes nan and inf
        raise InputError(f"--min-score must be a finite number, got {score:g}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = join_negative_boxes(sys.argv[1:] if argv is None else [str(a) for a in argv])
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse takes one run of positionals: images after options come back as extras.
        if args.command == "predict" and all(e == STDIN or not e.startswith("-") for e in extra):
            args.images, extra = args.images + extra, []
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as done:  # --help, --version or a usage error (said on stderr)
        return done.code if isinstance(done.code, int) else EXIT_INPUT
    try:
        _check_numbers(args)
        return args.func(args)
    except InputError as err:
        sys.stderr.write(f"tcdcn: error: {one_line(err)}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("tcdcn: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tcdcn predict ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:  # one line, not a traceback, unless asked
        if os.environ.get("TCDCN_DEBUG"):
            raise
        sys.stderr.write(f"tcdcn: internal error: {type(err).__name__}: {one_line(err)}\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
