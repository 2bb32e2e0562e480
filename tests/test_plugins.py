"""Plug-in tools: the tool contract, evidence that renders and scores itself, registration from a config file and
from ``vqa.tools`` entry points, router rules, and the shipped ``mean_color`` example through the real ``vqa ask``."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image, ImageDraw

import prompts
from agent.core.errors import ConfigError
from agent.core.evidence import Evidence, GenericEvidence
from agent.core.schema import Answer, Question, ToolResult
from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import EvidenceReasoner
from agent.router import Router
from agent.trace.html import render_html
from agent.trace.read import questions, read_trace
from tools import BUILTIN, Registry
from tools.base import Tool

ROOT = Path(__file__).resolve().parents[1]
MEAN_COLOR = ROOT / "examples" / "plugins" / "mean_color.py"
VQA = str(Path(sys.executable).parent / "vqa")

# A toy plug-in as a third party would write it: one module, no edit to the project.
TOY = '''
from typing import ClassVar, Literal

from PIL import ImageStat

from agent.core.evidence import Evidence, Table, quote
from tools.base import Routing, Tool


class BrightnessEvidence(Evidence):
    tool: Literal["brightness"] = "brightness"
    level: str
    mean: float
    color: ClassVar[str] = "#123456"

    def prompt_lines(self):
        return [f"level={quote(self.level)} mean_gray={self.mean:.1f}"]

    def summary(self, limit=6):
        return f"{self.level} photo (mean gray {self.mean:.0f})"

    def table(self):
        return Table("Brightness", ["level", "mean"], rows=[[self.level, f"{self.mean:.1f}"]])

    def support(self, question):
        return {k: float(v.strip().lower() == self.level) for k, v in question.options.items()}


class BrightnessTool(Tool):
    name = "brightness"
    evidence = BrightnessEvidence
    description = "Says whether the photo is bright or dark."
    limitations = "The mean gray level only."
    routing = Routing(keywords=(r"\\bbright\\b|밝",), examples=("Is the room lit?",))

    def load(self):
        pass

    def apply(self, image, question, workdir, peers):
        mean = ImageStat.Stat(image.convert("L")).mean[0]
        return BrightnessEvidence(level="bright" if mean >= 128 else "dark", mean=mean), {}
'''


def vqa(*args: object, pythonpath: list[Path] = (), cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), str(ROOT)])}
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def toy_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy_brightness.py").write_text(TOY, encoding="utf-8")
    return folder


def config(path: Path, register: dict[str, str]) -> Path:
    path.write_text("[tools.register]\n" + "".join(f'{k} = "{v}"\n' for k, v in register.items()), encoding="utf-8")
    return path


def red_car(path: Path, body: tuple[int, int, int] = (200, 30, 40)) -> Path:
    """A car under a sky on a road: body, cabin, windows and wheels."""
    im = Image.new("RGB", (320, 240), (135, 206, 235))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 150, 320, 240], fill=(110, 110, 110))
    d.rectangle([60, 110, 260, 170], fill=body)
    d.polygon([(100, 110), (125, 75), (205, 75), (230, 110)], fill=body)
    d.rectangle([132, 82, 198, 106], fill=(170, 200, 230))
    for x in (100, 220):
        d.ellipse([x - 22, 150, x + 22, 194], fill=(20, 20, 20))
    im.save(path)
    return path


@pytest.fixture
def imported(monkeypatch):
    """Import a plug-in module from a folder, as the CLI would with that folder on PYTHONPATH."""

    def load(folder: Path, module: str):
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.delitem(sys.modules, module, raising=False)
        return importlib.import_module(module)

    return load


# ---------------------------------------------------------------- the contract


def test_a_tool_class_must_declare_its_card_and_an_evidence_type_named_after_it() -> None:
    class ProbeEvidence(Evidence):
        tool: Literal["probe"] = "probe"

    with pytest.raises(TypeError, match="evidence"):
        class NoEvidence(Tool):
            name, description, limitations = "probe", "d", "l"

            def load(self): ...

            def apply(self, image, question, workdir, peers): ...

    with pytest.raises(TypeError, match="tool: Literal\\['other'\\]"):
        class WrongName(Tool):
            name, description, limitations, evidence = "other", "d", "l", ProbeEvidence

            def load(self): ...

            def apply(self, image, question, workdir, peers): ...


def test_run_never_raises_and_checks_the_evidence_type() -> None:
    class ProbeEvidence(Evidence):
        tool: Literal["probe2"] = "probe2"

    class Liar(Tool):
        name, description, limitations, evidence = "probe2", "d", "l", ProbeEvidence

        def load(self): ...

        def apply(self, image, question, workdir, peers):
            return GenericEvidence(tool="probe2", x=1), {}

    class Crash(Liar):
        def apply(self, image, question, workdir, peers):
            raise RuntimeError("no luck")

    q = Question(id="q", text="Q?", options={"a": "x", "b": "y"})
    r = Liar().run(Image.new("RGB", (8, 8)), q)
    assert not r.ok and "GenericEvidence" in r.error and "ProbeEvidence" in r.error
    r = Crash().run(Image.new("RGB", (8, 8)), q)
    assert not r.ok and r.error == "RuntimeError: no luck"


def test_evidence_of_a_tool_that_is_not_loaded_reads_back_generic_and_writes_the_same_json() -> None:
    record = {"tool": "unloaded_tool", "ok": True, "evidence": {"tool": "unloaded_tool", "words": ["<b>hi</b>"],
                                                                 "score": 0.5}}
    r = ToolResult.model_validate(record)
    assert isinstance(r.evidence, GenericEvidence)
    assert r.model_dump(mode="json")["evidence"] == record["evidence"]
    lines = r.evidence.prompt_lines()
    assert lines == ['words=["\\u003cb\\u003ehi\\u003c/b\\u003e"]', "score=0.5"]  # data, delimiters escaped
    assert r.evidence.support(Question(id="q", text="Q?", options={"a": "x", "b": "y"})) is None


def test_two_evidence_types_cannot_claim_one_tool() -> None:
    class First(Evidence):
        tool: Literal["claimed"] = "claimed"

    with pytest.raises(TypeError, match="already"):
        class Second(Evidence):
            tool: Literal["claimed"] = "claimed"


# ---------------------------------------------------------------- the registry


def test_registry_refuses_bad_registrations_with_a_clear_message_and_keeps_nothing(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(toy_module(tmp_path)))
    reg = Registry(BUILTIN)
    for name, spec, needle in [("ocr", "toy_brightness:BrightnessTool", "already"),
                               ("brightness", "toy_brightness.BrightnessTool", "module:Class"),
                               ("brightness", "no_such_module:BrightnessTool", "PYTHONPATH"),
                               ("brightness", "toy_brightness:Nothing", "names nothing"),
                               ("brightness", "json:JSONDecoder", "not a tools.base.Tool"),
                               ("glow", "toy_brightness:BrightnessTool", "register it as 'brightness'"),
                               ("Bright-ness", "toy_brightness:BrightnessTool", "lower-case")]:
        with pytest.raises(ConfigError, match=needle):
            reg.register(name, spec)
    assert dict(reg) == BUILTIN  # nothing half-registered
    assert reg.register("brightness", "toy_brightness:BrightnessTool").name == "brightness"
    assert list(reg) == [*BUILTIN, "brightness"]


def test_entry_points_register_tools_in_process(tmp_path: Path, monkeypatch) -> None:
    site = entry_point_site(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    reg = Registry(BUILTIN)
    assert list(reg) == [*BUILTIN, "brightness"] and not reg.is_builtin("brightness")
    assert reg.tool_class("brightness").routing.examples == ("Is the room lit?",)


def entry_point_site(tmp_path: Path) -> Path:
    """A folder holding the toy module and an installed distribution's metadata that declares it."""
    site = toy_module(tmp_path / "site")
    info = site / "toy_brightness-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-brightness\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vqa.tools]\nbrightness = toy_brightness:BrightnessTool\n")
    return site


def test_router_takes_extra_rules_and_keeps_the_canonical_order() -> None:
    plain = Router(use_embeddings=False)
    extended = Router(use_embeddings=False, rules=[("mean_color", r"무슨\s*색")])
    assert plain.route("사진 속 고양이는 무슨 색인가요?").tools == []
    route = extended.route("왼쪽에 있는 고양이는 무슨 색인가요?")
    assert route.tools == ["som", "mean_color"] and route.method == "rules"
    assert route.reasons["mean_color"] == "rule: keyword '무슨 색'"


# ---------------------------------------------------------------- a toy tool through the real CLI


def test_a_toy_tool_from_a_temporary_module_runs_through_vqa_ask(tmp_path: Path, imported) -> None:
    plugins = toy_module(tmp_path / "plugins")
    cfg = config(tmp_path / "cfg.toml", {"brightness": "toy_brightness:BrightnessTool"})
    photo = tmp_path / "white.png"
    Image.new("RGB", (64, 48), (240, 240, 240)).save(photo)
    run = tmp_path / "run"
    p = vqa("ask", photo, "Is the photo bright or dark?", "-c", "dark", "-c", "bright", "--tools", "brightness",
            "--reasoner", "evidence", "--config", cfg, "--json", "--run-dir", run, pythonpath=[plugins])
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["tools"] == ["brightness"] and record["answer"] == "b"
    assert record["evidence"][0]["evidence"] == {"tool": "brightness", "level": "bright", "mean": 240.0}
    assert record["route"]["run"] == ["brightness"] and record["steps"][2]["tool"] == "brightness"
    assert "run_tool:brightness" in record["timings"]

    # With the plug-in loaded here too, the record reads back typed, to the same JSON, and its evidence renders
    # itself into the prompt the VLM would get.
    imported(plugins, "toy_brightness")
    answer = Answer.model_validate(record)
    assert type(answer.evidence[0].evidence).__name__ == "BrightnessEvidence"
    assert answer.model_dump(mode="json") == record
    q = Question(id="ask", text=record["question"], options=record["options"])
    text, _ = prompts.render(q, answer.evidence)
    assert '<tool_output tool="brightness">\nlevel="bright" mean_gray=240.0\n</tool_output>' in text
    # ... and into the trace page and the terminal tree.
    views = questions(read_trace(run / "trace.jsonl"))
    page = render_html(views, run, title="t")
    assert "<h3>Brightness</h3>" in page and "bright photo (mean gray 240)" in page
    shown = vqa("trace", "show", run, pythonpath=[plugins])
    assert shown.returncode == 0 and "run_tool:brightness" in shown.stdout, shown.stderr


def test_without_its_registration_the_toy_tool_is_a_clear_error(tmp_path: Path) -> None:
    photo = tmp_path / "white.png"
    Image.new("RGB", (64, 48), (240, 240, 240)).save(photo)
    p = vqa("ask", photo, "Bright?", "-c", "dark", "-c", "bright", "--tools", "brightness", "--reasoner", "evidence")
    assert p.returncode == 2 and "unknown tool" in p.stderr and "[tools.register]" in p.stderr
    cfg = config(tmp_path / "cfg.toml", {"brightness": "toy_brightness:BrightnessTool"})
    p = vqa("ask", photo, "Bright?", "-c", "dark", "-c", "bright", "--reasoner", "evidence", "--config", cfg)
    assert p.returncode == 2 and "PYTHONPATH" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_toy_tool_reaches_the_prompt_of_a_tiny_qwen(tiny_dir: Path, tmp_path: Path) -> None:
    plugins = toy_module(tmp_path / "plugins")
    cfg = config(tmp_path / "cfg.toml", {"brightness": "toy_brightness:BrightnessTool"})
    photo = tmp_path / "black.png"
    Image.new("RGB", (64, 48), (10, 10, 10)).save(photo)
    p = vqa("ask", photo, "Is the photo bright or dark?", "-c", "dark", "-c", "bright", "--tools", "brightness",
            "--model", tiny_dir / "vlm-qwen2.5-vl", "--config", cfg, "--json", pythonpath=[plugins])
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["method"] == "logits" and record["tools"] == ["brightness"]
    assert '<tool_output tool="brightness">\nlevel="dark" mean_gray=10.0\n</tool_output>' in record["prompt"]


def test_an_entry_point_plugin_needs_no_config(tmp_path: Path) -> None:
    site = entry_point_site(tmp_path)
    photo = tmp_path / "white.png"
    Image.new("RGB", (64, 48), (240, 240, 240)).save(photo)
    p = vqa("ask", photo, "Is it bright?", "-c", "dark", "-c", "bright", "--reasoner", "evidence", "--json",
            pythonpath=[site])
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["route"]["method"] == "rules" and record["tools"] == ["brightness"] and record["answer"] == "b"
    p = vqa("route", "Is the room bright?", "--json", pythonpath=[site])
    assert json.loads(p.stdout)["tools"] == ["brightness"]


# ---------------------------------------------------------------- the shipped mean_color example


@pytest.fixture
def mean_color(imported):
    return imported(MEAN_COLOR.parent, "mean_color")


@pytest.mark.parametrize(("rgb", "name"), [
    ((255, 0, 0), "red"), ((120, 10, 10), "red"), ((255, 165, 0), "orange"), ((250, 220, 40), "yellow"),
    ((30, 140, 50), "green"), ((20, 40, 200), "blue"), ((135, 206, 235), "blue"), ((128, 0, 128), "purple"),
    ((255, 182, 193), "pink"), ((139, 69, 19), "brown"), ((15, 15, 15), "black"), ((250, 250, 250), "white"),
    ((128, 128, 128), "gray"),
])
def test_mean_color_names_pixels_by_the_nearest_shade(mean_color, rgb: tuple[int, int, int], name: str) -> None:
    import numpy as np

    [[i]] = mean_color.name_pixels(np.array([[rgb]], dtype=np.uint8))
    assert mean_color.COLORS[i][0] == name


@pytest.mark.parametrize(("option", "names"), [
    ("빨간색", ["red"]), ("붉은 색", ["red"]), ("Red", ["red"]), ("red and white", ["red", "white"]),
    ("하늘색", ["blue"]), ("Grey", ["gray"]), ("bored", []), ("자동차", []),
])
def test_mean_color_reads_colour_names_in_options(mean_color, option: str, names: list[str]) -> None:
    assert mean_color.option_colors(option) == names


@pytest.mark.parametrize(("body", "name"), [((200, 30, 40), "red"), ((40, 160, 60), "green"), ((30, 60, 200), "blue")])
def test_mean_color_finds_the_central_object_not_the_sky(mean_color, tmp_path: Path, body, name: str) -> None:
    colors = mean_color.dominant_colors(Image.open(red_car(tmp_path / "car.png", body)))
    assert colors[0].name == name and colors[0].object_share > 0.5, colors
    by_name = {c.name: c for c in colors}
    if name != "blue":  # the sky is the largest part of the photo, not of the object
        assert by_name["blue"].share > colors[0].share and by_name["blue"].object_share < 0.3


def test_mean_color_evidence_scores_colour_options_only(mean_color) -> None:
    ev = mean_color.MeanColorEvidence(colors=[mean_color.ColorShare(name="red", name_ko="빨간색", rgb="#c81e28",
                                                                   share=0.2, object_share=0.7)])
    colours = Question(id="q", text="무슨 색인가요?", options={"a": "파란색", "b": "빨간색"})
    assert ev.support(colours) == {"a": 0.0, "b": 0.7}
    assert ev.support(Question(id="q", text="몇 명?", options={"a": "1명", "b": "2명"})) is None
    r = ToolResult(tool="mean_color", ok=True, evidence=ev)
    d = EvidenceReasoner().decide([ReasonRequest(question=colours, image=None, results=[r])])[0]
    assert max(d.probs, key=d.probs.get) == "b" and d.method == "evidence"
    assert ev.prompt_lines()[1] == "color=red (빨간색) object_share=0.70 photo_share=0.20 rgb=#c81e28"


def test_mean_color_example_from_a_copy_outside_the_repository(tmp_path: Path) -> None:
    plugins = tmp_path / "elsewhere"
    plugins.mkdir()
    shutil.copy(MEAN_COLOR, plugins / "mean_color.py")
    cfg = config(tmp_path / "cfg.toml", {"mean_color": "mean_color:MeanColorTool"})
    car = red_car(tmp_path / "red_car.png")
    p = vqa("ask", car, "What color is the car?", "-c", "red", "-c", "blue", "-c", "green", "--tools", "mean_color",
            "--reasoner", "evidence", "--config", cfg, "--json", pythonpath=[plugins], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["tools"] == ["mean_color"] and record["answer"] == "a" and record["method"] == "evidence"
    [result] = record["evidence"]
    assert result["ok"] and result["evidence"]["tool"] == "mean_color"
    assert result["evidence"]["colors"][0]["name"] == "red" and result["evidence"]["colors"][0]["name_ko"] == "빨간색"
    # Korean, and no --tools: the plug-in's own routing rule picks it.
    p = vqa("ask", car, "사진 속 자동차는 무슨 색인가요?", "-c", "파란색", "-c", "빨간색", "-c", "초록색", "--reasoner",
            "evidence", "--config", cfg, "--json", pythonpath=[plugins], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["route"]["method"] == "rules" and record["tools"] == ["mean_color"] and record["answer"] == "b"
