"""A model from a config, a model from params, and the check that params fit a model."""

import types

import numpy as np
import pytest

from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.model import build
from tcdcn_jax.model import networks
from tests.support import random_params


def test_aux_task_names_reads_strings_and_sequences():
    for given, names in ((" pose, smile ,", ("pose", "smile")), ("", ()),
                         (["gender"], ("gender",))):
        assert build.aux_task_names(types.SimpleNamespace(aux_tasks=given)) == names


def test_from_config_follows_the_config():
    config = get_config()
    config.update(trunk="report", activation="relu", features=0, aux_tasks="glasses",
                  learn_task_weights=True)
    model = build.from_config(config, 68)
    assert (model.trunk, model.activation, model.features, model.num_landmarks) == (
        "report", "relu", None, 68)
    assert dict(model.aux_tasks) == {"glasses": 2} and model.learn_task_weights
    config.features = 64
    assert build.from_config(config, 5).features == 64


def test_from_params_reads_the_heads_off_the_params():
    config = get_config()  # eccv, abs_tanh, all four tasks: the params say otherwise
    made = networks.make_model(68, {"pose": 5, "beard": 3}, "eccv", "abs_tanh")
    model = build.from_params(config, random_params(made))
    assert model.num_landmarks == 68 and dict(model.aux_tasks) == {"pose": 5, "beard": 3}
    with pytest.raises(ValueError, match="checkpoint in 'w' has no landmark head"):
        build.from_params(config, {"trunk": {}, "heads": {"pose": {}}}, "in 'w'")


def test_check_params_names_the_first_param_that_does_not_fit():
    model = networks.make_model(5, ("pose",), "eccv", "abs_tanh")
    params = random_params(model)
    build.check_params(model, params)
    wide = {**params, "heads": {**params["heads"],
                                "pose": {"kernel": np.zeros((100, 3), np.float32),
                                         "bias": np.zeros(3, np.float32)}}}
    with pytest.raises(ValueError, match=r"checkpoint does not fit a eccv TCDCN: param "
                                         r"\['heads'\]\['pose'\]\['bias'\] has shape \(3,\), the "
                                         r"model needs \(5,\)"):
        build.check_params(model, wide)
    missing = {"trunk": params["trunk"], "heads": {"landmarks": params["heads"]["landmarks"]}}
    with pytest.raises(ValueError, match=r"in 'x' does not fit .* has shape None, the model needs"):
        build.check_params(model, missing, "in 'x'")
