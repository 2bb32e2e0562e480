"""Shared fixtures: tiny random-weight checkpoints built once per session through the real code path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's temporary files (``tempfile``, and the ``vqa`` processes it starts) go into a folder of its
    own under pytest's base temp (beside ``tmp_path``, which stays as the test made it), never into ``/tmp``."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return tmp


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """``vqa dev make-tiny`` output: ``tiny_dir / "vlm-qwen2.5-vl"`` etc. (random weights, useless for answers)."""
    from agent.dev.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    make_tiny(out)
    return out
