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
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Sequence

from tcdcn_jax.photos import contract
from tcdcn_jax.photos.contract import one_line as _one_line
from tcdcn_jax.photos.inputs import STDIN, InputError, Item, parse_box

__all__ = ["main", "parse_box", "InputError"]

EXIT_INTERNAL = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
WEIGHTS_ENV = "TCDCN_WEIGHTS"


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


class _Reporter:
    """Error lines, notes and the progress bar (tqdm) on stderr, not overwriting each other."""

    def __init__(self, progress: bool, quiet: bool):
        self.quiet = quiet
        self.errors = 0
        self.bar = None
        self._said: set[str] = set()
        self._progress = progress

    def start(self, total: int) -> None:
        if self._progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def error(self, message: str) -> None:
        self.errors += 1
        self._write(f"tcdcn: error: {_one_line(message)}")

    def note(self, message: str, once: bool = False) -> None:
        if self.quiet or (once and message in self._said):
            return
        self._said.add(message)
        self._write(f"tcdcn: note: {_one_line(message)}")

    def step(self, faces: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(faces=faces, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def enable_compilation_cache() -> str | None:
    """Points JAX's persistent compilation cache at the user's cache folder (unless
    JAX_COMPILATION_CACHE_DIR chooses one), caching every program: the predictor's compile in
    well under JAX's default 1 s threshold, yet cost most of a cold start. Returns the folder."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # JAX reads it (and its own thresholds) itself
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(root, "tcdcn_jax", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


# -- predict --

def _check_outputs(args) -> str:
    """The output format; InputError for output paths that cannot be written (before any work)."""
    from tcdcn_jax.photos import outputs

    out = None if args.out in (None, "-") else args.out
    fmt = args.format or ("csv" if out and out.lower().endswith(".csv") else "jsonl")
    if fmt == "pts":
        if out is None:
            raise InputError("--format pts writes one file per face: give --out FOLDER")
        outputs.check_folder_target(out, "--out")
    elif out is not None:
        outputs.check_file_target(out, "--out")
    if args.draw:
        outputs.check_folder_target(args.draw, "--draw")
    return fmt


def _gather(args, reporter: _Reporter) -> tuple[list[Item], Any, list | None]:
    """(items, box table or None, --box boxes or None); usage errors raise InputError."""
    from tcdcn_jax.photos import inputs

    boxes = [parse_box(b) for b in args.box] if args.box else None
    table = inputs.read_box_csv(args.boxes) if args.boxes else None
    if boxes and table:
        raise InputError("give --box or --boxes, not both")
    if not args.images and table is None:
        raise InputError("name an image, a folder or - (stdin), or give --boxes boxes.csv")
    items = (inputs.find_images(args.images, args.recursive, reporter.error) if args.images
             else inputs.items_from_csv(table))
    if boxes and len(items) > 1:
        raise InputError(f"--box applies to one image, got {len(items)}: give per-image boxes "
                         "with --boxes boxes.csv (path,left,top,width,height)")
    if any(it.path is None for it in items) and (sys.stdin is None or sys.stdin.isatty()):
        inputs.read_stdin()  # says why, before any work
    return items, table, boxes


def _check_detector(name: str) -> None:
    """InputError for a detector that is unknown or not installed (before loading weights)."""
    from tcdcn_jax.photos import detectors

    try:
        resolved = detectors.resolve(name)
    except (ValueError, ImportError) as err:
        raise InputError(f"--detector {name}: {_one_line(err)}") from None
    if resolved not in detectors.available():
        raise InputError(f"--detector {name} is not installed (installed: "
                         f"{', '.join(detectors.available()) or 'none'})")


class _Work:
    """(key, image, boxes or None) per item for the stream, stdin read when its turn comes (and kept
    for its overlay); boxes from --box, else the CSV's, else None (the detector's)."""

    def __init__(self, items: list[Item], table, boxes, reporter: _Reporter):
        from tcdcn_jax.photos import inputs

        self.items = items
        self.boxes_of = [boxes] * len(items)
        if table is not None:
            self.boxes_of = [table.boxes.get(STDIN if it.path is None else inputs.file_id(it.path))
                             for it in items]
            if any(b is None for b in self.boxes_of):
                reporter.note(f"images not listed in {table.source} go through the face detector")
        self.stdin_bytes: bytes | None = None

    def image(self, item: Item):
        if item.path is not None:
            return item.path
        if self.stdin_bytes is None:
            from tcdcn_jax.photos import inputs

            self.stdin_bytes = inputs.read_stdin()
        return self.stdin_bytes

    def __iter__(self):
        for item, boxes in zip(self.items, self.boxes_of):
            yield item.key, self.image(item), boxes


def cmd_predict(args) -> int:
    fmt = _check_outputs(args)
    weights = args.weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        raise InputError(f"no weights: pass --weights (a workdir, the authors' model.mat or an "
                         f"exported model) or set {WEIGHTS_ENV}")
    reporter = _Reporter(args.progress or (sys.stderr.isatty() and not args.quiet), args.quiet)
    items, table, boxes = _gather(args, reporter)
    if not items:
        return EXIT_INPUT
    if args.detector is not None:
        _check_detector(args.detector)
    enable_compilation_cache()
    try:
        predictor, detect = contract.load_predictor(
            weights, {k: getattr(args, k) for k in contract.PREDICTOR_OPTIONS}, reporter.note)
    except InputError as err:
        raise InputError(f"{err} (from ${WEIGHTS_ENV})" if not args.weights else err) from None
    note = contract.box_note(predictor)
    if note and (boxes or table is not None):
        reporter.note(note)
    out = None if args.out in (None, "-") else args.out
    for folder in (args.draw, out if fmt == "pts" else None):
        if folder:
            os.makedirs(folder, exist_ok=True)
    stream = sys.stdout if out is None or fmt == "pts" else open(out, "w", encoding="utf-8")
    try:
        run_info = {"weights": weights, "detector": contract.detector_name(predictor, detect)}
        writer = _writer(fmt, stream, out, predictor, run_info)
        predict_items(predictor, detect, items, writer, table=table, boxes=boxes, draw=args.draw,
                      reporter=reporter)
    finally:
        reporter.close()
        if stream is not sys.stdout:
            stream.close()
    return EXIT_INPUT if reporter.errors else 0


def _writer(fmt: str, stream, out: str | None, predictor, run_info: dict[str, Any]):
    from tcdcn_jax.photos import outputs

    if fmt == "jsonl":
        return outputs.JsonlWriter(stream, run_info)
    if fmt == "csv":
        return outputs.CsvWriter(stream, predictor.num_landmarks,
                                 tuple(getattr(predictor, "aux_tasks", ())))
    return outputs.PtsWriter(out)


def predict_items(predictor, detect, items: list[Item], writer, table=None, boxes=None,
                  draw: str | None = None, reporter: _Reporter | None = None) -> int:
    """`tcdcn predict`'s loop: each image's result written as it comes (and its overlay drawn into
    `draw`), errors and 'no face' said on stderr; returns the number of errors. Boxes from `boxes`
    (for every item), else the box `table`'s, else the detector's (`detect`: contract.py)."""
    from tcdcn_jax.images import load_image
    from tcdcn_jax.photos import outputs

    reporter = reporter or _Reporter(progress=False, quiet=True)
    work = _Work(items, table, boxes, reporter)
    results = contract.stream(predictor, work, detect)
    overlays = outputs.OutputNames(draw) if draw else None
    reporter.start(len(work.items))
    faces_total = 0
    for item, given, (key, result) in zip(work.items, work.boxes_of, results):
        extra: dict[str, Any] = {} if given is None else {"detector": None}
        if isinstance(result, BaseException):
            message = contract.named(key, result)
            reporter.error(message)
            writer.write(item, None, error=message, extra=extra)
        else:
            if not result:
                reporter.note(f"{key}: {outputs.NO_FACE}")
            if overlays is not None:
                rgb = load_image(work.image(item), name=key)
                extra["drawn"] = outputs.save_overlay(rgb, result,
                                                      overlays.take(item.stem) + ".png")
            writer.write(item, result, extra=extra)
            faces_total += len(result)
        reporter.step(faces_total)
    return reporter.errors


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
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise InputError("--format onnx needs the onnx package: "
                             "pip install 'tcdcn_jax[onnx]'") from None
    enable_compilation_cache()
    predictor, _ = contract.load_predictor(args.weights, {}, detection=False)
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
                   help="auto (default: the best installed), libfacedetection, mtcnn, dlib or haar")
    p.add_argument("--min-score", type=float, metavar="S",
                   help="drop detections scoring below S (the detector's own scale)")
    p.add_argument("--min-face", type=float, metavar="PX", help="drop faces narrower than PX")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="detect on a copy whose longer side is at most PX (default 640)")
    p.add_argument("--refine", type=int, metavar="N",
                   help="re-crop from the predicted points N times (default: per detector)")
    p.add_argument("--averaged", action="store_true",
                   help="TCDCN-Averaged: average over shifted crops (slower, steadier)")
    p.add_argument("--backend", choices=("jax", "onnxruntime", "openvino"),
                   help="runtime of the network (default jax)")
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
        sys.stderr.write(f"tcdcn: error: {_one_line(err)}\n")
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
        sys.stderr.write(f"tcdcn: internal error: {type(err).__name__}: {_one_line(err)}\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
