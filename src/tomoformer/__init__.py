"""TomoFormer: building maps from sequences of radio signal-strength maps."""

from tomoformer.errors import DataError, TomoFormerError

__version__ = "0.1.0"
__all__ = ["DataError", "TomoFormerError", "__version__"]
