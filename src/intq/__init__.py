"""intq: quantize convolutional networks for efficient integer-only inference."""

__version__ = "0.1.0"

__all__ = ["__version__"]
