"""TCDCN in JAX/Flax: facial landmarks learned jointly with auxiliary tasks."""

__version__ = "0.1.0"
