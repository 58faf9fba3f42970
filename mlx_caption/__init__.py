"""mlx-caption: pure-MLX image captioning.

Importing this package first loads an optimized BLAS on Linux CPUs (see
:mod:`mlx_caption.backend`), which has to happen before ``mlx.core`` is imported.
"""

from mlx_caption import backend as _backend

_backend.setup()

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "mlx_caption.loading",
    "list_models": "mlx_caption.loading",
    "load_captioner": "mlx_caption.loading",
    "caption": "mlx_caption.generate",
}


def __getattr__(name: str):
    # Public API resolved lazily so `import mlx_caption` stays cheap (the CLI imports it first).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlx_caption' has no attribute {name!r}")


__all__ = ["load_encoder", "load_captioner", "caption", "list_models", "__version__"]
