"""Device resolution, shared by every model the project loads (tools, the Qwen reasoner, CLIP embedders)."""

from __future__ import annotations

from typing import Any

from agent.core.errors import ConfigError


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str | None = "auto") -> str:
    """The torch device to use: ``"auto"`` (or ``None``) is ``"cuda"`` when torch sees a GPU, else ``"cpu"``;
    anything else is kept, and a CUDA device without a GPU is a ``ConfigError``."""
    cuda = cuda_available()
    dev = ("cuda" if cuda else "cpu") if device in (None, "auto") else str(device)
    if dev.startswith("cuda") and not cuda:
        raise ConfigError(f"device {device!r} asks for CUDA, but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return dev


def half_dtype(device: str) -> Any:
    """The dtype vision tools run in on ``device``: fp16 on CUDA, fp32 on CPU."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32
