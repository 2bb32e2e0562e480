"""The registered tools as LangChain tools (``tools.langchain``): schemas and cards, the real tools run through
``BaseTool.invoke`` and inside a LangGraph ``ToolNode``, and each tool's optional arguments (``Tool.Args``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

import tools
from agent.cache import ToolCache
from agent.core.evidence import GenericEvidence, OcrEvidence
from agent.core.images import load_image
from agent.core.phrases import asked_target
from agent.core.schema import Question, ToolResult
from tools import BUILTIN, Registry
from tools.base import NoArgs, Tool
from tools.langchain import MAX_LINES, card, model_text
from tools.ocr import OcrTool

ROOT = Path(__file__).resolve().parents[1]
FAST_OCR = {"engine": "tesseract", "tesseract_boxes": "tesseract", "gpu": False}  # no CRAFT weights to load


@pytest.fixture()
def with_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh registry with the shipped ``mean_color`` plug-in registered (the session's registry is untouched)."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugins"))
    monkeypatch.setattr(tools, "REGISTRY", Registry(BUILTIN))
    tools.register("mean_color", "mean_color:MeanColorTool")


@pytest.fixture()
def sign(tmp_path: Path) -> Path:
    """A generated sign: black English text on white, which Tesseract reads exactly."""
    image = Image.new("RGB", (520, 140), "white")
    ImageDraw.Draw(image).text((24, 40), "OPEN 24 HOURS", fill="black", font=ImageFont.load_default(size=48))
    path = tmp_path / "sign.png"
    image.save(path)
    return path


def by_name(items: list[BaseTool]) -> dict[str, BaseTool]:
    return {t.name: t for t in items}


def test_one_langchain_tool_per_registered_tool_with_its_card_and_schema(with_plugin) -> None:
    made = tools.langchain_tools()
    assert [t.name for t in made] == [*BUILTIN, "mean_color"]
    assert all(isinstance(t, BaseTool) and t.response_format == "content_and_artifact" for t in made)
    ocr = by_name(made)["ocr"]
    assert ocr.description == card(OcrTool) and "Limitations:" in ocr.description
    # the full schema takes the image path; what a model is shown leaves it out (the runner injects it)
    assert set(ocr.args_schema.model_fields) == {"image", "question", "language"}
    shown = {name: convert_to_openai_tool(t)["function"]["parameters"]["properties"] for name, t in by_name(made).items()}
    assert shown == {"som": {"question": shown["som"]["question"]},
                     "detect": {"question": shown["som"]["question"], "phrases": shown["detect"]["phrases"]},
                     "ocr": {"question": shown["som"]["question"], "language": shown["ocr"]["language"]},
                     "retrieve": {"question": shown["som"]["question"], "query": shown["retrieve"]["query"]},
                     "anomaly": {"question": shown["som"]["question"]},
                     "caption": {"question": shown["som"]["question"]},
                     "mean_color": {"question": shown["som"]["question"]}}
    assert shown["ocr"]["language"]["anyOf"][0]["enum"] == ["en", "ko"]
    assert [t.name for t in tools.langchain_tools(["ocr", "som"])] == ["som", "ocr"]  # registry order


def test_unknown_tools_and_arguments_are_refused() -> None:
    from agent.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown tool\(s\) \['nope'\]"):
        tools.langchain_tools(["ocr", "nope"])
    with pytest.raises(ConfigError, match="unknown tool"):
        tools.langchain_tools(ocrr={"engine": "tesseract"})
    ocr = by_name(tools.langchain_tools(["ocr"], ocr=FAST_OCR))["ocr"]
    with pytest.raises(ValidationError, match="language"):
        ocr.invoke({"image": "x.png", "language": "fr"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ocr.invoke({"image": "x.png", "path": "y.png"})


def test_ocr_runs_for_real_through_invoke_with_text_and_the_typed_evidence(sign: Path) -> None:
    ocr = by_name(tools.langchain_tools(["ocr"], ocr=FAST_OCR))["ocr"]
    msg = ocr.invoke({"type": "tool_call", "id": "call-1", "name": "ocr",
                      "args": {"image": str(sign), "question": "What does the sign say?"}})
    assert isinstance(msg, ToolMessage) and msg.tool_call_id == "call-1"
    result = msg.artifact
    assert isinstance(result, ToolResult) and result.ok and isinstance(result.evidence, OcrEvidence)
    assert result.evidence.text == "OPEN 24 HOURS" and result.evidence.engine == "tesseract:eng"
    assert msg.content == model_text(result) and msg.content.startswith('text="OPEN 24 HOURS" confidence=')
    # a plain invoke (not a tool call) answers the text only
    assert ocr.invoke({"image": str(sign)}) == msg.content


def test_a_tool_failure_is_an_error_text_and_a_failed_result(sign: Path, tmp_path: Path) -> None:
    retrieve = by_name(tools.langchain_tools(["retrieve"]))["retrieve"]  # no knowledge base configured
    msg = retrieve.invoke({"type": "tool_call", "id": "c", "name": "retrieve", "args": {"image": str(sign)}})
    assert not msg.artifact.ok and msg.content == f"error: {msg.artifact.error}" and "--kb" in msg.content
    ocr = by_name(tools.langchain_tools(["ocr"], ocr=FAST_OCR))["ocr"]
    missing = ocr.invoke({"type": "tool_call", "id": "c", "name": "ocr", "args": {"image": str(tmp_path / "no.png")}})
    assert not missing.artifact.ok and missing.content.startswith("error: image ") and "no.png" in missing.content


class Messages(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    image: str


def test_the_tools_run_inside_a_langgraph_tool_node(sign: Path, with_plugin) -> None:
    made = tools.langchain_tools(ocr=FAST_OCR)
    g = StateGraph(Messages)
    g.add_node("tools", ToolNode(made))
    g.add_edge(START, "tools")
    g.add_edge("tools", END)
    calls = [{"name": "ocr", "args": {"language": "en"}, "id": "1"},
             {"name": "mean_color", "args": {"image": "/etc/passwd"}, "id": "2"},  # the state's image wins
             {"name": "ocr_v2", "args": {}, "id": "3"}]
    out = g.compile().invoke({"messages": [AIMessage("", tool_calls=calls)], "image": str(sign)})
    replies = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert replies["1"].artifact.evidence.text == "OPEN 24 HOURS" and replies["1"].status == "success"
    colors = replies["2"].artifact
    assert colors.ok and colors.tool == "mean_color" and "white" in replies["2"].content
    assert replies["3"].status == "error" and "ocr_v2 is not a valid tool" in replies["3"].content


def test_ocr_language_reads_one_script(sign: Path) -> None:
    q = Question(id="q", text="What does the sign say?", options={})
    tool = OcrTool(**FAST_OCR)
    assert tool.plan_for(q) == [("tesseract", ("en",))]
    assert tool.plan_for(q, "ko") == [("tesseract", ("ko", "en"))]
    read = tool.run(load_image(sign).image, q, args=OcrTool.Args(language="ko"))
    assert read.ok and read.evidence.engine == "tesseract:kor+eng"
    wrong = tool.run(load_image(sign).image, q, args=NoArgs())
    assert not wrong.ok and "takes arguments OcrArgs, found NoArgs" in wrong.error


@pytest.mark.parametrize(("phrases", "want", "primary"), [
    (["people"], ("person",), "person"),
    (["사람"], ("person",), "person"),
    (["Red cars", " bus "], ("red car", "bus"), None),
    (["blue widget thing"], ("blue widget thing",), "blue widget thing"),
])
def test_detect_phrases_become_the_detector_target(phrases, want, primary) -> None:
    t = asked_target(phrases)
    assert (t.phrases, t.primary, t.source) == (want, primary, "asked")


def test_detect_needs_a_phrase_when_given_phrases() -> None:
    with pytest.raises(ValueError, match="at least one phrase"):
        asked_target([" "])


def test_args_enter_the_cache_key_only_when_given(sign: Path, tmp_path: Path) -> None:
    from agent.cache import cache_key, key_parts

    tool, image = OcrTool(**FAST_OCR), load_image(sign)
    q = Question(id="q", text="What does the sign say?", options={})
    plain = key_parts(tool, image, q)
    assert "args" not in plain and key_parts(tool, image, q, args=OcrTool.Args()) == plain
    ko = key_parts(tool, image, q, args=OcrTool.Args(language="ko"))
    assert ko["args"] == {"language": "ko"} and cache_key(ko) != cache_key(plain)
    cache = ToolCache(tmp_path / "cache")
    first = cache.run(tool, image, q, args=OcrTool.Args(language="ko"))
    again = cache.run(tool, image, q, args=OcrTool.Args(language="ko"))
    other = cache.run(tool, image, q)
    assert (first.cached, again.cached, other.cached) == (False, True, False)
    assert again.evidence.engine == "tesseract:kor+eng" and other.evidence.engine == "tesseract:eng"


def test_a_tool_args_field_must_be_an_optional_keyword_of_apply() -> None:
    class ProbeEvidence(GenericEvidence):
        tool: str = "probe_args"

    class ProbeArgs(NoArgs):
        level: int | None = None

    with pytest.raises(TypeError, match="apply must take level=None"):
        class Missing(Tool):
            name, description, limitations, evidence, Args = "probe_args", "d", "l", ProbeEvidence, ProbeArgs

            def load(self): ...

            def apply(self, image, question, workdir, peers): ...

    class Required(NoArgs):
        level: int

    with pytest.raises(TypeError, match="must default to None"):
        class NotOptional(Tool):
            name, description, limitations, evidence, Args = "probe_args", "d", "l", ProbeEvidence, Required

            def load(self): ...

            def apply(self, image, question, workdir, peers, level=None): ...


def test_long_evidence_is_cut_for_the_model_but_kept_in_the_artifact() -> None:
    spans = [{"text": f"line {i}", "box": [0, i, 10, i + 1], "confidence": 0.9} for i in range(MAX_LINES + 5)]
    result = ToolResult(tool="ocr", ok=True, evidence=OcrEvidence(engine="e", spans=spans))
    text = model_text(result)
    assert text.count("\n") == MAX_LINES and text.endswith("(+5 more lines)")


def test_retrieve_searches_with_the_query_it_is_given(tmp_path: Path) -> None:
    from agent.kb.build import build_kb

    kb = tmp_path / "kb"
    build_kb(ROOT / "examples" / "train.csv", kb, clip="e5")
    retrieve = by_name(tools.langchain_tools(["retrieve"], retrieve={"kb": str(kb), "k": 1}))["retrieve"]
    cat = str(ROOT / "examples" / "images" / "chelsea.jpg")

    def top(args: dict) -> str:
        msg = retrieve.invoke({"type": "tool_call", "id": "c", "name": "retrieve", "args": {"image": cat, **args}})
        assert msg.artifact.ok, msg.artifact.error
        return msg.artifact.evidence.entries[0].id

    assert top({"question": "What colour are the cat's eyes?"}) == "TRAIN_008"  # the same photo and question
    assert top({"question": "What colour are the cat's eyes?",
                "query": "How many rows of coins are there in the photo?"}) == "TRAIN_011"


def test_detect_looks_for_the_phrases_it_is_given(tiny_dir: Path, sign: Path) -> None:
    detect = by_name(tools.langchain_tools(["detect"], detect={"model": str(tiny_dir / "detector-grounding-dino"),
                                                               "device": "cpu"}))["detect"]

    def found(args: dict):
        msg = detect.invoke({"type": "tool_call", "id": "c", "name": "detect", "args": {"image": str(sign), **args}})
        assert msg.artifact.ok, msg.artifact.error
        return msg.artifact.evidence

    asked = found({"question": "How many cats are there?", "phrases": ["사람", "bus"]})
    assert (asked.phrase, asked.source, asked.target, asked.query) == ("person. bus.", "asked", None, "사람 / bus")
    plain = found({"question": "How many cats are there?"})
    assert (plain.phrase, plain.source, plain.target) == ("cat.", "english", "cat")
