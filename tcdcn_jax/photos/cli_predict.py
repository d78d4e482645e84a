"""`tcdcn predict`: images and options in, one result per image streamed out (photos/cli.py parses
the command line and maps errors to exit statuses).

Every option of the Predictor reaches it unchanged (`predictor_options`): the CLI adds inputs
(files, folders, stdin, box CSVs), output formats, overlays, a progress bar and one-line messages,
and leaves finding faces, refinement and batching to `Predictor.stream`.

Only the standard library and photos/inputs.py are imported at module level, so that `tcdcn --help`
and `tcdcn --version` load nothing heavy; the Predictor (and jax) load when a run needs them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Iterator

from tcdcn_jax.photos.inputs import EXIT_INPUT, STDIN, InputError, Item, one_line, parse_box

WEIGHTS_ENV = "TCDCN_WEIGHTS"
# The Predictor's options, as `tcdcn predict` names them (dashes for underscores).
PREDICTOR_OPTIONS = ("detector", "min_score", "min_face", "max_side", "refine", "averaged",
                     "backend", "batch_size")


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


def predictor_options(args) -> dict[str, Any]:
    """The Predictor keywords the command line sets (absent ones keep the Predictor's defaults)."""
    given = {name: getattr(args, name, None) for name in PREDICTOR_OPTIONS}
    return {k: v for k, v in given.items() if v is not None and v is not False}


def load_predictor(weights: str, options: dict[str, Any]):
    """Predictor.from_path(weights, **options); InputError (one line naming the weights) for weights
    that are missing, do not fit or need a package that is not installed."""
    from tcdcn_jax.photos.predictor import Predictor

    try:
        return Predictor.from_path(weights, **options)
    except (OSError, ValueError, ImportError) as err:
        text = one_line(err)
        raise InputError(f"--weights {text}" if weights in text else
                         f"--weights {weights}: {text}") from None


class Reporter:
    """Error lines, notes and the progress bar (tqdm) on stderr, not overwriting each other."""

    def __init__(self, progress: bool = False, quiet: bool = True):
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
        self._write(f"tcdcn: error: {one_line(message)}")

    def note(self, message: str, once: bool = False) -> None:
        if self.quiet or (once and message in self._said):
            return
        self._said.add(message)
        self._write(f"tcdcn: note: {one_line(message)}")

    def step(self, faces: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(faces=faces, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_outputs(args) -> str:
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


def gather(args, reporter: Reporter) -> tuple[list[Item], Any, list | None]:
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


def check_detector(name: str) -> None:
    """InputError for a detector that is unknown or not installed (before loading weights)."""
    from tcdcn_jax.photos import detectors

    try:
        detectors.require(name)
    except (ValueError, ImportError) as err:
        raise InputError(f"--detector {name}: {one_line(err)}") from None


class Work:
    """(key, image, boxes or None) per item for Predictor.stream, stdin read when its turn comes
    (and kept for its overlay); boxes from --box, else the CSV's, else None (the detector's)."""

    def __init__(self, items: list[Item], table=None, boxes=None, reporter: Reporter | None = None):
        from tcdcn_jax.photos import inputs

        self.items = items
        self.boxes_of = [boxes] * len(items)
        if table is not None:
            self.boxes_of = [table.boxes.get(STDIN if it.path is None else inputs.file_id(it.path))
                             for it in items]
            if reporter is not None and any(b is None for b in self.boxes_of):
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


def make_writer(fmt: str, stream, out: str | None, predictor, run_info: dict[str, Any]):
    from tcdcn_jax.photos import outputs

    if fmt == "jsonl":
        return outputs.JsonlWriter(stream, run_info)
    if fmt == "csv":
        return outputs.CsvWriter(stream, predictor.num_landmarks, tuple(predictor.aux_tasks))
    return outputs.PtsWriter(out)


@contextlib.contextmanager
def _sigint_between_images() -> Iterator[threading.Event]:
    """Ctrl-C sets an event that the loop reads between images, instead of raising inside a
    network call or a lock the worker threads wait on; a second Ctrl-C raises at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


def predict_items(predictor, items: list[Item], writer, table=None, boxes=None,
                  draw: str | None = None, reporter: Reporter | None = None) -> int:
    """`tcdcn predict`'s loop over Predictor.stream: each image's result written as it comes (and
    its overlay drawn into `draw`), errors and 'no face' said on stderr; returns the number of
    errors. Boxes from `boxes` (for every item), else the box `table`'s, else the detector's.
    Ctrl-C stops it after the image being written (KeyboardInterrupt; the lines so far are kept)."""
    from tcdcn_jax.photos import outputs

    reporter = reporter or Reporter()
    work = Work(items, table, boxes, reporter)
    overlays = outputs.OutputNames(draw) if draw else None
    reporter.start(len(work.items))
    faces_total = 0
    with _sigint_between_images() as stop, contextlib.closing(predictor.stream(work)) as results:
        for item, given, (key, result) in zip(work.items, work.boxes_of, results):
            _write_one(item, given, key, result, writer, reporter, overlays, work)
            faces_total += 0 if isinstance(result, BaseException) else len(result)
            reporter.step(faces_total)
            if stop.is_set():  # every line so far is written; the stream's workers are let go
                raise KeyboardInterrupt
    return reporter.errors


def _write_one(item, given, key, result, writer, reporter, overlays, work) -> None:
    """One image's line (and overlay), or its error line."""
    from tcdcn_jax.images import load_image
    from tcdcn_jax.photos import outputs

    extra: dict[str, Any] = {} if given is None else {"detector": None}
    if isinstance(result, BaseException):  # its message names the image
        message = one_line(result)
        reporter.error(message)
        writer.write(item, None, error=message, extra=extra)
        return
    faces = [face.to_json() for face in result]
    if not faces:
        reporter.note(f"{key}: {outputs.NO_FACE}")
    if overlays is not None:
        rgb = load_image(work.image(item), name=key)
        extra["drawn"] = outputs.save_overlay(rgb, faces, overlays.take(item.stem) + ".png")
    writer.write(item, faces, extra=extra)


def cmd_predict(args) -> int:
    fmt = check_outputs(args)
    weights = args.weights or os.environ.get(WEIGHTS_ENV)
    if not weights:
        raise InputError(f"no weights: pass --weights (a workdir, the authors' model.mat or an "
                         f"exported model) or set {WEIGHTS_ENV}")
    reporter = Reporter(args.progress or (sys.stderr.isatty() and not args.quiet), args.quiet)
    items, table, boxes = gather(args, reporter)
    if not items:
        return EXIT_INPUT
    if args.detector is not None:
        check_detector(args.detector)
    enable_compilation_cache()
    try:
        predictor = load_predictor(weights, predictor_options(args))
    except InputError as err:
        raise InputError(f"{err} (from ${WEIGHTS_ENV})" if not args.weights else err) from None
    if predictor.box_note and (boxes or table is not None):
        reporter.note(predictor.box_note)
    out = None if args.out in (None, "-") else args.out
    for folder in (args.draw, out if fmt == "pts" else None):
        if folder:
            os.makedirs(folder, exist_ok=True)
    stream = sys.stdout if out is None or fmt == "pts" else open(out, "w", encoding="utf-8")
    try:
        run_info = {"weights": weights, "detector": predictor.detector_name}
        writer = make_writer(fmt, stream, out, predictor, run_info)
        predict_items(predictor, items, writer, table=table, boxes=boxes, draw=args.draw,
                      reporter=reporter)
    finally:
        reporter.close()
        if stream is not sys.stdout:
            stream.close()
    return EXIT_INPUT if reporter.errors else 0
