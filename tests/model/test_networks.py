"""Tests for tcdcn_jax.models: layer shapes of both trunks, heads, locally connected filters, errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from tcdcn_jax import tasks
from tcdcn_jax.model import networks


ALL_AUX = ("pose", "gender", "glasses", "smile")


def _make(trunk, num_landmarks=5, aux=ALL_AUX, activation="abs_tanh", learn_task_weights=False):
    """`aux` is a tuple of task names or of (name, classes) pairs (hashable, for the caches)."""
    aux_tasks = dict(aux) if aux and isinstance(aux[0], tuple) else aux
    return networks.make_model(num_landmarks, aux_tasks, trunk, activation,
                             learn_task_weights=learn_task_weights)


@functools.lru_cache(maxsize=None)
def _init(trunk):
    """Real parameters, once per trunk (5 landmarks, all four tasks): the slow part of this file."""
    model = _make(trunk)
    size = networks.input_size(trunk)
    # The rbg PRNG compiles ~5x faster on CPU than threefry for these large kernels.
    key = jax.random.key(0, impl="rbg")
    variables = jax.jit(model.init)(key, jnp.zeros((1, size, size, 1), jnp.float32))
    return model, variables


@functools.lru_cache(maxsize=None)
def _apply_fn(trunk, activation="abs_tanh"):
    """One compiled forward per trunk: (outputs, intermediates) with x^l and every conv output."""
    model = _make(trunk, activation=activation)
    return jax.jit(functools.partial(model.apply, capture_intermediates=True))


def _features(trunk, variables, img, activation="abs_tanh"):
    _, state = _apply_fn(trunk, activation)(variables, img)
    return state["intermediates"]["trunk"]["__call__"][0]


def _abstract_init(model, trunk, batch=1):
    """Parameter shapes without computing anything (jax.eval_shape)."""
    size = networks.input_size(trunk)
    img = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), img), img


def _images(trunk, batch=2, seed=1):
    size = networks.input_size(trunk)
    return jax.random.normal(jax.random.key(seed), (batch, size, size, 1), jnp.float32)


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_input_sizes():
    assert networks.input_size("eccv") == 40
    assert networks.input_size("report") == 60


def test_eccv_trunk_param_shapes_are_locally_connected():
    variables, _ = _abstract_init(_make("eccv"), "eccv")
    trunk = _shapes(variables["params"]["trunk"])
    # Locally connected: one (k*k*in, out) filter bank per output position.
    assert trunk["conv1"] == {"kernel": (36, 36, 5 * 5 * 1, 20), "bias": (36, 36, 20)}
    assert trunk["conv2"] == {"kernel": (16, 16, 3 * 3 * 20, 48), "bias": (16, 16, 48)}
    assert trunk["conv3"] == {"kernel": (6, 6, 3 * 3 * 48, 64), "bias": (6, 6, 64)}
    assert trunk["conv4"] == {"kernel": (2, 2, 2 * 2 * 64, 80), "bias": (2, 2, 80)}
    assert trunk["fc"] == {"kernel": (2 * 2 * 80, 100), "bias": (100,)}


def test_eccv_feature_map_shapes():
    """40 -> conv 36x36x20 -> pool 18 -> 16x16x48 -> pool 8 -> 6x6x64 -> pool 3 -> 2x2x80 -> fc 100."""
    model = _make("eccv")
    variables, _ = _abstract_init(model, "eccv")
    img = jax.ShapeDtypeStruct((2, 40, 40, 1), jnp.float32)
    _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=True),
                              variables, img)
    inter = state["intermediates"]["trunk"]
    assert inter["conv1"]["__call__"][0].shape == (2, 36, 36, 20)
    assert inter["conv2"]["__call__"][0].shape == (2, 16, 16, 48)
    assert inter["conv3"]["__call__"][0].shape == (2, 6, 6, 64)
    assert inter["conv4"]["__call__"][0].shape == (2, 2, 2, 80)
    assert inter["fc"]["__call__"][0].shape == (2, 100)
    assert inter["__call__"][0].shape == (2, 100)
    # The pooling between them: 36 -> 18, 16 -> 8, 6 -> 3.
    pooled = [jax.eval_shape(networks._max_pool, inter[f"conv{i}"]["__call__"][0]).shape
              for i in (1, 2, 3)]
    assert pooled == [(2, 18, 18, 20), (2, 8, 8, 48), (2, 3, 3, 64)]


def test_report_trunk_matches_the_authors_weights():
    model = _make("report", num_landmarks=68, aux=())
    variables, _ = _abstract_init(model, "report")
    trunk = _shapes(variables["params"]["trunk"])
    assert trunk["conv1"] == {"kernel": (5, 5, 1, 20), "bias": (20,)}
    assert trunk["conv2"] == {"kernel": (5, 5, 20, 48), "bias": (48,)}
    assert trunk["conv3"] == {"kernel": (3, 3, 48, 64), "bias": (64,)}
    assert trunk["conv4"] == {"kernel": (3, 3, 64, 80), "bias": (80,)}
    assert trunk["fc"] == {"kernel": (720, 512), "bias": (512,)}
    assert _shapes(variables["params"]["heads"]) == {
        "landmarks": {"kernel": (512, 136), "bias": (136,)}}
    img = jax.ShapeDtypeStruct((2, 60, 60, 1), jnp.float32)
    _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=True),
                              variables, img)
    inter = state["intermediates"]["trunk"]
    # 60 -> 56 -> pool 28 -> 24 -> pool 12 -> 10 -> pool 5 -> 3 (x 80 = 720 after flattening);
    # conv1 runs fused with its pool (conv_pool.ConvPool), so its output is the pooled 28 x 28 map.
    assert [inter[f"conv{i}"]["__call__"][0].shape[1:] for i in (1, 2, 3, 4)] == [
        (28, 28, 20), (24, 24, 48), (10, 10, 64), (3, 3, 80)]


@pytest.mark.parametrize("trunk", ["eccv", "report"])
@pytest.mark.parametrize("num_landmarks", [5, 68])
@pytest.mark.parametrize("aux", [(), ("pose",), ALL_AUX, (("age", 7),)])
def test_output_keys_and_shapes(trunk, num_landmarks, aux):
    model = _make(trunk, num_landmarks, aux)
    variables, _ = _abstract_init(model, trunk)
    size = networks.input_size(trunk)
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((3, size, size, 1),
                                                                      jnp.float32))
    classes = (dict(aux) if aux and isinstance(aux[0], tuple)
               else {t: tasks.NUM_CLASSES[t] for t in aux})
    assert set(out) == {"landmarks", *classes}
    assert out["landmarks"].shape == (3, num_landmarks, 2)
    for task, c in classes.items():
        assert out[task].shape == (3, c), task
    heads = variables["params"]["heads"]
    assert set(heads) == {"landmarks", *classes}
    assert heads["landmarks"]["kernel"].shape[-1] == 2 * num_landmarks


def test_real_outputs_have_the_declared_shapes():
    """The same check on concrete arrays, once per trunk."""
    for trunk in ("eccv", "report"):
        _, variables = _init(trunk)
        out, _ = _apply_fn(trunk)(variables, _images(trunk, batch=3))
        assert {k: v.shape for k, v in out.items()} == {
            "landmarks": (3, 5, 2), "pose": (3, 5), "gender": (3, 2), "glasses": (3, 2),
            "smile": (3, 2)}
        chex.assert_tree_all_finite(out)


def test_eccv_filters_differ_between_positions_after_init():
    _, variables = _init("eccv")
    for name in ("conv1", "conv2", "conv3", "conv4"):
        kernel = np.asarray(variables["params"]["trunk"][name]["kernel"])
        assert not np.allclose(kernel[0, 0], kernel[1, 1]), name
        assert not np.allclose(kernel[0, 0], kernel[-1, -1]), name


def test_eccv_output_at_a_position_depends_on_its_own_filter_only():
    """Changing conv1's filter at output position (i, j) changes conv1's output there and nowhere else."""
    _, variables = _init("eccv")
    apply = _apply_fn("eccv")
    img = _images("eccv", batch=3)  # the batch size the other tests compiled for

    def conv1_out(params):
        _, state = apply({"params": params}, img)
        return np.asarray(state["intermediates"]["trunk"]["conv1"]["__call__"][0][0])

    params = variables["params"]
    before = conv1_out(params)
    i, j = 7, 21
    new_kernel = params["trunk"]["conv1"]["kernel"].at[i, j].add(0.5)
    changed = {"heads": params["heads"],
               "trunk": dict(params["trunk"], conv1=dict(params["trunk"]["conv1"],
                                                         kernel=new_kernel))}
    after = conv1_out(changed)
    diff_HxW = np.abs(after - before).max(axis=-1)
    assert diff_HxW[i, j] > 1e-3
    diff_HxW[i, j] = 0.0
    np.testing.assert_array_equal(diff_HxW, 0.0)


@pytest.mark.parametrize("trunk,bad_shape", [
    ("eccv", (2, 60, 60, 1)), ("eccv", (2, 40, 40, 3)), ("eccv", (40, 40, 1)),
    ("report", (2, 40, 40, 1)), ("report", (2, 60, 59, 1))])
def test_wrong_input_size_raises(trunk, bad_shape):
    model = _make(trunk)
    variables, _ = _abstract_init(model, trunk)
    size = networks.input_size(trunk)
    bad = jax.ShapeDtypeStruct(bad_shape, jnp.float32)
    with pytest.raises(ValueError, match=rf"\(B, {size}, {size}, 1\)"):
        jax.eval_shape(model.apply, variables, bad)
    with pytest.raises(ValueError, match=rf"{trunk} trunk expects"):
        jax.eval_shape(model.init, jax.random.key(0), bad)


def test_unknown_trunk_activation_or_task_raise():
    with pytest.raises(ValueError, match="unknown trunk"):
        networks.make_model(5, ["pose"], "alexnet", "abs_tanh")
    with pytest.raises(ValueError, match="unknown trunk"):
        networks.input_size("resnet")
    with pytest.raises(ValueError, match="unknown activation"):
        networks.make_model(5, ["pose"], "eccv", "sigmoid")
    with pytest.raises(ValueError, match="unknown auxiliary tasks"):
        networks.make_model(5, ["pose", "age"], "eccv", "abs_tanh")
    with pytest.raises(ValueError, match="num_landmarks"):
        networks.make_model(0, ["pose"], "eccv", "abs_tanh")


@pytest.mark.parametrize("trunk", ["eccv", "report"])
def test_abs_tanh_features_are_non_negative(trunk):
    _, variables = _init(trunk)
    feat = _features(trunk, variables, _images(trunk, batch=3))
    width = networks.TRUNK_SPECS[trunk]["features"]
    assert feat.shape == (3, width)
    model = _make(trunk)
    variables_shape, img_shape = _abstract_init(model, trunk, batch=3)
    assert jax.eval_shape(functools.partial(model.apply, method=networks.TCDCN.features_of),
                          variables_shape, img_shape).shape == (3, width)
    assert float(feat.min()) >= 0.0
    assert float(feat.max()) > 0.0
    assert float(feat.max()) <= 1.0


def test_tanh_features_take_both_signs():
    """The contrast for the test above: without abs, features go negative (activations own no params)."""
    _, variables = _init("report")
    feat = _features("report", variables, _images("report", batch=3), activation="tanh")
    assert float(feat.min()) < 0.0


def test_learn_task_weights_adds_log_lambda():
    aux = ("pose", "gender", "smile")
    variables, _ = _abstract_init(_make("report", aux=aux, learn_task_weights=True), "report")
    assert variables["params"]["heads"]["log_lambda"].shape == (3,)
    # Its value, from the heads alone (cheap): zero, i.e. lambda = 1 at the start.
    heads = networks.Heads(5, {t: tasks.NUM_CLASSES[t] for t in aux}, learn_task_weights=True)
    log_lambda = heads.init(jax.random.key(0), jnp.ones((1, 8)))["params"]["log_lambda"]
    np.testing.assert_array_equal(log_lambda, np.zeros(3, np.float32))
    plain, _ = _abstract_init(_make("report", aux=aux), "report")
    assert "log_lambda" not in plain["params"]["heads"]
    no_aux, _ = _abstract_init(_make("report", aux=(), learn_task_weights=True), "report")
    assert "log_lambda" not in no_aux["params"]["heads"]


class ForwardVariantsTest(chex.TestCase):
    """The forward pass gives the same outputs with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_eccv(self):
        self._check("eccv")

    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_report(self):
        self._check("report")

    def _check(self, trunk):
        model, variables = _init(trunk)
        img = _images(trunk, batch=3, seed=3)
        reference, _ = _apply_fn(trunk)(variables, img)
        out = self.variant(model.apply)(variables, img)
        chex.assert_trees_all_close(out, reference, rtol=1e-5, atol=1e-5)
        chex.assert_tree_all_finite(out)
        # Different faces give different predictions (the output is not a constant).
        self.assertFalse(np.allclose(out["landmarks"][0], out["landmarks"][1]))


if __name__ == "__main__":
    absltest.main()


def test_forward_flops_counts_each_layers_multiply_adds():
    # Report trunk, 68 points: conv1 56*56*25*20 + conv2 24*24*500*48 + conv3 10*10*432*64
    # + conv4 3*3*576*80 + fc 720*512 + head 512*136 multiply-adds: the 38.0 MFLOPs a face.
    report = networks.make_model(68, [], "report", "relu")
    assert networks.forward_flops(report) == 2 * 19_009_792
    from experiments.benchmark_inference import MFLOPS_PER_FACE
    assert round(networks.forward_flops(report) / 1e6, 1) == MFLOPS_PER_FACE
    # ECCV trunk with the four auxiliary heads (5 + 2 + 2 + 2 classes): locally connected layers cost
    # the same multiply-adds as shared ones of the same shape.
    eccv = networks.make_model(5, ["pose", "gender", "glasses", "smile"], "eccv", "abs_tanh")
    assert networks.forward_flops(eccv) == 2 * (36 * 36 * 25 * 20 + 16 * 16 * 180 * 48 + 6 * 6 * 432 * 64
                                       + 2 * 2 * 256 * 80 + 320 * 100 + 100 * 21)


def test_shared_convolutions_and_defaults_have_one_source():
    assert [networks.shares_convolutions(t) for t in ("eccv", "report")] == [False, True]
    with pytest.raises(ValueError, match="unknown trunk 'vgg'"):
        networks.shares_convolutions("vgg")
    trunk, model = networks.Trunk(), networks.TCDCN()
    assert (trunk.kind, trunk.activation) == (model.trunk, model.activation) == ("eccv", "abs_tanh")
