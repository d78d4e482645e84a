"""The figures: each writes a readable PNG; wrong tags are boxed in red; bad input fails clearly."""

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax.eval import plots


def _png(path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB"), np.int32)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 5, "the figure is blank"
    return img


def _red_pixels(img: np.ndarray) -> int:
    return int(np.sum((img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)))


def test_ced_bars_curves_heatmap_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    nme = {"a": rng.uniform(0, 0.2, 50), "b": rng.uniform(0, 0.3, 50)}
    _png(plots.save_ced(nme, tmp_path / "ced.png"))
    _png(plots.save_per_landmark_bars({"a": [0.1, 0.2, 0.1, 0.3, 0.2], "b": [0.1] * 5},
                                      tmp_path / "bars.png", ["le", "re", "n", "lm", "rm"],
                                      errors={"a": [0.01] * 5},
                                      failure={"a": (0.2, 0.05), "b": (0.1, 0.0)}))
    _png(plots.save_per_landmark_bars({"a": rng.uniform(0, 1, 68)}, tmp_path / "bars68.png"))
    _png(plots.save_per_pose_bars({"a": [0.3, 0.2, None, 0.2, 0.3]}, tmp_path / "pose.png",
                                  errors={"a": [0.01, None, None, 0.0, 0.02]}))
    records = [{"step": s, "train_loss": {"landmarks": 1.0 / s}, "val_loss": {"landmarks": 2.0 / s}}
               for s in (10, 20, 30, 40)]
    _png(plots.save_training_curves({"es": records, "no es": records[:3]}, tmp_path / "curves.png",
                                    stopped_at={"es": {"pose": 30, "smile": None}}))
    _png(plots.save_heatmap(rng.uniform(-1, 1, (4, 3)), list("abcd"), list("xyz"),
                            tmp_path / "heat.png"))


def test_heatmap_and_sheet_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        plots.save_heatmap(np.zeros((2, 2)), ["a"], ["x", "y"], tmp_path / "h.png")
    with pytest.raises(ValueError, match="no faces"):
        plots.save_face_sheet(np.zeros((0, 8, 8)), np.zeros((0, 4)), np.zeros((0, 5, 2)),
                              tmp_path / "s.png")


def test_tag_text_follows_the_papers_tags():
    assert [plots.tag_text("pose", c) for c in range(5)] == ["-60°", "-30°", "0°", "+30°", "+60°"]
    assert (plots.tag_text("smile", 1), plots.tag_text("smile", 0)) == ("S", "NS")
    assert (plots.tag_text("glasses", 1), plots.tag_text("gender", 1),
            plots.tag_text("gender", 0)) == ("G", "M", "F")


def test_face_sheet_boxes_wrong_tags_in_red(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (2, 48, 48)).astype(np.uint8)
    box = np.array([[8, 8, 32, 32]] * 2, np.float64)
    true = box[:, None, :2] + rng.uniform(0.2, 0.8, (2, 5, 2)) * 32
    pred_tags = {"pose": np.array([2, 0]), "smile": np.array([1, 0]),
                 "glasses": np.array([0, 0]), "gender": np.array([1, 1])}
    # Predicted landmarks off the picture so that the only red is the tag boxes.
    far = np.full((2, 5, 2), -1e3)
    right = plots.save_face_sheet(image, box, far, tmp_path / "right.png", true_NxKx2=true,
                                  pred_tags=pred_tags, true_tags=pred_tags)
    wrong_tags = dict(pred_tags, smile=np.array([0, 0]), pose=np.array([2, 4]))
    wrong = plots.save_face_sheet(image, box, far, tmp_path / "wrong.png", true_NxKx2=true,
                                  pred_tags=pred_tags, true_tags=wrong_tags)
    assert _red_pixels(_png(right)) == 0
    assert _red_pixels(_png(wrong)) > 40
