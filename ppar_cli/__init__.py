"""ppar: privacy-preserving video anonymization by attention-driven tubelet pruning."""
__version__ = "0.3.29"

__all__ = ["anonymize", "anonymize_frames", "Options", "FileResult", "__version__"]


def __getattr__(name: str):
    # The Python API, imported on first use: `import ppar_cli.cli` must not load PyTorch before the
    # CLI has set up the process (see cli.py).
    if name in ("anonymize", "anonymize_frames", "Options", "FileResult"):
        from .pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'ppar_cli' has no attribute {name!r}")
