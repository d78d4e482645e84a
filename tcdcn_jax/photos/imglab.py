"""dlib's imglab XML (the dev photos' labels): per image, face boxes with named landmark parts.

    <image file='a.jpg'><box top='90' left='194' width='37' height='37'>
        <part name='00' x='201' y='107'/> ...
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    """One image's labelled faces: boxes_Nx4 (left, top, width, height) and lm_NxKx2 (x, y), 0-based."""

    path: str
    boxes_Nx4: np.ndarray
    lm_NxKx2: np.ndarray


def _number(elem: ET.Element, key: str, where: str) -> float:
    text = elem.get(key)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: <{elem.tag}> needs a number {key}=..., got {text!r}") from None


def read_imglab(xml_path: str | os.PathLike, num_points: int = 68) -> list[LabelledImage]:
    """The images of an imglab XML file, paths resolved next to it. Each face must have parts named
    0..num_points-1 (dlib writes '00', '01', ...); ValueError naming the file and image otherwise."""
    xml_path = os.fspath(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"{xml_path}: not a readable imglab XML file ({err})") from None
    folder = os.path.dirname(xml_path)
    out = []
    for image in root.iter("image"):
        name = image.get("file")
        if not name:
            raise ValueError(f"{xml_path}: an <image> has no file=...")
        where = f"{xml_path}: {name}"
        boxes, faces = [], []
        for box in image.iter("box"):
            boxes.append([_number(box, k, where) for k in ("left", "top", "width", "height")])
            pts = np.full((num_points, 2), np.nan)
            for part in box.iter("part"):
                try:
                    idx = int(part.get("name", ""))
                except ValueError:
                    raise ValueError(f"{where}: part name {part.get('name')!r} is not a number") \
                        from None
                if not 0 <= idx < num_points:
                    raise ValueError(f"{where}: part {idx} outside 0..{num_points - 1}")
                pts[idx] = _number(part, "x", where), _number(part, "y", where)
            if np.isnan(pts).any():
                raise ValueError(f"{where}: a face has {int((~np.isnan(pts[:, 0])).sum())} of "
                                 f"{num_points} parts")
            faces.append(pts)
        out.append(LabelledImage(os.path.join(folder, name),
                                 np.asarray(boxes, np.float32).reshape(-1, 4),
                                 np.asarray(faces, np.float32).reshape(-1, num_points, 2)))
    return out
