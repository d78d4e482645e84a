"""The auxiliary tasks: their classes, how people read them, what a mirror image does to a label.

Labels are 0-based class indices. Pose runs from left profile (0) to right profile (4), the face's
yaw being POSE_YAW_DEG[label]; a horizontal flip mirrors the yaw, so pose c becomes 4 - c, and
leaves gender, glasses and smiling as they are. Landmark point names and mirror pairs live in
`layouts`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

POSE_YAW_DEG = (-60, -30, 0, 30, 60)


@dataclasses.dataclass(frozen=True)
class Task:
    """One auxiliary task: per class (in label order) a readable name and the paper's short tag."""

    names: tuple[str, ...]
    tags: tuple[str, ...]
    mirror: tuple[int, ...]  # label of the horizontally flipped face, per label

    @property
    def num_classes(self) -> int:
        return len(self.names)


# In the order the paper lists them (and heads are correlated in its Fig. 5b).
TASKS: Mapping[str, Task] = {
    "pose": Task(names=("left profile", "left", "frontal", "right", "right profile"),
                 tags=tuple(f"{y:+d}" if y else "0" for y in POSE_YAW_DEG),
                 mirror=(4, 3, 2, 1, 0)),
    "gender": Task(names=("female", "male"), tags=("F", "M"), mirror=(0, 1)),
    "glasses": Task(names=("no glasses", "glasses"), tags=("NG", "G"), mirror=(0, 1)),
    "smile": Task(names=("not smiling", "smiling"), tags=("NS", "S"), mirror=(0, 1)),
}
NUM_CLASSES: Mapping[str, int] = {name: task.num_classes for name, task in TASKS.items()}


def _known(task: str, num_classes: int) -> Task | None:
    known = TASKS.get(task)
    return known if known is not None and known.num_classes == num_classes else None


def class_names(task: str, num_classes: int) -> tuple[str, ...] | None:
    """Readable class names of a task's labels; None for a task (or class count) we do not know."""
    known = _known(task, num_classes)
    return None if known is None else known.names


def class_tags(task: str, num_classes: int) -> tuple[str, ...]:
    """The paper's short tags (pose in degrees, S/NS, G/NG, M/F); indices for an unknown task."""
    known = _known(task, num_classes)
    return known.tags if known is not None else tuple(str(c) for c in range(num_classes))


def flip_labels(task: str, labels_B: Any, flip_B: Any) -> Any:
    """labels_B (jax) after mirroring the faces with flip_B (an unknown task's stay as they are)."""
    import jax.numpy as jnp  # here, so that numpy-only users of this module do not load jax

    known = TASKS.get(task)
    if known is None or known.mirror == tuple(range(known.num_classes)):
        return labels_B
    return jnp.where(flip_B, jnp.asarray(known.mirror, jnp.int32)[labels_B], labels_B)
