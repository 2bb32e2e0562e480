"""Planners (agent.planners): the escalate decision rules against hand-computed values, then the graph end to end
with the model-free evidence reasoner and tesseract on a generated page: a first round with no tool and no
evidence, a second round with OCR; the rounds in the record, the trace and the ablation's cost columns."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from agent.core.errors import ConfigError
from agent.core.schema import Answer, Question, Route, Step, ToolResult
from agent.planners import PlannerSettings, check_planner
from agent.planners.costs import ToolCosts
from agent.planners.escalate import candidates, top_two, unsure
from agent.reasoners.evidence import EvidenceReasoner
from agent.runner import ResultsLog, ask
from agent.services import Services
from eval.ablation import COLUMNS, ArmRun, arm_planner, arm_specs, table_rows
from tools.ocr import OcrTool

VQA = str(Path(sys.executable).parent / "vqa")
ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
OCR = {"engine": "tesseract", "tesseract_boxes": "tesseract"}
FAILING = {"detect": {"model": "/nonexistent/detector"}, "som": {"model": "/nonexistent/segmenter"},  # fail fast
           "caption": {"model": "/nonexistent/captioner"}}  # (anomaly has no model unless one is configured)
OPTIONS = {"a": "apple", "b": "river", "c": "candle", "d": "stone"}
NO_KEYWORD = "What is this about?"  # the router picks no tool for it (ocr scores under its threshold)
KEYWORD = "What word is written on the page?"  # "written": the router's ocr rule


@pytest.mark.parametrize(("probs", "flags", "why"), [
    ({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}, ["no_evidence"], "no evidence; top 0.25 < 0.6; margin 0.00 < 0.1"),
    ({"a": 0.34, "b": 0.33, "c": 0.33}, [], "top 0.34 < 0.6; margin 0.01 < 0.1"),
    ({"a": 0.65, "b": 0.35}, [], None),
    ({"a": 0.62, "b": 0.30, "c": 0.08}, [], None),
    ({"a": 0.52, "b": 0.46, "c": 0.02}, [], "top 0.52 < 0.6; margin 0.06 < 0.1"),
    ({"a": 0.9, "b": 0.1}, ["no_evidence"], "no evidence"),
])
def test_a_decision_is_unsure_under_the_confidence_or_the_margin_or_without_evidence(probs, flags, why) -> None:
    assert unsure(probs, flags, PlannerSettings("escalate", confidence=0.6, margin=0.1)) == why


def test_a_small_margin_alone_is_unsure() -> None:
    assert unsure({"a": 0.7, "b": 0.65}, [], PlannerSettings("escalate", confidence=0.6, margin=0.1)) == \
        "margin 0.05 < 0.1"
    assert top_two({"a": 1.0}) == (1.0, 0.0)


def test_candidates_are_the_routers_near_misses_then_the_rest_cheapest_first_by_measured_cost() -> None:
    route = Route(tools=["ocr"], run=["ocr"], scores={"som": 0.2, "ocr": 0.9, "detect": 0.05},
                  thresholds={"som": 0.3, "ocr": 0.5, "detect": 0.5}, skipped={"retrieve": "unavailable: no kb"})
    costs = ToolCosts()
    registered = ["som", "detect", "ocr", "retrieve", "slow_plugin", "fast_plugin"]
    # ocr ran; retrieve was skipped: the router's scored tools by score, then the plug-ins by their prior (5 s each)
    assert candidates(route, ["ocr"], registered, costs, lambda t: None) == ["som", "detect", "fast_plugin",
                                                                               "slow_plugin"]
    costs.add("slow_plugin", 9.0)
    costs.add("fast_plugin", 3.0)
    costs.add("fast_plugin", 1.0)
    assert costs.mean("fast_plugin") == 2.0 and costs.mean("ocr") is None and costs.estimate("ocr") == OcrTool.cost
    costs.add("slow_plugin", 0.1)  # mean 4.55 s: now faster than ...
    costs.add("fast_plugin", 12.0)  # ... this one's mean 16/3 s
    assert candidates(route, ["ocr"], registered, costs, lambda t: None)[2:] == ["slow_plugin", "fast_plugin"]
    # a tool whose load failed earlier in the run is left out; with no scores (forced tools) all go by cost
    assert candidates(Route(method="forced"), [], ["som", "ocr", "retrieve"], ToolCosts(),
                      lambda t: "no weights" if t == "som" else None) == ["retrieve", "ocr"]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A white page with one printed word, CANDLE."""
    path = tmp_path_factory.mktemp("page") / "page.png"
    im = Image.new("RGB", (900, 400), "white")
    ImageDraw.Draw(im).text((120, 140), "CANDLE", fill="black", font=ImageFont.truetype(FONT, 90))
    im.save(path)
    return path


def services(planner: str = "escalate", **kw) -> Services:
    return Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": OCR, **FAILING},
                    planner=PlannerSettings(planner, **kw))


def tool_steps(a: Answer) -> list[str]:
    return [s.tool for s in a.steps if s.node == "run_tool"]


def test_escalate_adds_ocr_when_the_first_round_has_no_evidence(page: Path) -> None:
    a = ask(services(), Question(id="p", image=page, text=NO_KEYWORD, options=OPTIONS))
    assert a.answer == "c" and a.method == "evidence" and a.probs["c"] > 0.9
    first, second = a.rounds
    assert (first.index, first.planner, first.calls, first.why, first.answer) == (1, "escalate", [], "router", "a")
    assert first.confidence == pytest.approx(0.25) and first.margin == 0.0
    assert [c.tool for c in second.calls] == ["ocr"] and second.calls[0].ok and not second.calls[0].cached
    assert second.why.startswith("no evidence; top 0.25 < 0.6") and second.answer == "c"
    assert second.confidence == pytest.approx(a.probs["c"]) and second.seconds > 0
    assert [s.node for s in a.steps] == ["load_image", "route", "reason", "escalate", "run_tool", "reason", "finish"]
    assert tool_steps(a) == ["ocr"] and a.tools == ["ocr"]


def test_a_confident_first_round_stops_there(page: Path) -> None:
    a = ask(services(), Question(id="p", image=page, text=KEYWORD, options=OPTIONS))
    [only] = a.rounds
    assert a.answer == "c" and only.why == "router" and [c.tool for c in only.calls] == ["ocr"]
    assert "escalate" not in [s.node for s in a.steps] and tool_steps(a) == ["ocr"]


def test_rules_records_its_single_round_even_when_unsure(page: Path) -> None:
    a = ask(services("rules"), Question(id="p", image=page, text=NO_KEYWORD, options=OPTIONS))
    [only] = a.rounds
    assert (only.planner, only.calls, only.why, a.answer, a.flags) == ("rules", [], "router", "a", ["no_evidence"])
    forced = ask(services("rules"), Question(id="p", image=page, text=NO_KEYWORD, options=OPTIONS),
                 forced_tools=["ocr"])
    assert [(r.why, [c.tool for c in r.calls]) for r in forced.rounds] == [("forced", ["ocr"])]


@pytest.mark.parametrize("max_rounds", [1, 2, 4])
def test_max_rounds_bounds_escalation_and_no_tool_runs_twice(tmp_path: Path, max_rounds: int) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), "white").save(blank)  # nothing to read or find: every round stays unsure
    s = services(max_rounds=max_rounds)
    a = ask(s, Question(id="b", image=blank, text=NO_KEYWORD, options=OPTIONS))
    # ocr is the only tool that can run here (detect, som and caption cannot load, anomaly and retrieve have no
    # model or knowledge base): a tool that cannot run costs no round, so escalation ends when ocr has been added
    rounds = [[c.tool for c in r.calls] for r in a.rounds]
    assert len(a.rounds) == min(max_rounds, 2) and a.flags == ["no_evidence"], rounds
    added = [c.tool for r in a.rounds[1:] for c in r.calls]
    assert len(added) == min(max_rounds, 2) - 1 and len(set(added)) == len(added)
    assert all(c.ok for r in a.rounds for c in r.calls)
    assert tool_steps(a) == added  # each tool called once, in the round that added it
    if max_rounds > 1:
        assert added[0] == "ocr"  # the router's best near miss comes first
    # the failed loads stay out of the next question's rounds; nothing left is tried twice there either
    b = ask(s, Question(id="b2", image=blank, text=NO_KEYWORD, options=OPTIONS))
    assert not set(tool_steps(b)) & {r.tool for r in a.evidence if not r.ok}
    assert len(tool_steps(b)) == len(set(tool_steps(b)))


def test_costs_are_measured_from_the_tools_the_graph_computes(page: Path) -> None:
    s = services()
    ask(s, Question(id="p", image=page, text=KEYWORD, options=OPTIONS))
    assert s.costs.snapshot()["ocr"]["runs"] == 1 and s.costs.mean("ocr") > 0
    assert "detect" not in s.costs.snapshot()  # not run (and failures are never a measured cost)


@pytest.mark.parametrize("command", ["ask", "eval"])
def test_the_vlm_planner_without_a_tool_calling_model_is_a_one_line_error_before_any_work(
        command: str, page: Path, tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text(f"id,path,question,a,b,c,d,answer\nq1,{page.name},{NO_KEYWORD},apple,river,candle,stone,c\n",
                    encoding="utf-8")
    args = {"ask": ["ask", page, NO_KEYWORD, "-c", "apple", "-c", "candle", "--planner", "vlm"],
            "eval": ["eval", data, "--images", page.parent, "--run-dir", tmp_path / "run", "--ablate-planners",
                     "escalate,vlm"]}[command]
    p = subprocess.run([VQA, *map(str, args), "--reasoner", "evidence"], capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().startswith("error: --planner vlm needs a model that can call tools"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "arms").exists()
    with pytest.raises(ConfigError, match="unknown planner"):
        check_planner("oracle")


def test_ask_json_shows_two_rounds_and_the_trace_shows_them(page: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli import app
    from agent.cli.common import out

    monkeypatch.setattr(out, "_width", 200)  # the console's width is fixed when it is made (another test's COLUMNS)

    cfg = tmp_path / "vqa.toml"
    cfg.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n', encoding="utf-8")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["ask", str(page), NO_KEYWORD, *[x for o in OPTIONS.values() for x in ("-c", o)],
                                 "--config", str(cfg), "--planner", "escalate", "--reasoner", "evidence", "--json",
                                 "--run-dir", str(run)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout[r.stdout.index("{"):])
    assert a["answer"] == "c" and [[c["tool"] for c in x["calls"]] for x in a["rounds"]] == [[], ["ocr"]]
    assert [x["why"].split(";")[0] for x in a["rounds"]] == ["router", "no evidence"]
    shown = CliRunner().invoke(app, ["trace", "show", str(run)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "round 1 (escalate: router) no tools" in shown.stdout and "→ add ocr" in shown.stdout
    assert "round 2 (escalate: no evidence" in shown.stdout and "planner rounds" in shown.stdout
    page_html = tmp_path / "t.html"
    assert CliRunner().invoke(app, ["trace", "show", str(run), "--html", str(page_html)]).exit_code == 0
    html = page_html.read_text(encoding="utf-8")
    assert 'data-round="1" data-tools=""' in html and 'data-round="2" data-tools="ocr"' in html


def cost_answer(qid: str, tools: list[str], seconds: list[float]) -> Answer:
    steps = [Step(node="run_tool", tool=t, started=0.0, seconds=s) for t, s in zip(tools, seconds)]
    ev = [ToolResult(tool=t, ok=False, error="x") for t in tools]
    return Answer(id=qid, answer="a", probs={"a": 1.0}, method="evidence", tools=tools, evidence=ev, timings={},
                  question="q", options={"a": "x", "b": "y"}, steps=[Step(node="reason", started=0, seconds=5.0)]
                  + steps)


def test_the_ablation_table_has_cost_columns_per_question() -> None:
    qs = [Question(id=f"q{i}", text="q", options={"a": "x", "b": "y"}, answer="a") for i in range(4)]
    router = ArmRun("router", None, {f"q{i}": cost_answer(f"q{i}", ["ocr"] if i < 2 else [], [0.5]) for i in range(4)},
                    2.0)
    esc = ArmRun("planner:escalate", None, {f"q{i}": cost_answer(f"q{i}", ["ocr", "detect"] if i < 3 else ["ocr"],
                                                                 [1.0, 2.0]) for i in range(4)}, 8.0)
    rows = {r["arm"]: r for r in table_rows([router, esc], qs, ["ocr"])}
    assert COLUMNS[-5:] == ["s_per_q", "calls_per_q", "tool_s_per_q", "cached", "unavailable"]
    assert (rows["router"]["calls_per_q"], rows["router"]["tool_s_per_q"], rows["router"]["s_per_q"]) == (0.5, 0.25,
                                                                                                         0.5)
    assert (rows["planner:escalate"]["calls_per_q"], rows["planner:escalate"]["tool_s_per_q"]) == (7 / 4, 10 / 4)
    assert [n for n, _ in arm_specs(["ocr"], ["escalate"])] == ["none", "only:ocr", "without:ocr", "router",
                                                               "planner:escalate", "all"]
    assert (arm_planner("planner:escalate"), arm_planner("router"), arm_planner("only:ocr")) == ("escalate", "rules",
                                                                                                 "rules")


def test_eval_ablation_compares_escalate_with_the_router_at_its_cost(page: Path, tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    with open(data, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "question", "a", "b", "c", "d", "answer"])
        w.writerow(["p1", page.name, NO_KEYWORD, *OPTIONS.values(), "c"])
        w.writerow(["p2", page.name, KEYWORD, *OPTIONS.values(), "c"])
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n', encoding="utf-8")
    run = tmp_path / "run"
    p = subprocess.run([VQA, "eval", str(data), "--images", str(page.parent), "--run-dir", str(run), "--reasoner",
                        "evidence", "--config", str(cfg), "--ablate-tools", "ocr", "--ablate-planners", "escalate"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {r["arm"]: r for r in csv.DictReader(open(run / "ablation.csv", encoding="utf-8"))}
    assert list(rows) == ["none", "only:ocr", "without:ocr", "router", "planner:escalate", "all"]
    assert list(next(iter(rows.values())))[: len(COLUMNS)] == COLUMNS
    # router: p1 gets no tool (no evidence: "a", wrong), p2 gets ocr; escalate adds ocr to p1 and gets both right
    assert (float(rows["router"]["accuracy"]), float(rows["router"]["calls_per_q"])) == (0.5, 0.5)
    assert (float(rows["planner:escalate"]["accuracy"]), float(rows["planner:escalate"]["calls_per_q"])) == (1.0, 1.0)
    assert float(rows["none"]["calls_per_q"]) == 0.0 == float(rows["none"]["tool_s_per_q"])
    esc = ResultsLog(run / "arms" / "planner-escalate" / "results.jsonl").load()
    assert [len(esc["p1"].rounds), len(esc["p2"].rounds)] == [2, 1]
    tool_s = sum(s.seconds for a in esc.values() for s in a.steps if s.node == "run_tool") / 2
    assert float(rows["planner:escalate"]["tool_s_per_q"]) == pytest.approx(tool_s, abs=1e-4) and tool_s > 0
    router = ResultsLog(run / "arms" / "router" / "results.jsonl").load()
    assert all(len(a.rounds) == 1 and a.rounds[0].planner == "rules" for a in router.values())
    assert "planner:escalate" in p.stdout and "calls/q" in p.stdout


def test_a_tool_lost_between_the_decision_and_the_escalate_node_ends_with_the_last_decision(
        page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions run concurrently: the tool ``after_reason`` saw may be found unavailable (its load failed in
    another question) by the time ``escalate`` runs; the question still gets its answer."""
    import agent.graph as graph

    real, calls = graph.next_tools, []

    def racing(state, s):
        calls.append(1)
        why, order = real(state, s)
        return (why, order) if len(calls) == 1 else (why, [])  # the edge sees a tool, the node none

    monkeypatch.setattr(graph, "next_tools", racing)
    a = ask(services(), Question(id="p", image=page, text=NO_KEYWORD, options=OPTIONS))
    assert [s.node for s in a.steps] == ["load_image", "route", "reason", "escalate", "finish"]
    assert len(a.rounds) == 1 and a.answer == "a" and not a.failed
