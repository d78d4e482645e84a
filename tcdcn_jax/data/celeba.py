"""CelebA (Liu et al. 2015) and its MAFL subset: 5 points, 40 binary attributes.

Published layout (config.data_dir; files are looked up in the folder itself and in Anno/ and Eval/):

    Anno/list_landmarks_align_celeba.txt   with Img/img_align_celeba/   (aligned 178x218 photos)
    Anno/list_landmarks_celeba.txt         with Img/img_celeba/         (in-the-wild photos)
    Anno/list_attr_celeba.txt   Anno/list_bbox_celeba.txt   Eval/list_eval_partition.txt
    MAFL/training.txt  MAFL/testing.txt    (MAFL only: the 19,000 / 1,000 image names)

The landmark, attribute and box lists start with a count line and a header line; the partition list
has neither. Landmarks: lefteye, righteye, nose, leftmouth, rightmouth (x y each); CelebA's "left" is
image-left, our order; pixel values are taken as 0-based. Attributes are +-1: our gender = Male == 1,
glasses = Eyeglasses == 1, smile = Smiling == 1, and all 40 are stored as 0/1 in `attributes` (names in
ATTRIBUTE_NAMES order of the file's header). The in-the-wild box (x_1 y_1 width height) becomes
`source_box`; the aligned photos have none. config.celeba_images ('auto', 'aligned', 'wild'; 'align'
is read as 'aligned') picks the photo set; auto takes the aligned one if its files are there.
"""

from __future__ import annotations

import abc
import pathlib

import numpy as np

from tcdcn_jax.data.image_io import DataError, where
from tcdcn_jax.data.tfds_common import AnnotatedFace, FaceBuilder, Item, parse_floats, read_lines

NUM_ATTRIBUTES = 40
LABEL_ATTRIBUTES = {"gender": "Male", "glasses": "Eyeglasses", "smile": "Smiling"}
IMAGE_SETS = {
    "aligned": ("list_landmarks_align_celeba.txt", "img_align_celeba"),
    "wild": ("list_landmarks_celeba.txt", "img_celeba"),
}
IMAGE_SET_CHOICES = ("auto", "aligned", "align", "wild")  # 'align', as the release's file names
PARTITIONS = {"0": "train", "1": "validation", "2": "test"}
MAFL_FILES = {"train": "MAFL/training.txt", "test": "MAFL/testing.txt"}


def find(root: pathlib.Path, name: str) -> pathlib.Path:
    """A CelebA file in root, root/Anno, root/Eval or root/Img (the release's folders)."""
    for folder in ("", "Anno", "Eval", "Img"):
        candidate = root / folder / name
        if candidate.exists():
            return candidate
    raise DataError(f"CelebA: {name} not found in {root} (nor in Anno/, Eval/, Img/)")


def image_set_choice(choice: str) -> str:
    """'auto', 'aligned' or 'wild' for a config's celeba_images ('align' means 'aligned')."""
    if choice not in IMAGE_SET_CHOICES:
        raise ValueError(f"celeba_images must be auto, aligned or wild, not {choice!r}")
    return "aligned" if choice == "align" else choice


def image_set(root: pathlib.Path, choice: str) -> str:
    """'aligned' or 'wild': the photo set to read ('auto' prefers aligned if present)."""
    choice = image_set_choice(choice)
    if choice in IMAGE_SETS:
        return choice
    for name, (ann, folder) in IMAGE_SETS.items():
        try:
            find(root, ann), find(root, folder)
            return name
        except DataError:
            continue
    raise DataError(f"CelebA: neither aligned nor in-the-wild landmarks + photos found in {root}")


def read_table(path: pathlib.Path, num_values: int, header: bool = True
               ) -> tuple[list[str], dict[str, tuple[int, list[str]]]]:
    """(header names, {image: (line, values)}) of a CelebA list; DataError naming file:line."""
    lines = read_lines(path)
    names: list[str] = []
    if header:
        if len(lines) < 2:
            raise DataError(f"{path}: expected a count line and a header line")
        (n0, count), (_, head) = lines[0], lines[1]
        try:
            expected = int(count.strip())
        except ValueError as e:
            raise DataError(f"{where(path, n0)}: first line must be the row count, got {count!r}") from e
        names = head.split()
        if names and names[0] == "image_id":
            names = names[1:]
        lines = lines[2:]
        if len(lines) != expected:
            raise DataError(f"{path}: the count line says {expected} rows, the file has {len(lines)}")
    rows: dict[str, tuple[int, list[str]]] = {}
    for line, text in lines:
        fields = text.split()
        if len(fields) != num_values + 1:
            raise DataError(f"{where(path, line)}: expected an image name and {num_values} values, "
                            f"got {len(fields)} fields")
        rows[fields[0]] = (line, fields[1:])
    return names, rows


class _CelebABase(FaceBuilder, skip_registration=True):
    NUM_POINTS = 5
    LABELS = ("gender", "smile", "glasses")
    EXTRA = {"attributes": ((NUM_ATTRIBUTES,), np.int8)}
    HOMEPAGE = "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the CelebA folder (Anno/, Eval/, Img/; MAFL/ for MAFL)."

    def _images(self, root: pathlib.Path) -> str:
        return image_set(root, self.options.get("images", "auto"))

    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        names = [ann for ann, _ in IMAGE_SETS.values()] + [
            "list_attr_celeba.txt", "list_bbox_celeba.txt", "list_eval_partition.txt"]
        found = []
        for name in names:
            try:
                found.append(find(root, name))
            except DataError:
                continue
        return found + [root / f for f in MAFL_FILES.values()]

    @abc.abstractmethod
    def split_names(self, root: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
        """Split -> [(image name, 'file:line' where the split lists it)]."""

    def list_faces(self, root: pathlib.Path) -> dict[str, list[Item]]:
        images = self._images(root)
        lm_file, folder = IMAGE_SETS[images]
        lm_path, attr_path = find(root, lm_file), find(root, "list_attr_celeba.txt")
        _, landmarks = read_table(lm_path, 10)
        attr_names, attributes = read_table(attr_path, NUM_ATTRIBUTES)
        if len(attr_names) != NUM_ATTRIBUTES:
            raise DataError(f"{attr_path}: header must name {NUM_ATTRIBUTES} attributes, "
                            f"got {len(attr_names)}")
        missing = [a for a in LABEL_ATTRIBUTES.values() if a not in attr_names]
        if missing:
            raise DataError(f"{attr_path}: header lacks attributes {missing}")
        boxes_by_name = {}
        if images == "wild":
            _, boxes_by_name = read_table(find(root, "list_bbox_celeba.txt"), 4)
        image_dir = find(root, folder)
        out: dict[str, list[Item]] = {}
        for split, names in self.split_names(root).items():
            items: list[Item] = []
            for name, listed_at in names:
                try:
                    items.append(self._face(name, listed_at, image_dir, lm_path, landmarks, attr_path,
                                            attributes, attr_names, boxes_by_name))
                except DataError as e:
                    items.append(e)
            out[split] = items
        return out

    def _face(self, name, listed_at, image_dir, lm_path, landmarks, attr_path, attributes,
              attr_names, boxes_by_name) -> AnnotatedFace:
        if name not in landmarks:
            raise DataError(f"{listed_at}: {name} has no row in {lm_path}")
        if name not in attributes:
            raise DataError(f"{listed_at}: {name} has no row in {attr_path}")
        line, values = landmarks[name]
        xy = parse_floats(values, where(lm_path, line), "a coordinate").reshape(5, 2)
        a_line, a_values = attributes[name]
        if any(v not in ("1", "-1") for v in a_values):
            raise DataError(f"{where(attr_path, a_line)}: attributes must be 1 or -1")
        attrs = np.array([v == "1" for v in a_values], np.int8)
        labels = {task: int(attrs[attr_names.index(attr)]) for task, attr in LABEL_ATTRIBUTES.items()}
        source_box = None
        if boxes_by_name:
            if name not in boxes_by_name:
                raise DataError(f"{listed_at}: {name} has no row in list_bbox_celeba.txt")
            b_line, b_values = boxes_by_name[name]
            source_box = parse_floats(b_values, f"list_bbox_celeba.txt:{b_line}", "a box value")
        return AnnotatedFace(image_path=str(image_dir / name), file=name, landmarks=xy,
                             where=where(lm_path, line), labels=labels,
                             extra={"attributes": attrs}, source_box=source_box)


class TcdcnCeleba(_CelebABase):
    """CelebA with its own partition (list_eval_partition.txt): train / validation / test."""

    SPLITS = ("train", "validation", "test")

    def split_names(self, root: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
        path = find(root, "list_eval_partition.txt")
        out: dict[str, list[tuple[str, str]]] = {s: [] for s in self.SPLITS}
        for line, text in read_lines(path):
            fields = text.split()
            if len(fields) != 2 or fields[1] not in PARTITIONS:
                raise DataError(f"{where(path, line)}: expected 'image partition' with partition "
                                f"0, 1 or 2, got {text!r}")
            out[PARTITIONS[fields[1]]].append((fields[0], where(path, line)))
        return out


class TcdcnMafl(_CelebABase):
    """MAFL: 19,000 training and 1,000 test CelebA faces (the lists in MAFL/)."""

    SPLITS = ("train", "test")

    def split_names(self, root: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
        return mafl_split_names(root)


def mafl_split_names(root: pathlib.Path) -> dict[str, list[tuple[str, str]]]:
    """MAFL's lists (root/MAFL/training.txt, testing.txt): split -> [(image name, 'file:line')]."""
    out = {}
    for split, rel in MAFL_FILES.items():
        path = root / rel
        names = []
        for line, text in read_lines(path):
            fields = text.split()
            if len(fields) != 1:
                raise DataError(f"{where(path, line)}: expected one image name, got {text!r}")
            names.append((fields[0], where(path, line)))
        out[split] = names
    return out


def _options(config) -> dict[str, str]:
    return {"images": image_set_choice(str(config.get("celeba_images", "auto")))}


def load_celeba(config):
    """sources.Splits with CelebA's own train / validation / test partition."""
    from tcdcn_jax.data.tfds_common import load_source

    return load_source(TcdcnCeleba, config, train="train", validation="validation", test="test",
                       options=_options(config))


def load_mafl(config):
    """sources.Splits: MAFL's 19,000 minus config.num_val held-out faces, validation, MAFL's 1,000 test."""
    from tcdcn_jax.data.tfds_common import load_source

    return load_source(TcdcnMafl, config, train="train", test="test", options=_options(config))
