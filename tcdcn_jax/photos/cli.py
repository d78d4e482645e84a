"""The `tcdcn` command: predict landmarks, import the authors' model, export a model.

    tcdcn predict IMAGE_OR_FOLDER... --weights WORKDIR_OR_MODEL.mat [--box l,t,w,h]...
                  [--json OUT.json] [--draw OUT_DIR] [--batch-size N] [--progress]
    tcdcn import-official model.mat OUT_WORKDIR
    tcdcn export --weights WORKDIR_OR_MODEL.mat --out model.bin [--platforms cpu,cuda]
    tcdcn export --weights WORKDIR_OR_MODEL.mat --out model.onnx [--format onnx]

Errors in the input (a missing or unreadable image, a bad box, no face found, weights that do not fit)
are one line each on stderr, the other images are still processed, and the exit status is 2.
Unexpected failures are one line and status 1 (set TCDCN_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

EXIT_INPUT = 2
EXIT_INTERNAL = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                    ".gif")
_IMAGES_PER_CHUNK = 64  # images whose faces go through the network together


class InputError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_INPUT)


def _one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class _Reporter:
    """Error lines and an optional progress line on stderr, kept from overwriting each other."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.errors = 0

    def error(self, message: str) -> None:
        self.errors += 1
        prefix = "\r\033[K" if self.progress else ""
        sys.stderr.write(f"{prefix}tcdcn: error: {_one_line(message)}\n")
        sys.stderr.flush()

    def step(self, done: int, total: int, faces: int) -> None:
        if self.progress:
            sys.stderr.write(f"\r\033[K[{done}/{total}] images, {faces} faces")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'l,t,w,h' -> floats; InputError otherwise."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box must be left,top,width,height (4 numbers), got {text!r}")
    return values  # type: ignore[return-value]


def expand_images(paths: Sequence[str], report: _Reporter) -> list[str]:
    """Files as given, folders as their image files (sorted); a missing path is reported."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path)
                           if n.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, n)))
            if not found:
                report.error(f"{path}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif os.path.isfile(path):
            out.append(path)
        else:
            report.error(f"{path}: no such file or folder")
    return out


def _load_predictor(weights: str, **kwargs):
    from tcdcn_jax.photos.predictor import Predictor

    try:
        return Predictor.from_path(weights, **kwargs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(f"cannot use weights {weights}: {_one_line(err)}") from None
    except Exception as err:  # orbax / msgpack raise their own types for damaged checkpoints
        raise InputError(f"cannot read weights {weights}: {type(err).__name__}: "
                         f"{_one_line(err)}") from None


def _draw(path: str, arr, faces, out_dir: str, used: set[str]) -> str:
    """Overlay of `faces` on the loaded image `arr` (as the viewer shows it), saved as a PNG."""
    from PIL import Image, ImageDraw

    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = f"{stem}.png", 1
    while name in used:
        name, n = f"{stem}_{n}.png", n + 1
    used.add(name)
    canvas = Image.fromarray(arr).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for face in faces:
        left, top, width, height = face.box
        draw.rectangle([left, top, left + width, top + height], outline=(0, 255, 0),
                       width=max(1, round(width / 150)))
        r = max(1.0, width / 100)
        for x, y in face.landmarks:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
        if face.aux:
            label = ", ".join(a["name"] or str(a["label"]) for a in face.aux.values())
            draw.text((left, max(0, top - 12)), label, fill=(255, 255, 0))
    out = os.path.join(out_dir, name)
    canvas.save(out)
    return out


def cmd_predict(args) -> int:
    import numpy as np

    from tcdcn_jax.images import load_image

    report = _Reporter(args.progress or (sys.stderr.isatty() and not args.quiet))
    boxes = [parse_box(b) for b in args.box] if args.box else None
    images = expand_images(args.images, report)
    predictor = _load_predictor(args.weights, batch_size=args.batch_size)
    if args.draw:
        os.makedirs(args.draw, exist_ok=True)
    results: list[dict[str, Any]] = []
    drawn: set[str] = set()
    total_faces = 0
    for start in range(0, len(images), _IMAGES_PER_CHUNK):
        chunk = images[start:start + _IMAGES_PER_CHUNK]
        ready = []  # (path, image array or None, boxes_Nx4, img_NxSxSx1)
        for path in chunk:
            try:
                arr = load_image(path)
                try:
                    box_Nx4 = predictor.boxes_for(arr, boxes)
                except ValueError as err:
                    raise ValueError(f"{path}: {err}") from None
                if len(box_Nx4) == 0:
                    raise ValueError(f"{path}: no face found (pass --box l,t,w,h)")
                # The image is kept for its overlay only: a chunk of big photos is a lot of memory.
                ready.append((path, arr if args.draw else None, box_Nx4,
                              predictor.preprocess(arr, box_Nx4)))
            except (FileNotFoundError, ValueError) as err:
                report.error(str(err))
                results.append({"image": path, "error": _one_line(err)})
        if ready:
            out = predictor.run(np.concatenate([r[3] for r in ready]))
            offset = 0
            for path, arr, box_Nx4, _ in ready:
                part = {k: v[offset:offset + len(box_Nx4)] for k, v in out.items()}
                offset += len(box_Nx4)
                faces = predictor.decode(part, box_Nx4)
                total_faces += len(faces)
                entry = {"image": path, "faces": [f.to_json() for f in faces]}
                if args.draw:
                    entry["drawn"] = _draw(path, arr, faces, args.draw, drawn)
                results.append(entry)
        report.step(min(start + len(chunk), len(images)), len(images), total_faces)
    order = {p: i for i, p in enumerate(images)}
    results.sort(key=lambda r: order.get(r["image"], -1))
    head = json.dumps({"weights": args.weights, "num_landmarks": predictor.num_landmarks})
    # One line per image: readable, and line-oriented tools can split it.
    text = head[:-1] + ', "images": [\n' + ",\n".join(json.dumps(r) for r in results) + "\n]}"
    if args.json and args.json != "-":
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return EXIT_INPUT if report.errors else 0


def cmd_import_official(args) -> int:
    from tcdcn_jax.photos import export

    if not os.path.isfile(args.model):
        raise InputError(f"{args.model}: no such file")
    try:
        out = export.import_official(args.model, args.out)
    except ValueError as err:
        raise InputError(str(err)) from None
    print(out)
    return 0


def cmd_export(args) -> int:
    from tcdcn_jax.photos import export

    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "stablehlo")
    platforms = None
    if args.platforms is not None:
        if fmt != "stablehlo":
            raise InputError("--platforms applies to --format stablehlo only")
        try:
            platforms = export.check_platforms(p.strip() for p in args.platforms.split(","))
        except ValueError as err:
            raise InputError(f"--platforms: {err}") from None
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):  # before loading weights and tracing: that takes seconds
        raise InputError(f"--out {args.out}: folder {folder} does not exist")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise InputError("--format onnx needs the onnx package: "
                             "pip install 'tcdcn_jax[onnx]'") from None
    predictor = _load_predictor(args.weights)
    meta = export.export_model(predictor, args.out, platforms=platforms, format=fmt)
    print(json.dumps({"out": args.out, **meta}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tcdcn", description="TCDCN facial landmarks (JAX).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("predict", help="landmarks for faces in images")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--weights", required=True,
                   help="a workdir (ours or from import-official) or the authors' model.mat")
    p.add_argument("--box", action="append", metavar="L,T,W,H",
                   help="face box in pixels (tight around the 68 landmarks); repeat for more faces; "
                        "applies to every image; without it OpenCV's Haar cascade finds faces")
    p.add_argument("--json", metavar="OUT", help="write results here ('-' or absent: stdout)")
    p.add_argument("--draw", metavar="OUT_DIR", help="write overlay PNGs here")
    p.add_argument("--batch-size", type=int, default=256, help="faces per network call")
    p.add_argument("--progress", action="store_true", help="progress line on stderr (default: "
                   "when stderr is a terminal)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("import-official", help="the authors' model.mat as a workdir")
    p.add_argument("model", help="model.mat from zhzhanp/TCDCN-face-alignment")
    p.add_argument("out", help="workdir to create")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("export", help="serialise a model as StableHLO (jax.export) or ONNX")
    p.add_argument("--weights", required=True, help="a workdir or the authors' model.mat")
    p.add_argument("--out", required=True, help="output file (a .json sidecar is written next to it)")
    p.add_argument("--format", choices=("stablehlo", "onnx"),
                   help="stablehlo (jax.export) or onnx (needs the onnx extra); default: onnx "
                        "for an --out ending in .onnx, stablehlo otherwise")
    p.add_argument("--platforms", help="stablehlo only: comma-separated jax platforms to lower "
                                       "for, among cpu, cuda, rocm, tpu (default cpu,cuda)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        sys.stderr.write("tcdcn: error: --batch-size must be >= 1\n")
        return EXIT_INPUT
    try:
        return args.func(args)
    except InputError as err:
        sys.stderr.write(f"tcdcn: error: {_one_line(err)}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("tcdcn: interrupted\n")
        return 130
    except Exception as err:  # one line, not a traceback, unless asked
        if os.environ.get("TCDCN_DEBUG"):
            raise
        sys.stderr.write(f"tcdcn: internal error: {type(err).__name__}: {_one_line(err)}\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
