"""The auxiliary tasks' one table: class counts, names, tags, and what a mirror does to a label."""

import jax.numpy as jnp
import numpy as np

from tcdcn_jax import tasks


def test_the_papers_tasks_and_their_classes():
    assert tasks.NUM_CLASSES == {"pose": 5, "gender": 2, "glasses": 2, "smile": 2}
    for name, task in tasks.TASKS.items():
        assert len(task.names) == len(task.tags) == len(task.mirror) == task.num_classes, name
        assert sorted(task.mirror) == list(range(task.num_classes)), name


def test_names_and_tags_with_fallbacks():
    assert tasks.class_names("pose", 5)[0] == "left profile"
    assert tasks.class_names("gender", 2) == ("female", "male")
    assert tasks.class_names("age", 3) is None and tasks.class_names("pose", 3) is None
    assert tasks.class_tags("pose", 5) == ("-60", "-30", "0", "+30", "+60")
    assert tasks.class_tags("smile", 2) == ("NS", "S")
    assert tasks.class_tags("age", 3) == ("0", "1", "2")


def test_a_mirror_reverses_pose_and_keeps_the_rest():
    labels = jnp.arange(5, dtype=jnp.int32)
    flip = jnp.array([True, True, False, True, False])
    np.testing.assert_array_equal(tasks.flip_labels("pose", labels, flip), [4, 3, 2, 1, 4])
    binary = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    for task in ("gender", "glasses", "smile", "unknown"):
        np.testing.assert_array_equal(tasks.flip_labels(task, binary, flip), binary)
    # Mirroring twice gives the labels back.
    twice = tasks.flip_labels("pose", tasks.flip_labels("pose", labels, flip), flip)
    np.testing.assert_array_equal(twice, labels)
