"""Settings: defaults < TOML config file < flags; every mistake is a ConfigError that says what is wrong."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.core.errors import ConfigError


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\nbatch_size = 4\ndetector = "/m/gd"\n[ocr]\nengine = "tesseract"\n')
    s = load_settings(cfg, {"batch_size": 16, "model": None})
    assert (s.reasoner, s.batch_size, s.tool_tables) == ("evidence", 16, {"ocr": {"engine": "tesseract"}})
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


def test_precedence_is_flags_then_file_then_environment_then_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VQA_MODEL", "env-model")
    monkeypatch.setenv("VQA_BATCH_SIZE", "5")
    monkeypatch.setenv("VQA_DEVICE", "cpu")
    monkeypatch.setenv("VQA_DATA_DIR", str(tmp_path))  # another VQA_ variable (vqa chat's), not a setting: ignored
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('model = "file-model"\nbatch_size = 6\nmax-pixels = 1000\ntool-timeout = 9.5\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic-settings sees its own TOML source: no "toml_file ignored" warning
        s = load_settings(cfg, {"model": "flag-model"})
    assert s.model == "flag-model"  # flag > file > environment
    assert s.batch_size == 6  # file > environment
    assert s.device == "cpu"  # environment > default
    assert (s.max_pixels, s.tool_timeout) == (1000, 9.5)  # the flag spelling (hyphens) in the file
    assert s.dtype == "auto" and s.quant == "none"  # defaults
    assert load_settings(None, {}).model == "env-model"


def test_both_spellings_of_one_key_in_the_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text("max-pixels = 1000\nmax_pixels = 2000\n")
    with pytest.raises(ConfigError, match="max_pixels twice.*max-pixels and max_pixels"):
        load_settings(cfg, {})


def test_an_unknown_key_is_named_with_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text("max-pixel = 1000\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    msg = str(info.value)
    assert "\n" not in msg and "'max_pixel'" in msg and str(cfg) in msg
    assert "expected one of" in msg and "max_pixels" in msg and "ocr_engine" in msg


def test_tool_tables_and_plug_in_registrations_pass_through(tmp_path: Path) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('ocr-engine = "easyocr"\n[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n'
                   '[tools.register]\nmean_color = "mean_color:MeanColorTool"\n')
    s = load_settings(cfg, {})
    assert s.tools.classes == {"mean_color": "mean_color:MeanColorTool"} and s.tools.settings == {}
    assert s.tool_settings() == {"ocr": {"engine": "easyocr", "tesseract_boxes": "tesseract"}}  # the short key wins
    cfg.write_text("[tools]\nplugins = 1\n")
    with pytest.raises(ConfigError, match="'tools.plugins'.*tools.register"):
        load_settings(cfg, {})


def test_a_tool_table_from_the_environment_sits_under_the_config_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VQA_OCR", '{"engine": "tesseract", "min_confidence": 0.2}')
    assert load_settings(None, {}).tool_settings()["ocr"] == {"engine": "tesseract", "min_confidence": 0.2}
    config = tmp_path / "vqa.toml"
    config.write_text('[ocr]\nengine = "easyocr"\n', encoding="utf-8")
    assert load_settings(config, {}).tool_settings()["ocr"] == {"engine": "easyocr"}  # the file's table wins
