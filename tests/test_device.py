"""Device resolution shared by the tools, the Qwen reasoner and the CLIP embedders (tools.device)."""

from __future__ import annotations

import pytest
import torch

import tools.device as device
from agent.core.errors import ConfigError


@pytest.mark.parametrize(("cuda", "asked", "expected"), [
    (True, "auto", "cuda"), (False, "auto", "cpu"), (False, None, "cpu"), (True, "cuda:1", "cuda:1"),
    (True, "cpu", "cpu"),
])
def test_resolve_device(monkeypatch, cuda: bool, asked: str | None, expected: str) -> None:
    monkeypatch.setattr(device, "cuda_available", lambda: cuda)
    assert device.resolve_device(asked) == expected


def test_cuda_without_a_gpu_is_a_config_error_that_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda:0' asks for CUDA.*use 'cpu' or 'auto'"):
        device.resolve_device("cuda:0")


def test_half_dtype() -> None:
    assert device.half_dtype("cuda:1") == torch.float16 and device.half_dtype("cpu") == torch.float32
