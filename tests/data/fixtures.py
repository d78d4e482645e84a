"""Writes tiny real-dataset folders in each dataset's published layout, at test time (never committed).

Pixels come from the synthetic face world; each writer returns what it wrote (landmarks as the
annotation file states them, labels as our 0-based classes, file names per split) so tests can check
the built records exactly.
"""

from __future__ import annotations

import pathlib
import sqlite3

import numpy as np
from PIL import Image

from tcdcn_jax.data import synthetic

IMAGE_SIZE = 96


def faces(n: int, seed: int) -> dict[str, np.ndarray]:
    return synthetic.generate(n, seed, image_size=IMAGE_SIZE, num_workers=1)


def write_image(path: pathlib.Path, grey: np.ndarray, mode: str = "RGB", fmt: str | None = None) -> None:
    """Saves a grey array as a photo of the given Pillow mode (RGB, L, RGBA, P, I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "RGBA":
        rgb = np.stack([grey] * 3 + [np.full_like(grey, 200)], axis=-1)
        img = Image.fromarray(rgb, "RGBA")
    else:
        img = Image.fromarray(grey).convert("RGB" if mode == "P" else mode)
        if mode == "P":
            img = img.quantize(256)
    img.save(path, format=fmt)


def _fmt(values: np.ndarray) -> list[str]:
    return [f"{v:.2f}" for v in values]


def write_mtfl(root: pathlib.Path, n_train: int = 6, n_test: int = 3, seed: int = 0) -> dict:
    """MTFL: training.txt / testing.txt with backslash paths, x's then y's, 1-based codes."""
    expected = {}
    for split, n, ann, folders in (("train", n_train, "training.txt", ("lfw_5590", "net_7876")),
                                   ("test", n_test, "testing.txt", ("AFLW",))):
        d = faces(n, seed + (split == "test"))
        lines, files = [], []
        lm = np.round(d["landmarks5"].astype(np.float64), 2)
        for i in range(n):
            rel = f"{folders[i % len(folders)]}\\face_{split}_{i:04d}.jpg"
            write_image(root / rel.replace("\\", "/"), d["image"][i], mode="RGB" if i % 2 else "L")
            codes = [2 - d["gender"][i], 2 - d["smile"][i], 2 - d["glasses"][i], d["pose"][i] + 1]
            lines.append(" " + " ".join([rel, *_fmt(lm[i, :, 0]), *_fmt(lm[i, :, 1]),
                                         *map(str, codes)]))
            files.append(rel.replace("\\", "/"))
        (root / ann).write_text("\r\n".join(lines) + "\r\n")
        expected[split] = {"landmarks": lm, "files": files,
                           **{k: d[k].astype(np.int32) for k in ("pose", "gender", "smile", "glasses")}}
    return expected


def write_pts(path: pathlib.Path, lm_1based: np.ndarray, truncate_at: int | None = None) -> None:
    """A version-1 .pts file (coordinates as given: 1-based)."""
    rows = [f"{x:.3f} {y:.3f}" for x, y in lm_1based]
    lines = ["version: 1", f"n_points:  {len(rows)}", "{", *rows, "}"]
    if truncate_at is not None:
        lines = lines[:truncate_at]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# 300-W folders, how many faces each fixture folder gets, the photo extension and Pillow mode.
FOLDERS_300W = {
    "afw": (2, ".jpg", "RGB"), "helen/trainset": (2, ".jpg", "L"), "lfpw/trainset": (2, ".png", "P"),
    "helen/testset": (1, ".jpg", "RGB"), "lfpw/testset": (2, ".png", "I;16"), "ibug": (2, ".jpg", "RGBA"),
}


def write_300w(root: pathlib.Path, seed: int = 0) -> dict:
    """300-W: .pts (1-based) + photos per folder; returns {folder: {'files', 'landmarks' (0-based)}}."""
    expected = {}
    n = sum(c for c, _, _ in FOLDERS_300W.values())
    d = faces(n, seed)
    i = 0
    for folder, (count, ext, mode) in FOLDERS_300W.items():
        files, lms = [], []
        for j in range(count):
            stem = f"{folder.split('/')[0]}_{j:03d}_1"
            lm = np.round(d["landmarks68"][i].astype(np.float64) + 1.0, 3)  # the file is 1-based
            write_pts(root / folder / f"{stem}.pts", lm)
            fmt = "PNG" if mode in ("RGBA", "I;16") and ext == ".jpg" else None
            write_image(root / folder / f"{stem}{ext}", d["image"][i], mode=mode, fmt=fmt)
            files.append(f"{folder}/{stem}{ext}")
            lms.append(lm - 1.0)
            i += 1
        expected[folder] = {"files": files, "landmarks": np.stack(lms)}
    return expected


CELEBA_ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips "
                "Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin "
                "Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open "
                "Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
                "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
                "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def write_celeba(root: pathlib.Path, n: int = 9, seed: int = 0, wild: bool = False) -> dict:
    """CelebA release folders (Anno/, Eval/, Img/) + MAFL/ lists; returns per-image expectations."""
    d = faces(n, seed)
    rng = np.random.default_rng(seed)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    ann_name, img_dir = (("list_landmarks_celeba.txt", "img_celeba") if wild else
                         ("list_landmarks_align_celeba.txt", "img_align_celeba"))
    lm = np.round(d["landmarks5"].astype(np.float64))  # CelebA lists whole pixels
    attrs = rng.choice([-1, 1], size=(n, 40))
    attrs[:, CELEBA_ATTRS.index("Male")] = 2 * d["gender"] - 1
    attrs[:, CELEBA_ATTRS.index("Eyeglasses")] = 2 * d["glasses"] - 1
    attrs[:, CELEBA_ATTRS.index("Smiling")] = 2 * d["smile"] - 1
    box = np.round(d["box"].astype(np.float64))
    lm_rows = [f"{name} " + " ".join(f"{int(v):4d}" for v in lm[i].ravel()) for i, name in enumerate(names)]
    attr_rows = [f"{name} " + " ".join(f"{int(v):2d}" for v in attrs[i]) for i, name in enumerate(names)]
    box_rows = [f"{name} " + " ".join(f"{int(v):5d}" for v in box[i]) for i, name in enumerate(names)]
    (root / "Anno").mkdir(parents=True, exist_ok=True)
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y " \
             "rightmouth_x rightmouth_y"
    (root / "Anno" / ann_name).write_text("\n".join([str(n), header, *lm_rows]) + "\n")
    (root / "Anno" / "list_attr_celeba.txt").write_text(
        "\n".join([str(n), " ".join(CELEBA_ATTRS) + " ", *attr_rows]) + "\n")
    (root / "Anno" / "list_bbox_celeba.txt").write_text(
        "\n".join([str(n), "image_id x_1 y_1 width height", *box_rows]) + "\n")
    partition = [i % 3 for i in range(n)]
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "\n".join(f"{name} {p}" for name, p in zip(names, partition)) + "\n")
    (root / "MAFL").mkdir(exist_ok=True)
    mafl_test = names[1::4]
    mafl_train = [x for x in names[::-1] if x not in mafl_test]
    (root / "MAFL" / "training.txt").write_text("\n".join(mafl_train) + "\n")
    (root / "MAFL" / "testing.txt").write_text("\n".join(mafl_test))  # no final newline, as published
    for i, name in enumerate(names):
        write_image(root / "Img" / img_dir / name, d["image"][i])
    return {"names": names, "landmarks": lm, "attributes": (attrs == 1).astype(np.int8), "box": box,
            "partition": np.array(partition), "mafl_train": mafl_train, "mafl_test": mafl_test,
            **{k: d[k].astype(np.int32) for k in ("gender", "smile", "glasses")}}


AFLW_CODES = ["LBLC", "LBC", "LBRC", "RBLC", "RBC", "RBRC", "LELC", "LEC", "LERC", "RELC", "REC",
              "RERC", "LE", "LN", "NC", "RN", "RE", "MLC", "MC", "MRC", "CC"]


def write_aflw(root: pathlib.Path, n: int = 8, seed: int = 0, subject_left: bool = True,
               yaw_sign: float = -1.0) -> dict:
    """aflw.sqlite (the published tables) + flickr/ photos.

    subject_left: 'Left' codes name the subject's left (image-right); yaw_sign: AFLW yaw = yaw_sign *
    our yaw (radians). Face 2 lacks its 'REC' point (left out by the reader).
    """
    d = faces(n, seed)
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "aflw.sqlite")
    db.executescript("""
        CREATE TABLE Faces(face_id INTEGER PRIMARY KEY, file_id TEXT, db_id TEXT);
        CREATE TABLE FaceImages(image_id INTEGER PRIMARY KEY, db_id TEXT, file_id TEXT, filepath TEXT,
                                bw INTEGER, width INTEGER, height INTEGER);
        CREATE TABLE FaceRect(face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER,
                              annot_type_id INTEGER);
        CREATE TABLE FeatureCoords(face_id INTEGER, feature_id INTEGER, x REAL, y REAL,
                                   annot_type_id INTEGER);
        CREATE TABLE FeatureCoordTypes(feature_id INTEGER PRIMARY KEY, descr TEXT, code TEXT,
                                       x REAL, y REAL, z REAL);
        CREATE TABLE FacePose(face_id INTEGER, roll REAL, pitch REAL, yaw REAL, annot_type_id INTEGER);
        CREATE TABLE FaceMetaData(face_id INTEGER, sex TEXT, occluded INTEGER, glasses INTEGER,
                                  bw INTEGER, annot_type_id INTEGER);
    """)
    db.executemany("INSERT INTO FeatureCoordTypes VALUES (?, ?, ?, 0, 0, 0)",
                   [(i + 1, code, code) for i, code in enumerate(AFLW_CODES)])
    lm = d["landmarks5"].astype(np.float64)
    ours = ["LEC", "REC", "NC", "MLC", "MRC"]
    if subject_left:  # the image-left eye is then the subject's right: 'REC'
        ours = ["REC", "LEC", "NC", "MRC", "MLC"]
    face_ids = list(range(101, 101 + n))
    for i, face_id in enumerate(face_ids):
        file_id = f"image{i:05d}.jpg"
        filepath = f"{i % 3}/{file_id}"
        write_image(root / "flickr" / filepath, d["image"][i])
        db.execute("INSERT INTO FaceImages VALUES (?, 'flickr', ?, ?, 0, ?, ?)",
                   (i + 1, file_id, filepath, IMAGE_SIZE, IMAGE_SIZE))
        db.execute("INSERT INTO Faces VALUES (?, ?, 'flickr')", (face_id, file_id))
        b = d["box"][i]
        db.execute("INSERT INTO FaceRect VALUES (?, ?, ?, ?, ?, 1)", (face_id, *map(int, b)))
        for k, code in enumerate(ours):
            if i == 2 and code == "REC":
                continue
            db.execute("INSERT INTO FeatureCoords VALUES (?, ?, ?, ?, 1)",
                       (face_id, AFLW_CODES.index(code) + 1, float(lm[i, k, 0]), float(lm[i, k, 1])))
        db.execute("INSERT INTO FacePose VALUES (?, 0, 0, ?, 1)",
                   (face_id, yaw_sign * np.radians(float(d["yaw"][i]))))
        db.execute("INSERT INTO FaceMetaData VALUES (?, ?, 0, ?, 0, 1)",
                   (face_id, "m" if d["gender"][i] else "f", int(d["glasses"][i])))
    db.commit()
    db.close()
    keep = [i for i in range(n) if i != 2]
    return {"landmarks": lm[keep], "files": [f"flickr/{i % 3}/image{i:05d}.jpg" for i in keep],
            "rect": d["box"][keep].astype(int).astype(np.float64),
            **{k: d[k][keep].astype(np.int32) for k in ("pose", "gender", "glasses")}}


def to_98(lm68_Nx68x2: np.ndarray) -> np.ndarray:
    """A plausible WFLW 98-point layout from 68 iBUG points (interpolated; fixture pixels only)."""
    p = np.asarray(lm68_Nx68x2, np.float64)
    mid = lambda a, b: (p[:, a] + p[:, b]) / 2  # noqa: E731
    jaw = np.empty((p.shape[0], 33, 2))
    jaw[:, 0::2] = p[:, 0:17]
    jaw[:, 1::2] = (p[:, 0:16] + p[:, 1:17]) / 2
    down = np.array([0.0, 2.0])
    lbrow = [p[:, 17], p[:, 18], p[:, 19], p[:, 20], p[:, 21], p[:, 21] + down, p[:, 20] + down,
             p[:, 19] + down, p[:, 18] + down]
    rbrow = [p[:, 22], p[:, 23], p[:, 24], p[:, 25], p[:, 26], p[:, 25] + down, p[:, 24] + down,
             p[:, 23] + down, p[:, 22] + down]
    leye = [p[:, 36], p[:, 37], mid(37, 38), p[:, 38], p[:, 39], p[:, 40], mid(40, 41), p[:, 41]]
    reye = [p[:, 42], p[:, 43], mid(43, 44), p[:, 44], p[:, 45], p[:, 46], mid(46, 47), p[:, 47]]
    rest = [p[:, k] for k in range(27, 36)] + leye + reye + [p[:, k] for k in range(48, 68)]
    pupils = [p[:, 36:42].mean(1), p[:, 42:48].mean(1)]
    return np.concatenate([jaw, np.stack(lbrow + rbrow + rest + pupils, axis=1)], axis=1)


def write_wflw(root: pathlib.Path, n_train: int = 5, n_test: int = 4, seed: int = 0) -> dict:
    """WFLW annotation lists (196 coords, rect, 6 attributes, path) + WFLW_images/."""
    expected = {}
    ann_dir = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    ann_dir.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        d = faces(n, s)
        lm = np.round(to_98(d["landmarks68"]), 6)
        attrs = np.random.default_rng(s).integers(0, 2, (n, 6))
        attrs[0] = [1, 0, 0, 0, 0, 0]
        rect = np.round(np.concatenate([d["box"][:, :2], d["box"][:, :2] + d["box"][:, 2:]], 1))
        lines, files = [], []
        for i in range(n):
            rel = f"{i}--Event/{i}_Event_{split}_{i}.jpg"
            write_image(root / "WFLW_images" / rel, d["image"][i])
            lines.append(" ".join([*(f"{v:.6f}" for v in lm[i].ravel()),
                                   *(str(int(v)) for v in rect[i]), *(str(a) for a in attrs[i]), rel]))
            files.append(rel)
        (ann_dir / f"list_98pt_rect_attr_{split}.txt").write_text("\n".join(lines) + "\n")
        expected[split] = {"landmarks": lm, "attributes": attrs.astype(np.int8), "files": files,
                           "rect": rect}
    return expected


def config(dataset: str, data_dir: pathlib.Path, **overrides):
    """The tiny training config pointed at a fixture folder, with small held-out sets."""
    from tests.support import tiny_config

    return tiny_config(**{"dataset": dataset, "data_dir": str(data_dir), "num_val": 1, "num_test": 2,
                          **overrides})


def photo_coords(split: dict) -> np.ndarray:
    """Stored crop-frame landmarks mapped back to photo pixels (the inverse of boxes.to_crop)."""
    scale = split["crop_scale"].astype(np.float64)[:, None, None]
    return (split["landmarks"] + 0.5) / scale + split["crop_origin"][:, None, :] - 0.5


def check_flip(image_NxHxW: np.ndarray, box_Nx4: np.ndarray, lm_NxKx2: np.ndarray) -> None:
    """Mirroring through the augmentation swaps left/right points: the new left eye is the old right
    eye mirrored, the crop is the old crop mirrored, and mirroring twice gives the points back."""
    import jax.numpy as jnp

    from tcdcn_jax import geometry
    from tcdcn_jax.data import augment
    from tcdcn_jax.layouts import eye_centres, flip_normalised, get_layout

    layout = get_layout(lm_NxKx2.shape[1])
    n, size = len(image_NxHxW), 40
    args = (jnp.asarray(image_NxHxW), jnp.asarray(box_Nx4), jnp.asarray(lm_NxKx2))
    plain = geometry.identity_warp(n)
    mirror = plain._replace(flip_B=jnp.ones((n,), bool))
    img_o, lm_o = (np.asarray(a) for a in augment.crop_and_warp(*args, plain, size, layout.flip_perm))
    img_f, lm_f = (np.asarray(a) for a in augment.crop_and_warp(*args, mirror, size, layout.flip_perm))
    left_o, right_o = eye_centres(lm_o, layout)
    left_f, right_f = eye_centres(lm_f, layout)
    np.testing.assert_allclose(left_f, np.stack([1 - right_o[:, 0], right_o[:, 1]], -1), atol=1e-5)
    np.testing.assert_allclose(right_f, np.stack([1 - left_o[:, 0], left_o[:, 1]], -1), atol=1e-5)
    assert np.all(left_o[:, 0] < right_o[:, 0]), "the source's left eye must be the image-left one"
    np.testing.assert_allclose(img_f, img_o[:, :, ::-1], atol=1e-3)
    np.testing.assert_allclose(flip_normalised(flip_normalised(lm_o, layout), layout), lm_o, atol=1e-6)
    np.testing.assert_allclose(flip_normalised(lm_o, layout), lm_f, atol=1e-5)
