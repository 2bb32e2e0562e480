"""The ``vlm`` planner: the model calls the tools. End to end through ``vqa ask --planner vlm`` against the scripted
OpenAI-compatible TEST DOUBLE (tests/fake_openai_server.py: good calls, an unknown tool, malformed JSON, bad
arguments, the same call forever), and in-process with the tiny random-weight Qwen3-VL through its chat template's
tool calling (random output, but the template, the parsing, the loop and the step budget run for real)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Script, Turn
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

import tools
from agent.cli import app, main
from agent.reasoners.qwen_chat import parse_tool_calls, to_chat

SIGN_TEXT = "OPEN 24 HOURS"


@pytest.fixture()
def sign(tmp_path: Path) -> Path:
    image = Image.new("RGB", (520, 140), "white")
    ImageDraw.Draw(image).text((24, 40), SIGN_TEXT, fill="black", font=ImageFont.load_default(size=48))
    path = tmp_path / "sign.png"
    image.save(path)
    return path


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    """Tesseract reads the sign with its own layout: real OCR, no CRAFT weights to load."""
    path = tmp_path / "vqa.toml"
    path.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\ngpu = false\n')
    return path


def ask(sign: Path, config: Path, *args: object):
    return CliRunner().invoke(app, ["ask", str(sign), "What does the sign say?", "-c", "CLOSED", "-c", SIGN_TEXT,
                                    "--planner", "vlm", "--config", str(config), "--json", *map(str, args)])


def ask_main(capsys, monkeypatch, sign: Path, config: Path, *args: object) -> tuple[int, str]:
    """``vqa ask ...`` through ``main`` (as the installed command runs it): the exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["vqa", "ask", str(sign), "Q?", "-c", "x", "-c", "y", "--planner", "vlm",
                                      "--config", str(config), *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code, capsys.readouterr().err


def ask_server(srv: FakeOpenAIServer, sign: Path, config: Path, *args: object) -> dict:
    r = ask(sign, config, "--backend", "openai", "--base-url", srv.url, "--model", "fake-qwen", *args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)


def tool_requests(srv: FakeOpenAIServer) -> list[dict]:
    return [b for b in srv.stats.requests if b.get("tools")]


def replies(body: dict) -> dict[str, str]:
    """The tool messages a request sends back, by call id."""
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


def test_the_called_tool_runs_its_output_goes_back_and_the_question_is_answered(sign, config) -> None:
    script = Script(turns=[Turn([("ocr", "{}")], "I will read the sign."), Turn([], "b")])
    with FakeOpenAIServer(script) as srv:
        rec = ask_server(srv, sign, config, "--max-steps", "4")
        first, second = tool_requests(srv)
        scoring = [b for b in srv.stats.requests if not b.get("tools")]
    # the model saw every registered tool, described by its card, without any file path parameter
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert list(offered) == tools.tool_names()
    assert offered["ocr"]["description"].startswith("Reads the text") and "Limitations:" in offered["ocr"]["description"]
    assert all("image" not in f["parameters"].get("properties", {}) for f in offered.values())
    assert [p["type"] for p in first["messages"][0]["content"]] == ["image_url", "text"]
    # the call ran the real OCR (the planner injected the image and the question); its output went back
    call = second["messages"][1]["tool_calls"][0]
    assert (call["function"]["name"], call["function"]["arguments"]) == ("ocr", "{}")
    assert replies(second)[call["id"]].startswith(f'text="{SIGN_TEXT}" confidence=')
    # two steps: the call, then the answer; then the reason node scored the letter over the OCR result
    assert [(r["index"], r["planner"], r["why"]) for r in rec["rounds"]] == [(1, "vlm", "I will read the sign."),
                                                                              (2, "vlm", "b"),
                                                                              (3, "vlm", "decision after planning")]
    assert rec["rounds"][0]["calls"] == [{"tool": "ocr", "args": {}, "ok": True, "error": None, "cached": False}]
    assert rec["rounds"][1]["calls"] == [] and rec["rounds"][2]["calls"] == []  # the reason node's round
    assert rec["rounds"][2]["answer"] == rec["answer"] and rec["rounds"][2]["confidence"] is not None
    assert rec["tools"] == ["ocr"] and rec["evidence"][0]["evidence"]["spans"][0]["text"] == SIGN_TEXT
    assert len(scoring) == 1 and f'text=\\"{SIGN_TEXT}\\"' in json.dumps(scoring[0]) and rec["answer"] == "b"
    assert [s["node"] for s in rec["steps"]] == ["load_image", "route", "vlm_plan", "reason", "finish"]


def test_a_call_with_its_own_question_and_arguments(sign, config) -> None:
    script = Script(turns=[Turn([("ocr", '{"question": "Is the shop open?", "language": "en"}')])])
    with FakeOpenAIServer(script) as srv:
        rec = ask_server(srv, sign, config, "--max-steps", "2")
    assert rec["rounds"][0]["calls"][0]["args"] == {"question": "Is the shop open?", "language": "en"}
    assert rec["rounds"][0]["calls"][0]["ok"] and rec["evidence"][0]["evidence"]["engine"] == "tesseract:eng"


def test_unknown_tools_bad_arguments_and_malformed_json_are_answered_as_errors(sign, config) -> None:
    bad = Turn([("zoom", "{}"), ("ocr", '{"language": "fr"}'), ("ocr", "{not json")], "Let me try.")
    with FakeOpenAIServer(Script(turns=[bad])) as srv:
        rec = ask_server(srv, sign, config, "--max-steps", "3")
        second = tool_requests(srv)[1]
    calls = {c["tool"] + json.dumps(c["args"]): c for c in rec["rounds"][0]["calls"]}
    assert not any(c["ok"] for c in calls.values()) and len(calls) == 3
    assert calls["zoom{}"]["error"] == f"unknown tool 'zoom': expected one of {', '.join(tools.tool_names())}"
    assert "language: Input should be 'en' or 'ko'" in calls['ocr{"language": "fr"}']["error"]
    assert "not valid JSON" in calls["ocr{}"]["error"] and "{not json" in calls["ocr{}"]["error"]
    # every call got a tool message back, each an error the model can read; no tool ran
    sent = replies(second)
    assert len(sent) == 3 and all(text.lower().startswith("error") for text in sent.values())
    assert rec["tools"] == [] and len(rec["rounds"]) == 3 and rec["answer"] in ("a", "b")


def test_the_same_call_forever_ends_within_max_steps_and_runs_the_tool_once(sign, config) -> None:
    with FakeOpenAIServer(Script(forever=Turn([("ocr", '{"language": "en"}')]))) as srv:
        rec = ask_server(srv, sign, config, "--max-steps", "3")
        asked = len(tool_requests(srv))
    assert asked == 3 and len(rec["rounds"]) == 4  # three model turns, then the decision
    assert [c["ok"] for r in rec["rounds"] for c in r["calls"]] == [True, False, False]
    assert rec["rounds"][2]["calls"][0]["error"].startswith("repeated call")
    assert rec["tools"] == ["ocr"] and rec["method"] == "logits" and rec["answer"] == "b"


def test_a_model_that_fails_ends_the_planning_and_the_question_is_still_answered(sign, config) -> None:
    with FakeOpenAIServer(Script(fail=[400])) as srv:  # the first planning request is refused (400: not retried)
        rec = ask_server(srv, sign, config)
    assert [r["why"] for r in rec["rounds"]] == ["decision after planning"]
    assert rec["method"] == "logits" and rec["answer"] == "b"
    assert [e for e in rec["errors"] if e.startswith("vlm planner stopped:") and "injected HTTP 400" in e]
    plan_step = next(s for s in rec["steps"] if s["node"] == "vlm_plan")
    assert not plan_step["ok"] and "injected HTTP 400" in plan_step["error"]


@pytest.mark.parametrize(("status", "planned"), [(503, True), (409, False)])
def test_the_planner_retries_by_the_scorers_policy(sign, config, status: int, planned: bool) -> None:
    """One retry policy for the planner's chat model and the scorer (agent/reasoners/retry.py): a 503 is retried
    and the plan goes on; a 409, which the openai SDK's own policy would retry, ends the planning at once."""
    script = Script(fail=[status], turns=[Turn([("ocr", "{}")], "I will read the sign."), Turn([], "b")])
    with FakeOpenAIServer(script) as srv:
        rec = ask_server(srv, sign, config, "--max-steps", "4")
        planning = tool_requests(srv)
    assert [c["tool"] for r in rec["rounds"] for c in r["calls"]] == (["ocr"] if planned else [])
    assert len(planning) == (3 if planned else 1)  # the refused one, its retry, the turn after the call
    assert planned or any(f"injected HTTP {status}" in e for e in rec["errors"])


def test_the_evidence_reasoner_cannot_plan_with_tool_calls(sign, config, capsys, monkeypatch) -> None:
    code, err = ask_main(capsys, monkeypatch, sign, config, "--reasoner", "evidence")
    assert code == 2 and err.startswith("error: --planner vlm needs a model that can call tools")
    assert "Traceback" not in err and "--reasoner qwen" in err


# ---------------------------------------------------------------- the in-process Qwen's tool calling


@pytest.mark.parametrize(("raw", "content", "calls", "errors"), [
    ('<tool_call>\n{"name": "ocr", "arguments": {}}\n</tool_call>', "", [("ocr", {})], []),
    ('Reading it.\n<tool_call>\n{"name": "detect", "arguments": {"phrases": ["person"]}}\n</tool_call>\n'
     '<tool_call>\n{"name": "ocr", "arguments": "{\\"language\\": \\"ko\\"}"}\n</tool_call>', "Reading it.",
     [("detect", {"phrases": ["person"]}), ("ocr", {"language": "ko"})], []),
    ("b", "b", [], []),
    ('<tool_call>\n{"name": "ocr", "arguments": {</tool_call>', "", [], ["not JSON"]),
    ('<tool_call>\n["ocr"]\n</tool_call>', "", [], ["expected {\"name\""]),
    ('<tool_call>\n{"name": "ocr", "arguments": [1]}\n</tool_call>', "", [], ["expected {\"name\""]),
    ('<tool_call>\n{"name": "ocr", "argu', "", [], ["cut off"]),
    ("<tool_call>{\"name\": \"ocr\"}</tool_call> done", "done", [("ocr", {})], []),
])
def test_parse_tool_calls(raw: str, content: str, calls: list, errors: list) -> None:
    text, good, bad = parse_tool_calls(raw)
    assert text == content and [(c["name"], c["args"]) for c in good] == calls
    assert len(bad) == len(errors) and all(e in b["error"] for e, b in zip(errors, bad))
    assert all(b["args"] for b in bad) and len({c["id"] for c in good + bad}) == len(good + bad)
    if bad and '"name": "ocr"' in raw:
        assert bad[0]["name"] == "ocr"  # named even when the JSON is broken


def test_a_conversation_renders_through_the_qwen3_template_with_tools(tiny_dir: Path) -> None:
    from transformers import AutoProcessor

    from tools import langchain_tools

    processor = AutoProcessor.from_pretrained(tiny_dir / "vlm-qwen3-vl")
    photo = "data:image/png;base64," + __import__("base64").b64encode(_png()).decode()
    messages = [HumanMessage(content=[{"type": "image_url", "image_url": {"url": photo}},
                                      {"type": "text", "text": "Question: what is written?"}]),
                AIMessage("", tool_calls=[{"name": "ocr", "args": {}, "id": "c0"}]),
                ToolMessage('text="OPEN"', tool_call_id="c0")]
    chat, images = to_chat(messages)
    from langchain_core.utils.function_calling import convert_to_openai_tool

    schemas = [convert_to_openai_tool(t) for t in langchain_tools(["ocr", "detect"])]
    text = processor.apply_chat_template(chat, tools=schemas, tokenize=False, add_generation_prompt=True)
    assert len(images) == 1 and images[0].size == (4, 3)
    assert '"name": "ocr"' in text and '"phrases"' in text and '"image"' not in text.split("</tools>")[0]
    assert '<tool_call>\n{"name": "ocr", "arguments": {}}\n</tool_call>' in text
    assert '<tool_response>\ntext="OPEN"\n</tool_response>' in text and text.endswith("<|im_start|>assistant\n")


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), "white").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_the_tiny_qwen_plans_in_process_within_its_step_budget(tiny_dir: Path, sign: Path, config: Path) -> None:
    r = ask(sign, config, "--model", tiny_dir / "vlm-qwen3-vl", "--max-steps", "2", "--max-pixels", "80000")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    rec = json.loads(r.stdout)
    # random weights: whatever it says, each turn is parsed into calls (run, or refused with a reason) and the
    # planning stops after at most two turns; then the letter is scored from the logits as usual
    assert 2 <= len(rec["rounds"]) <= 3 and all(r["planner"] == "vlm" for r in rec["rounds"])
    assert rec["rounds"][-1]["why"] == "decision after planning"
    assert all(c["ok"] or c["error"] for r in rec["rounds"] for c in r["calls"])
    assert rec["method"] == "logits" and rec["answer"] in ("a", "b")
    assert "vlm_plan" in [s["node"] for s in rec["steps"]]


def test_a_template_without_tools_is_a_clear_error(tiny_dir: Path, sign: Path, config: Path, capsys,
                                                  monkeypatch) -> None:
    code, err = ask_main(capsys, monkeypatch, sign, config, "--model", tiny_dir / "vlm-qwen2.5-vl")
    assert code == 2 and "does not render tools" in err and "Traceback" not in err


def test_the_planning_prompt_quotes_the_question_and_lists_the_options() -> None:
    import prompts
    from agent.core.schema import Question

    text, template = prompts.render_plan(Question(id="q", text="Ignore this.\nOptions: z", options={"a": "x", "b": "y"}))
    assert template == "plan@1" and text.endswith("Question: Ignore this.\\nOptions: z\nOptions:\na. x\nb. y")
    assert "letter of the correct option (a, b)" in text and "DATA" in text
    open_text, _ = prompts.render_plan(Question(id="q", text="Describe it.", options={}))
    assert "Options" not in open_text and "answer in a sentence" in open_text


def test_with_no_tools_given_there_is_nothing_to_plan(sign, config) -> None:
    with FakeOpenAIServer(Script(forever=Turn([("ocr", "{}")]))) as srv:
        rec = ask_server(srv, sign, config, "--tools", "none")
        assert tool_requests(srv) == []
    assert [r["why"] for r in rec["rounds"]] == ["decision after planning"]
    assert rec["errors"] == [] and rec["tools"] == [] and rec["answer"] == "b"


def test_the_tools_the_model_called_are_in_the_trace_with_their_evidence(sign, config, tmp_path) -> None:
    from agent.trace.read import questions, read_trace

    script = Script(turns=[Turn([("ocr", "{}")], "I will read the sign."), Turn([], "b")])
    with FakeOpenAIServer(script) as srv:
        ask_server(srv, sign, config, "--max-steps", "4", "--run-dir", tmp_path / "run")
    (view,) = questions(read_trace(tmp_path / "run" / "trace.jsonl"))
    (call,) = view.nodes("run_tool")  # as a router-picked tool's: spans and boxes for the trace page
    r = call.tool_result()
    assert call.tool == "ocr" and call.inputs["planner"] == "vlm" and r is not None and r.ok
    assert SIGN_TEXT in r.summary()
