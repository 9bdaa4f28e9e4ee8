"""ppar: privacy-preserving video anonymization by attention-driven tubelet pruning."""
__version__ = "0.2.0"

from .pipeline import FileResult, Options, anonymize  # noqa: E402

__all__ = ["anonymize", "Options", "FileResult", "__version__"]
