"""Shared fixtures: tiny random-weight checkpoints built once per session through the real code path."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """``vqa dev make-tiny`` output: ``tiny_dir / "vlm-qwen2.5-vl"`` etc. (random weights, useless for answers)."""
    from agent.dev.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    make_tiny(out)
    return out
