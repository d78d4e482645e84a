"""TCDCN in JAX/Flax: facial landmarks learned jointly with auxiliary tasks."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import tcdcn_jax` stays light (no jax import) until Predictor is used.
    if name == "Predictor":
        from tcdcn_jax.photos.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'tcdcn_jax' has no attribute {name!r}")
