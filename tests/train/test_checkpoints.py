"""A workdir's weights in and out: a weights-only workdir, a checkpoint without digest, the config
saved with a checkpoint, loading errors, and load_pretrained's merge (dont_load and its errors).
Train-state save/resume is tested where it runs: tests/train/test_loop.py and test_restart.py;
damaged checkpoints in tests/train/test_checkpoint_faults.py."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.model import networks
from tcdcn_jax.train import checkpoints
from tests.support import random_params

TASKS = ("pose", "gender")


def _model(trunk="eccv", tasks=TASKS, k=5):
    return networks.make_model(k, tasks, trunk, "relu" if trunk == "report" else "abs_tanh")


def _config(trunk="eccv"):
    config = get_config()
    config.trunk, config.activation = trunk, "relu" if trunk == "report" else "abs_tanh"
    return config


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], dict):
            _assert_same(a[key], b[key])
        else:
            np.testing.assert_array_equal(a[key], b[key])


def test_write_weights_then_load_model_rebuilds_the_model(tmp_path):
    params = random_params(_model("report", ("smile",), 68), seed=1)
    path = checkpoints.write_weights(str(tmp_path / "w"), params, _config("report"), step=7)
    assert path == str(tmp_path / "w")
    model, loaded, config = checkpoints.load_model(path)
    assert (model.trunk, model.num_landmarks, dict(model.aux_tasks)) == ("report", 68, {"smile": 2})
    assert config.trunk == "report" and checkpoints.load_params(path)[0] == 7
    _assert_same(params, loaded)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        checkpoints.write_weights(path, params, _config("report"))


def test_a_checkpoint_without_digest_is_refused_and_one_sealed_in_any_layout_loads(tmp_path,
                                                                                    caplog):
    """{step, params, rng} written by orbax alone: no digest, so nothing vouches for its bytes."""
    params = random_params(_model(), seed=2)
    mngr = checkpoints.manager(str(tmp_path))
    mngr.save(3, args=ocp.args.StandardSave({"step": np.asarray(3, np.int32), "params": params,
                                             "rng": np.zeros(2, np.uint32)}))
    mngr.wait_until_finished()
    (tmp_path / "config.json").write_text(_config().to_json())
    with pytest.raises(ValueError, match=r"no checkpoint under .* verifies \(the newest, "
                                         r".*checkpoints/3: no digest.json"):
        checkpoints.load_model(str(tmp_path))
    assert "checkpoints/3 is bad (no digest.json" in caplog.text
    assert (tmp_path / "checkpoints" / "3").is_dir(), "a reader never moves a checkpoint"
    checkpoints.seal(str(tmp_path / "checkpoints" / "3"), None)
    model, loaded, _ = checkpoints.load_model(str(tmp_path))  # the config: workdir/config.json
    assert dict(model.aux_tasks) == {"pose": 5, "gender": 2}
    _assert_same(params, loaded)


def test_load_model_takes_the_config_saved_with_the_checkpoint(tmp_path):
    checkpoints.write_weights(str(tmp_path), random_params(_model()), _config())
    (tmp_path / "config.json").unlink()
    model, _, config = checkpoints.load_model(str(tmp_path))
    assert model.trunk == config.trunk == "eccv"
    assert checkpoints.checkpoint_config(str(tmp_path)).to_dict() == config.to_dict()


def test_learned_task_weights_come_back_as_such(tmp_path):
    model = networks.make_model(5, TASKS, "eccv", "abs_tanh", learn_task_weights=True)
    checkpoints.write_weights(str(tmp_path), random_params(model), _config())
    loaded, _, _ = checkpoints.load_model(str(tmp_path))
    assert loaded.learn_task_weights and dict(loaded.aux_tasks) == {"pose": 5, "gender": 2}


def test_loading_errors_name_the_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint under .*: is .* a "
                                                r"tcdcn_jax workdir\?"):
        checkpoints.load_model(str(tmp_path))
    # A checkpoint saved without a config, and no config.json beside it.
    mngr = checkpoints.manager(str(tmp_path))
    mngr.save(0, args=ocp.args.StandardSave({"params": random_params(_model())}))
    mngr.wait_until_finished()
    checkpoints.seal(str(tmp_path / "checkpoints" / "0"), None)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        checkpoints.load_model(str(tmp_path))
    # eccv params under a config that says report: the model the config describes cannot take them.
    other = tmp_path / "other"
    checkpoints.write_weights(str(other), random_params(_model()), _config("report"))
    with pytest.raises(ValueError, match=r"checkpoint in '.*other' does not fit a report TCDCN"):
        checkpoints.load_model(str(other))


def _tree(scale):
    return {"trunk": {"fc": {"kernel": np.full((3, 2), scale, np.float32)}},
            "heads": {"landmarks": {"kernel": np.full((2, 4), scale, np.float32)},
                      "pose": {"kernel": np.full((2, 5), scale, np.float32)}}}


def test_load_pretrained_copies_all_but_dont_load():
    own, other = _tree(0.0), _tree(1.0)
    merged = checkpoints.load_pretrained(own, other)
    assert all(np.all(np.asarray(leaf) == 1) for leaf in _leaves(merged))
    merged = checkpoints.load_pretrained(own, other, dont_load=("heads",))
    np.testing.assert_array_equal(merged["trunk"]["fc"]["kernel"], 1)
    assert merged["heads"] is own["heads"]
    merged = checkpoints.load_pretrained(own, other, dont_load=("heads/landmarks",))
    np.testing.assert_array_equal(merged["heads"]["landmarks"]["kernel"], 0)
    np.testing.assert_array_equal(merged["heads"]["pose"]["kernel"], 1)
    assert merged["trunk"]["fc"]["kernel"].dtype == np.float32
    # A subtree the pretrained params lack loads nothing when dont_load names it.
    del other["heads"]["pose"]
    merged = checkpoints.load_pretrained(own, other, dont_load=("heads/pose",))
    np.testing.assert_array_equal(merged["heads"]["pose"]["kernel"], 0)


def test_load_pretrained_errors():
    own = _tree(0.0)
    lacking = _tree(1.0)
    del lacking["heads"]["pose"]
    with pytest.raises(ValueError, match=r"pretrained params lack \['heads/pose'\]"):
        checkpoints.load_pretrained(own, lacking)
    wrong = _tree(1.0)
    wrong["heads"]["landmarks"]["kernel"] = np.zeros((2, 136), np.float32)
    with pytest.raises(ValueError, match=r"shape mismatch at heads/landmarks/kernel: model \(2, 4\), "
                                         r"pretrained \(2, 136\)"):
        checkpoints.load_pretrained(own, wrong)
    flat = _tree(1.0)
    flat["trunk"]["fc"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="a leaf at trunk/fc, the model a subtree"):
        checkpoints.load_pretrained(own, flat)
    with pytest.raises(ValueError, match=r"dont_load names \['head'\]"):
        checkpoints.load_pretrained(own, _tree(1.0), dont_load=("head",))
    # A name below a skipped subtree is not unknown: it is skipped with it.
    checkpoints.load_pretrained(own, _tree(1.0), dont_load=("heads", "heads/pose"))


def _leaves(tree):
    for value in tree.values():
        yield from (_leaves(value) if isinstance(value, dict) else (value,))
