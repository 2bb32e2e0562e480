"""The graph end to end: real image loading, router, OCR tool, tiny Qwen-VL forward pass, batching."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agent.core.paths import artifact_dirname
from agent.core.schema import Question
from agent.graph import build_graph
from agent.reasoners.evidence import EvidenceReasoner
from agent.reasoners.qwen import QwenBackend
from agent.runner import ask, run_batch
from agent.services import Services

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.mmd"
IMAGES = sorted((EXAMPLES / "images").glob("*.jpg"))


def question(i: int, image: Path | None = None, n_options: int = 4) -> Question:
    opts = ["파란색", "빨간색", "초록색", "검은색", "흰색"][:n_options]
    text = ["사진 속 물체는 무슨 색인가요?", "What is the mood of this photo?", "이 사진의 계절은?"][i % 3]
    return Question(id=f"q{i}", image=image or IMAGES[i % len(IMAGES)], text=text, options=dict(zip("abcde", opts)))


def test_graph_drawing_matches_snapshot() -> None:
    drawn = build_graph().get_graph().draw_mermaid()
    assert drawn == SNAPSHOT.read_text(), "graph changed: review and delete tests/snapshots/graph.mmd to refresh"


@pytest.fixture(scope="module")
def qwen(tiny_dir: Path) -> QwenBackend:
    backend = QwenBackend(str(tiny_dir / "vlm-qwen2.5-vl"))
    backend.load()
    return backend


@pytest.mark.slow
def test_ask_end_to_end_with_tiny_qwen_records_every_node(qwen: QwenBackend) -> None:
    a = ask(Services(reasoner=qwen), question(0, n_options=3), forced_tools=[])
    assert a.method == "logits" and set(a.probs) == {"a", "b", "c"}
    assert sum(a.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert a.answer == max(a.probs, key=a.probs.get)
    assert [s.node for s in a.steps] == ["load_image", "route", "reason", "finish"]
    assert all(s.ok and s.seconds >= 0 for s in a.steps)
    assert "<|im_start|>" in a.prompt and "사진 속 물체는 무슨 색인가요?" in a.prompt
    assert a.route.method == "forced" and a.tools == []


@pytest.mark.slow
def test_batch_through_the_graph_batches_forward_passes_without_changing_answers(qwen: QwenBackend,
                                                                                   tmp_path: Path) -> None:
    qs = [question(i, n_options=2 + i % 4) for i in range(8)]
    alone = {q.id: ask(Services(reasoner=qwen), q, forced_tools=[]).probs for q in qs}
    summary = run_batch(qs, Services(reasoner=qwen), tmp_path / "run", batch_size=4, forced_tools=[],
                        out=tmp_path / "sub.csv")
    assert summary.batch_sizes == [4, 4]
    assert summary.answered == 8 and summary.failed == 0
    from agent.runner import ResultsLog

    batched = ResultsLog(tmp_path / "run" / "results.jsonl").load()
    for q in qs:
        assert batched[q.id].probs == pytest.approx(alone[q.id], abs=1e-4)
        assert set(batched[q.id].probs) == set(q.letters)


def test_bad_image_gives_a_recorded_fallback_not_an_exception(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    a = ask(Services(reasoner=EvidenceReasoner()), question(0, image=bad))
    assert a.method == "fallback" and a.answer == "a"
    assert a.errors and "corrupt" in a.errors[0]
    assert [s.node for s in a.steps] == ["load_image", "finish"] and not a.steps[0].ok


@pytest.mark.slow
def test_failing_tool_is_recorded_and_the_question_still_answered() -> None:
    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": {"engine": "easyocr",
                                                                            "languages": ["ko", "en"],
                                                                            "easyocr_model_dir": "/nonexistent"}})
    a = ask(services, question(1), forced_tools=["ocr"])
    assert a.method == "evidence" and a.flags == ["no_evidence"]
    [r] = a.evidence
    assert r.tool == "ocr" and not r.ok and "korean_g2" in r.error
    assert any((s.node, s.tool) == ("run_tool", "ocr") and not s.ok for s in a.steps)


@pytest.mark.slow
def test_tool_timeout_is_recorded_as_a_failure() -> None:
    services = Services(reasoner=EvidenceReasoner(), tool_timeout=0.001, tool_settings={"ocr": {"engine": "easyocr"}})
    q = Question(id="t", image=EXAMPLES / "images" / "no_parking.jpg", text="What does the sign say?",
                 options={"a": "NO PARKING", "b": "EXIT"})
    a = ask(services, q, forced_tools=["ocr"])
    [r] = a.evidence
    assert not r.ok and "timed out" in r.error and a.method == "evidence"


@pytest.mark.slow
def test_router_choice_runs_ocr_and_the_evidence_reasoner_reads_the_sign(tmp_path: Path) -> None:
    img = EXAMPLES / "images" / "no_parking.jpg"
    q = Question(id="sign", image=img, text="표지판에 적힌 글자는?", options={"a": "NO PARKING", "b": "BUS STOP",
                                                                       "c": "ONE WAY"})
    a = ask(Services(reasoner=EvidenceReasoner(), artifacts_dir=tmp_path), q)
    assert a.route.tools == ["ocr"] and a.tools == ["ocr"]
    assert a.evidence[0].ok and a.answer == "a", a.evidence[0]


def test_bad_tool_setting_fails_that_tool_only() -> None:
    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": {"engine": "magic"}})
    a = ask(services, question(0), forced_tools=["ocr"])
    [r] = a.evidence
    assert not r.ok and "magic" in r.error and a.method == "evidence"


def test_unknown_tool_setting_fails_that_tool_only() -> None:
    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": {"engnie": "easyocr"}})
    [r] = ask(services, question(0), forced_tools=["ocr"]).evidence
    assert not r.ok and "engnie" in r.error


def test_route_and_steps_are_typed_and_old_records_still_load(tmp_path: Path) -> None:
    from agent.core.schema import Answer, Route
    from agent.runner import fallback_answer

    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": {"engine": "magic"}})  # fails fast
    a = ask(services, question(0), forced_tools=["ocr"])
    assert isinstance(a.route, Route) and (a.route.method, a.route.run, a.route.skipped) == ("forced", ["ocr"], {})
    [tool_step] = [s for s in a.steps if s.node == "run_tool"]
    assert tool_step.tool == "ocr" and not tool_step.ok and tool_step.label == "run_tool:ocr" and "run_tool:ocr" in a.timings
    assert list(a.model_dump(mode="json")["route"]) == ["tools", "reasons", "method", "run", "skipped", "scores",
                                                      "thresholds", "features", "nearest"]
    old = fallback_answer(question(1), "image missing").model_dump(mode="json") | {"route": {}}
    assert Answer.model_validate(old).route is None and Answer.model_validate(old).failed
HOSTILE_IDS = ["..", ".", "a/b", "a_b", "a\\b", "../../etc", "/abs", "", "a~b", "x" * 300, "a\x00b", "q 1", "q_1"]


@pytest.mark.parametrize(("qid", "name"), [("TEST_000", "TEST_000"), ("q-1.2", "q-1.2"), ("질문_1", "질문_1"),
                                           ("..", None), (".", None), ("a/b", None), ("x" * 300, None)])
def test_artifact_dirname_keeps_safe_ids_and_hashes_the_rest(qid: str, name: str | None) -> None:
    got = artifact_dirname(qid)
    if name is not None:
        assert got == name
    else:
        assert got != qid and "~" in got and len(got.encode()) <= 120


def test_artifact_folders_are_unique_and_stay_inside_artifacts(tmp_path: Path) -> None:
    root = tmp_path / "run" / "artifacts"
    services = Services(reasoner=EvidenceReasoner(), artifacts_dir=root)
    dirs = [services.workdir(qid) for qid in HOSTILE_IDS]
    assert len({d.resolve() for d in dirs}) == len(HOSTILE_IDS)  # a/b, a_b and a\b no longer share a folder
    assert all(d.resolve().parent == root.resolve() and d.is_dir() for d in dirs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and sorted(root.parent.iterdir()) == [root]


def test_batch_reports_every_row_and_failed_csv_has_lines_and_no_formulas(tmp_path: Path) -> None:
    from agent.data import RowError, read_questions

    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,path,question,a,b,c,d\n"
                        "ok1,images/coffee.jpg,무슨 색?,x,y,z,w\n"
                        "ok2,images/coffee.jpg,무슨 색?,x,y,z,w\n"
                        "gone,images/missing.jpg,무슨 색?,x,y,z,w\n"
                        "gap,images/coffee.jpg,무슨 색?,x,,z,w\n"
                        "=cmd|' /C calc'!A0,images/missing.jpg,무슨 색?,x,y,z,w\n", encoding="utf-8")
    rows = read_questions(csv_path, EXAMPLES)
    assert sum(isinstance(r, RowError) for r in rows) == 1
    run, done = tmp_path / "run", []
    summary = run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=[], out=tmp_path / "sub.csv",
                        on_done=lambda a: done.append(a.id))
    assert sorted(done) == sorted(["ok1", "ok2", "gone", "gap", "=cmd|' /C calc'!A0"])  # bad rows counted too
    failed = list(csv.DictReader(open(run / "failed.csv", encoding="utf-8")))
    assert [(r["id"], r["line"]) for r in failed] == [("gone", "4"), ("gap", "5"), ("'=cmd|' /C calc'!A0", "6")]
    assert "missing" in failed[0]["reason"] and summary.failed == 3
    ids = [r["id"] for r in csv.DictReader(open(tmp_path / "sub.csv", encoding="utf-8"))]
    assert ids == ["ok1", "ok2", "gone", "gap", "=cmd|' /C calc'!A0"]  # the submission keeps ids exactly
    again: list[str] = []
    run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=[], on_done=lambda a: again.append(a.id))
    assert sorted(again) == sorted(done)  # resumed rows count as well
