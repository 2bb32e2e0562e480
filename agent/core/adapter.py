"""The adapter manifest as inference reads it: the check ``--adapter`` runs before applying an adapter.

``ADAPTER_DIR/vqa_adapter.json`` (written by ``vqa train``: ``agent.train.manifest``) records the base model (its
name and a fingerprint of its files), the prompt templates and their versions the training rendered, the tools,
and the training settings. Applying an adapter (``QwenBackend`` with ``adapter=``) refuses, with one line, an
adapter whose base fingerprint or prompt versions differ from the model and templates in use. An adapter folder
without a manifest (made by another tool) is applied unchecked.

Fingerprint: sha256 over the checkpoint's ``config.json`` and, per weight file (``*.safetensors``, else
``*.bin``), its name, size and 16 evenly spaced 64 KiB samples of its bytes: cheap (about 1 MiB read per file),
independent of where the folder lives, and different for a fine-tuned copy of the same architecture. No torch
import here; inference (``agent.reasoners.qwen``) and training both read it, and it imports neither.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from agent.core.errors import ModelLoadError

MANIFEST = "vqa_adapter.json"
FORMAT = 1
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16


def checkpoint_dir(model: str) -> Path | None:
    """The folder holding a checkpoint's files: the path itself, or a hub id's snapshot in the local cache."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    try:
        hit = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _sampled(path: Path) -> bytes:
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}|{size}|".encode())
    with open(path, "rb") as f:
        if size <= _SAMPLES * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - _SAMPLE_BYTES) // (_SAMPLES - 1)
            for i in range(_SAMPLES):
                f.seek(i * step)
                h.update(f.read(_SAMPLE_BYTES))
    return h.digest()


def base_fingerprint(model: str) -> str | None:
    """``sha256:<16 hex>`` of a checkpoint's config and sampled weight bytes; ``None`` when its files are not here."""
    folder = checkpoint_dir(model)
    if folder is None or not (folder / "config.json").is_file():
        return None
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for w in weights:
        h.update(_sampled(w))
    return "sha256:" + h.hexdigest()[:16]


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest, or ``None`` when the folder has none; an unreadable one is a ``ModelLoadError``."""
    path = Path(folder).expanduser() / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("base_model"), dict):
            raise ValueError("no base_model section")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"adapter manifest {path} is unreadable ({exc}); expected the JSON vqa train "
                             "writes; retrain the adapter or remove the file to apply it unchecked") from None
    if data.get("format", 0) > FORMAT:
        raise ModelLoadError(f"adapter manifest {path} has format {data.get('format')}, this version reads up to "
                             f"{FORMAT}; upgrade vqa-orchestrator")
    return data


def check_adapter(adapter: str | Path, model: str, templates: Mapping[str, str]) -> dict[str, Any] | None:
    """Refuse (``ModelLoadError``, one line) an adapter trained for another base model or prompt version than
    ``model`` and the installed ``templates`` (name -> version, ``prompts.template_versions()``); returns the
    manifest (``None`` when the adapter has none)."""
    manifest = read_manifest(adapter)
    if manifest is None:
        return None
    base = manifest["base_model"]
    want, have = base.get("fingerprint"), base_fingerprint(model)
    if want and have and want != have:
        raise ModelLoadError(f"adapter {str(adapter)!r} was trained on base model {base.get('name')!r} "
                             f"(fingerprint {want}), but the model is {model!r} (fingerprint {have}); pass "
                             f"--model {base.get('name')} or train an adapter for this model with vqa train")
    if want and have is None and base.get("name") != model:
        raise ModelLoadError(f"adapter {str(adapter)!r} was trained on base model {base.get('name')!r}, but the model "
                             f"is {model!r}, whose files cannot be fingerprinted here; pass --model {base.get('name')}")
    for name, version in manifest.get("prompt", {}).get("templates", {}).items():
        current = templates.get(name)
        if current != version:
            now = f"version {current}" if current else "no such template"
            raise ModelLoadError(f"adapter {str(adapter)!r} was trained on prompt template {name} version {version}, "
                                 f"but this installation has {now}; retrain the adapter with vqa train (or use the "
                                 "release it was trained with)")
    return manifest
