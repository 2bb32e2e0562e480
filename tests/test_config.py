"""Settings: defaults < TOML config file < flags; every mistake is a ConfigError that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_settings
from agent.errors import ConfigError


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\nbatch_size = 4\ndetector = "/m/gd"\n[ocr]\nengine = "tesseract"\n')
    s = load_settings(cfg, {"batch_size": 16, "model": None})
    assert (s.reasoner, s.batch_size, s.ocr) == ("evidence", 16, {"engine": "tesseract"})
    assert s.tool_settings() == {"ocr": {"engine": "tesseract"}, "detect": {"model": "/m/gd"}}


@pytest.mark.parametrize(("text", "needle"), [
    ("reasoner = 'gpt'", "reasoner"),
    ("batch_sise = 4", "batch_sise"),       # a typo is refused, not ignored
    ("quant = '3bit'", "quant"),
    ("reasoner = ", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(cfg, {})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {})
