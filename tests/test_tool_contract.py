"""A built-in tool is one module plus one registry line: a throwaway built-in in a temporary package is routed,
configurable, costed and listed with no other edit (the router, the config, the planners, the training identity
and the CLI help read its class)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import tools
from agent.config import load_settings
from agent.core.errors import ConfigError
from agent.core.evidence import Evidence
from agent.core.schema import Question
from agent.planners.costs import ToolCosts
from agent.router import Router, rule_reasons
from tools.base import Routing, Tool

ROOT = Path(__file__).resolve().parents[1]
MODULE = '''
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.core.evidence import Evidence
from tools.base import Routing, Tool


class SharpnessEvidence(Evidence):
    tool: Literal["sharpness"] = "sharpness"
    sharp: float


class SharpnessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


class SharpnessTool(Tool):
    name = "sharpness"
    evidence = SharpnessEvidence
    description = "How sharp the photo is."
    limitations = "A throwaway tool for the contract test."
    routing = Routing(keywords=(r"흐릿|\\bblurry\\b",), examples=("Is this photo in focus?",),
                      why="asks whether the photo is sharp")
    Config = SharpnessConfig
    cost = 0.01

    def load(self):
        pass

    def apply(self, image, question, workdir, peers):
        return SharpnessEvidence(sharp=float(self.settings.get("scale", 1.0))), {}
'''


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``sharpness`` as a built-in: its module in a temporary package and its line in ``BUILTIN``, nothing else."""
    pkg = tmp_path / "throwaway_tools"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sharpness.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    builtin = {**tools.BUILTIN, "sharpness": "throwaway_tools.sharpness:SharpnessTool"}
    monkeypatch.setattr(tools, "BUILTIN", builtin)
    monkeypatch.setattr(tools, "REGISTRY", tools.Registry(builtin))
    return str(tmp_path)


def test_a_throwaway_built_in_is_listed_routed_configured_and_costed(throwaway: str, tmp_path: Path) -> None:
    assert tools.tool_names()[-1] == "sharpness" and tools.REGISTRY.is_builtin("sharpness")
    assert tools.parse_tool_list("all")[-1] == "sharpness"

    route = Router(use_embeddings=False).route("사진이 흐릿한가요?")  # routed by its declared keyword and reason
    assert route.tools == ["sharpness"]
    assert route.reasons["sharpness"] == "rule: asks whether the photo is sharp (keyword '흐릿')"
    assert rule_reasons("Is it blurry?") == {"sharpness": "rule: asks whether the photo is sharp (keyword 'blurry')"}
    assert dict(Router(use_embeddings=False).examples)["sharpness"] == "Is this photo in focus?"

    cfg = tmp_path / "vqa.toml"  # configured by its own table, checked by its settings model
    cfg.write_text("[sharpness]\nscale = 2.5\n")
    settings = load_settings(cfg, {})
    assert settings.tool_settings() == {"sharpness": {"scale": 2.5}}
    tool = tools.load_tool("sharpness", **settings.tool_settings()["sharpness"])
    result = tool.run(Image.new("RGB", (8, 8)), Question(id="q", text="흐릿한가요?", options={"a": "예", "b": "아니오"}))
    assert result.ok and result.evidence.sharp == 2.5
    cfg.write_text("[sharpness]\nscael = 2.5\n")
    with pytest.raises(ConfigError, match=r"bad settings for tool 'sharpness': scael: .*its keys: scale"):
        tools.load_tool("sharpness", **load_settings(cfg, {}).tool_settings()["sharpness"])

    costs = ToolCosts()  # costed by its declared prior until the run measures it
    assert costs.estimate("sharpness") == 0.01
    assert costs.cheapest_first(["som", "sharpness", "ocr"]) == ["sharpness", "ocr", "som"]
    assert costs.estimate("not_registered") == 5.0


def test_a_throwaway_built_in_is_in_the_cli_help_and_the_training_identity(throwaway: str) -> None:
    """The CLI help and the training identity are read when the CLI is imported: a fresh process shows them."""
    code = textwrap.dedent('''
        import json, tools
        tools.BUILTIN["sharpness"] = "throwaway_tools.sharpness:SharpnessTool"
        tools.REGISTRY = tools.Registry(tools.BUILTIN)
        from typer.testing import CliRunner
        from agent.cli import app
        from agent.config import Settings
        from agent.train.run import run_config
        from agent.train.options import TrainOptions
        help = CliRunner().invoke(app, ["ask", "--help"], env={"COLUMNS": "300"}).output
        s = Settings(reasoner="evidence", sharpness={"scale": 3}, kb="/some/kb")
        ident = run_config(s, TrainOptions(), None, [], [])["settings"]
        print(json.dumps({"help": "som,detect,ocr,retrieve" in help and "sharpness" in help, "ident": ident}))
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([throwaway, str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["help"]
    assert got["ident"]["tool_tables"] == {"sharpness": {"scale": 3}} and got["ident"]["kb"] == "/some/kb"


def test_the_original_tools_declare_their_wiring() -> None:
    """The four original tools' routing, flags and costs live on their classes (what the router and config read)."""
    classes = {name: tools.REGISTRY.tool_class(name) for name in ("som", "detect", "ocr", "retrieve")}
    assert {n: c.flags for n, c in classes.items()} == {"som": {"segmenter": "model"}, "detect": {"detector": "model"},
                                                        "ocr": {"ocr_engine": "engine"}, "retrieve": {"kb": "kb"}}
    assert ToolCosts().cheapest_first(list(classes)) == ["retrieve", "ocr", "detect", "som"]
    assert classes["ocr"].routing.not_for_appearance and classes["detect"].routing.presence
    assert load_settings(None, {"kb": "/k", "detector": "/d"}).tool_settings() == {"detect": {"model": "/d"},
                                                                                    "retrieve": {"kb": "/k"}}


def test_a_bad_declaration_fails_when_the_class_is_built() -> None:
    class Ev(Evidence):
        tool: str = "bad_tool"

    with pytest.raises(TypeError, match="routing keyword"):
        type("BadTool", (Tool,), {"name": "bad_tool", "evidence": Ev, "description": "", "limitations": "",
                                  "routing": Routing(keywords=("(",)), "load": lambda self: None,
                                  "apply": lambda self, image, question, workdir, peers: None})
    with pytest.raises(TypeError, match="cost must be positive"):
        type("BadTool", (Tool,), {"name": "bad_tool", "evidence": Ev, "description": "", "limitations": "",
                                  "cost": 0, "load": lambda self: None,
                                  "apply": lambda self, image, question, workdir, peers: None})
