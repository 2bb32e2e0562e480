"""``vqa ui``: the pure parts (evidence drawing, run tables and filters, the command's checks) and, marked slow,
the app itself: served by ``vqa ui --reasoner evidence`` and driven in the system Chromium with Playwright, and
its ``/ask`` endpoint called with ``gradio_client`` against ``vqa ask --json`` on the same inputs."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.core.schema import Answer, OcrEvidence, Route, TextSpan, ToolResult
from agent.runner import ResultsLog
from agent.ui import runs, views
from agent.ui.app import parse_options

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VQA = [sys.executable, "-c", "from agent.cli import main; main()"]
SIGN = EXAMPLES / "images/shop_sign.jpg"
SIGN_QUESTION, SIGN_OPTIONS = "간판에 적힌 가게 이름은 무엇인가요?", ["김밥천국", "행복분식", "명동칼국수"]


def answer(qid: str = "q", *, gold: str | None = None, probs: dict[str, float] | None = None,
           evidence: list[ToolResult] | None = None, skipped: dict[str, str] | None = None) -> Answer:
    probs = probs or {"a": 0.2, "b": 0.8}
    return Answer(id=qid, answer=max(probs, key=probs.get), probs=probs, method="evidence",
                  tools=[r.tool for r in evidence or []], evidence=evidence or [], timings={}, question="간판은?",
                  options={"a": "김밥천국", "b": "행복분식"}, gold=gold,
                  route=Route(tools=[r.tool for r in evidence or []], method="rules", skipped=skipped or {}))


def ocr_result(*spans: tuple[str, list[float]]) -> ToolResult:
    ev = OcrEvidence(engine="tesseract", spans=[TextSpan(text=t, box=b, confidence=0.9) for t, b in spans])
    return ToolResult(tool="ocr", ok=True, evidence=ev)


# ---------------------------------------------------------------- pure parts

def test_ocr_spans_are_drawn_inside_their_boxes_only_with_hangul_labels() -> None:
    photo = Image.new("RGB", (400, 300), (255, 255, 255))
    drawn = views.draw_overlay(photo, ocr_result(("행복분식", [100, 120, 300, 200])))
    assert drawn is not None and drawn.size == photo.size
    px = np.asarray(drawn.convert("RGB")).astype(int)
    changed = np.argwhere((px != 255).any(axis=2))
    assert len(changed) > 200
    assert changed[:, 1].min() >= 95 and changed[:, 1].max() <= 305  # x: the box (and its label above it)
    assert changed[:, 0].max() <= 205 and (px[203:, :] == 255).all()  # nothing below the box
    assert np.asarray(photo).min() == 255  # the photo itself is untouched
    assert views.draw_overlay(photo, ocr_result()) is None  # no spans: nothing to draw
    failed = ToolResult(tool="ocr", ok=False, error="ToolError: tesseract is not installed")
    assert views.draw_overlay(photo, failed) is None


def test_overlays_scale_from_the_size_their_boxes_refer_to(tmp_path: Path) -> None:
    from agent.core.schema import DetectedBox, DetectEvidence

    ev = DetectEvidence(model="m", phrase="cat.", target="cat", source="english", query="cat", count=1,
                        count_probs={1: 1.0}, confidence=1.0, counts={"cat": 1}, image_size=[200, 100],
                        boxes=[DetectedBox(box=[100, 50, 200, 100], score=0.9, label="cat")])
    photo = Image.new("RGB", (400, 200), (0, 0, 0))
    [(drawn, caption)] = views.evidence_images(answer(evidence=[ToolResult(tool="detect", ok=True, evidence=ev)]),
                                              photo)
    assert caption == "detect · 1 boxes"
    changed = np.argwhere((np.asarray(drawn) != 0).any(axis=2))
    assert changed[:, 1].min() >= 195 and changed[:, 0].min() >= 75  # box at (200, 100)-(400, 200) and its label
    marked = tmp_path / "marked.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(marked)
    own = ToolResult(tool="ocr", ok=True, evidence=ocr_result(("x", [0, 0, 5, 5])).evidence,
                     artifacts={"annotated": str(marked), "spans": str(tmp_path / "spans.json")})
    [(shown, caption)] = views.evidence_images(answer(evidence=[own]), photo)  # the tool's own picture wins
    assert caption == "ocr · annotated" and np.asarray(shown)[0, 0].tolist() == [1, 2, 3]


def test_retrieved_neighbours_become_thumbnails_with_scores_and_table_rows(tmp_path: Path) -> None:
    from agent.core.schema import RetrievedEntry, RetrieveEvidence

    (tmp_path / "images").mkdir()
    Image.new("RGB", (800, 400), (200, 10, 10)).save(tmp_path / "images" / "sign.jpg")
    entries = [RetrievedEntry(id="TRAIN_1", kind="question", score=0.91, text="간판 이름은?", answer="a",
                              answer_text="행복분식", image="images/sign.jpg"),
               RetrievedEntry(id="P_2", kind="passage", score=0.5, text="A passage.")]
    ev = RetrieveEvidence(kb="kb", embedder="e5", entries=entries)
    thumbs, rows = views.neighbours(answer(evidence=[ToolResult(tool="retrieve", ok=True, evidence=ev)]),
                                    [tmp_path / "elsewhere", tmp_path])
    [(thumb, caption)] = thumbs  # the passage has no image
    assert caption == "TRAIN_1 · score 0.91 · 행복분식" and thumb.size == (256, 128)
    assert rows == [["TRAIN_1", "question", "0.910", "간판 이름은?", "행복분식"], ["P_2", "passage", "0.500", "A passage.", ""]]


def test_the_page_text_of_an_answer_shows_route_failures_and_bars() -> None:
    bad = ToolResult(tool="som", ok=False, error="ToolError: no segmenter\nTraceback (most recent call last): ...")
    a = answer(evidence=[ocr_result(("행복분식", [0, 0, 9, 9])), bad], skipped={"detect": "unavailable: no weights"})
    assert views.probabilities(a) == {"a. 김밥천국": 0.2, "b. 행복분식": 0.8}
    assert views.verdict(a).startswith("### b. 행복분식\nprobability 80.0%")
    assert views.tool_failures(a) == ["som failed: ToolError: no segmenter", "detect skipped: unavailable: no weights"]
    text = views.route_text(a)
    assert "`detect` skipped: unavailable: no weights" in text and "'행복분식'" in text and "Traceback" not in text
    assert parse_options("행복분식\n\n  김밥천국 \n") == ["행복분식", "김밥천국"]


def test_a_run_directory_becomes_rows_with_filters(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "results.jsonl")
    log.append(answer("right", gold="b", evidence=[ocr_result(("x", [0, 0, 1, 1]))]))
    log.append(answer("wrong", gold="a", probs={"a": 0.45, "b": 0.55},
                      evidence=[ToolResult(tool="som", ok=False, error="no segmenter")]))
    log.append(answer("nogold", probs={"a": 0.6, "b": 0.4}))
    with open(tmp_path / "failed.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["id", "line", "reason", "fallback_answer"], ["gone", "5", "image missing: x", "a"]])
    rows = runs.load_run(tmp_path)
    assert [r.cells() for r in rows] == [
        ["right", "b", "b", "yes", 0.8, "ocr", ""], ["wrong", "b", "a", "no", 0.55, "som", "som: no segmenter"],
        ["nogold", "a", "", "", 0.6, "", ""], ["gone", "a", "", "", 0.0, "", "question: image missing: x"]]
    ids = lambda rs: [r.id for r in rs]  # noqa: E731
    assert ids(runs.filtered(rows, wrong=True)) == ["wrong"]
    assert ids(runs.filtered(rows, failed=True)) == ["wrong", "gone"]
    assert ids(runs.filtered(rows, low=0.6)) == ["wrong", "gone"]
    assert ids(runs.filtered(rows, tool="ocr")) == ["right"] and runs.tools_of(rows) == ["ocr", "som"]
    assert runs.ablation(tmp_path) == ([], [], None)
    with pytest.raises(Exception, match="expected a run directory with results.jsonl"):
        runs.load_run(tmp_path / "nothing")


def test_the_runs_tab_shows_the_ablation_table_and_plot_when_the_run_has_them(tmp_path: Path) -> None:
    from agent.ui.runs_tab import apply_filters, open_run

    ResultsLog(tmp_path / "results.jsonl").append(answer("q1", gold="a"))
    rows, summary, table, tools, qids, _, box, ablation, plot = open_run(str(tmp_path))
    assert summary.startswith("**1 questions**") and "accuracy 0.0% (0/1)" in summary
    assert table == [["q1", "b", "a", "no", 0.8, "", ""]] and qids["choices"] == ["q1"] and plot is None
    assert box["visible"] is False
    (tmp_path / "ablation.csv").write_text("arm,n,accuracy\nnone,1,0.0\nrouter,1,1.0\n", encoding="utf-8")
    Image.new("RGB", (64, 32), (9, 9, 9)).save(tmp_path / "ablation.png")
    *_, box, ablation, plot = open_run(str(tmp_path))
    assert box["visible"] is True and ablation["value"] == [["none", "1", "0.0"], ["router", "1", "1.0"]]
    assert ablation["headers"] == ["arm", "n", "accuracy"] and plot.size == (64, 32)
    assert apply_filters(rows, True, False, 0, "any tool")[0] == table
    assert apply_filters(rows, False, True, 0, "any tool")[0] == []


def test_the_runs_tab_opens_an_eval_run_and_recovers_from_a_bad_path(tmp_path: Path) -> None:
    from agent.ui.runs_tab import open_run

    for arm, letter in (("none", "a"), ("router", "b")):  # as vqa eval --ablate lays them out
        (tmp_path / "arms" / arm).mkdir(parents=True)
        ResultsLog(tmp_path / "arms" / arm / "results.jsonl").append(answer("q1", gold="b", probs={letter: 1.0}))
    (tmp_path / "ablation.csv").write_text("arm,n,accuracy\nnone,1,0.0\nrouter,1,1.0\n", encoding="utf-8")
    _, summary, table, *_, box, ablation, _ = open_run(str(tmp_path / "missing"))
    assert summary.startswith("**error:**") and "results.jsonl" in summary and table == [] and box["visible"] is False
    _, summary, table, *_, box, ablation, _ = open_run(str(tmp_path))  # the next path opens as if nothing happened
    assert "accuracy 100.0% (1/1)" in summary and table[0][:4] == ["q1", "b", "b", "yes"]
    assert box["visible"] is True and ablation["value"][1] == ["router", "1", "1.0"]


def run_vqa(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*VQA, *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_vqa_ui_refuses_an_open_host_without_auth_and_explains_a_missing_gradio() -> None:
    from agent.cli.ui import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.invalid"]))
    p = run_vqa("ui", "--host", "0.0.0.0", "--reasoner", "evidence")
    assert p.returncode == 2 and "error: --host 0.0.0.0 is reachable from other machines" in p.stderr
    p = run_vqa("ui", "--auth", "nopassword", "--reasoner", "evidence")
    assert p.returncode == 2 and "--auth: expected USER:PASSWORD" in p.stderr
    no_gradio = "import sys; sys.modules['gradio'] = None; from agent.cli import main; sys.argv = ['vqa', 'ui']; main()"
    p = subprocess.run([sys.executable, "-c", no_gradio], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["error: vqa ui needs gradio, which is not installed: pip install "
                                             "'vqa-orchestrator[ui]' (in a checkout: pip install -e '.[ui]')"]


# ---------------------------------------------------------------- the app in a browser (slow)

@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def server(ui_home: Path):
    from agent.dev.ui_driver import serve

    env = {"VQA_DATA_DIR": str(ui_home / "data"), "HF_HUB_OFFLINE": "1", "TMPDIR": str(ui_home),
           "GRADIO_TEMP_DIR": str(ui_home / "gradio"), "OMP_NUM_THREADS": "1"}
    with serve(["--reasoner", "evidence", "--tool-timeout", "600", "--run-dir", str(ui_home / "asks")], log=ui_home / "ui.log",
               env=env) as url:
        yield url


@pytest.fixture(scope="module")
def page(server: str):
    from agent.dev.ui_driver import browser

    with browser() as p:
        p.goto(server)
        yield p


@pytest.mark.slow
def test_an_ocr_question_in_the_browser_shows_the_answer_bars_and_the_drawn_evidence(page) -> None:
    from agent.dev.ui_driver import IMAGES_DECODED, ask

    ask(page, SIGN, SIGN_QUESTION, SIGN_OPTIONS)
    assert page.locator("#answer h3").inner_text() == "b. 행복분식"
    bars = page.locator("#probs").inner_text()
    assert all(f"{k}. {t}" in bars for k, t in zip("abc", SIGN_OPTIONS))
    assert "ocr" in page.locator("#route").inner_text() and "'HAPPY SNACK'" in page.locator("#route").inner_text()
    images = page.locator("#evidence img")
    images.first.wait_for(timeout=60_000)
    page.wait_for_function(IMAGES_DECODED, timeout=60_000)
    assert images.first.evaluate("i => i.complete && i.naturalWidth") >= 500  # the photo with the spans drawn
    assert "run_tool:ocr" in page.locator("#timings").inner_text()
    assert "Traceback" not in page.content()


@pytest.mark.slow
def test_a_tool_that_cannot_run_is_one_line_in_the_page_and_bad_options_a_message(page) -> None:
    from agent.dev.ui_driver import ask

    ask(page, EXAMPLES / "images/coins.jpg", "사진 속 동전은 모두 몇 개인가요?", ["18개", "20개", "24개"])
    route = page.locator("#route").inner_text()  # Grounding DINO is not on the machine: detect cannot load
    [warning] = [line for line in route.splitlines() if line.startswith("⚠")]
    assert re.match(r"⚠ detect (failed|skipped): unavailable: ", warning) and len(warning) <= 330
    page.locator("#ask-options textarea").fill("only one")
    page.locator("#ask-button").click()
    page.get_by_text("expected 2-5 options, one per line, found 1").first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()


@pytest.mark.slow
def test_chat_turns_about_one_image_go_into_the_vqa_chat_store(page, ui_home: Path) -> None:
    from agent.chat import ChatStore
    from agent.dev.ui_driver import chat

    chat(page, EXAMPLES / "images/chelsea.jpg", "What animal is shown? | dog | cat")
    chat(page, None, "What colour are its eyes? | blue | green")
    assert page.locator("#chat .bot-row", has_text="tools:").count() == 2
    store = ChatStore(ui_home / "asks" / "chat.sqlite")  # vqa chat's store: RUN/chat.sqlite with --run-dir RUN
    try:
        [name] = store.sessions()
        state = store.state(name)
    finally:
        store.close()
    turns = state["turns"]
    assert state["settings"] == {"reasoner": "evidence", "tool_timeout": 600.0}  # what vqa chat --resume reuses
    assert [t["question"] for t in turns] == ["What animal is shown?", "What colour are its eyes?"]
    assert turns[0]["options"] == {"a": "dog", "b": "cat"} and turns[0]["image"] == turns[1]["image"]


@pytest.fixture(scope="module")
def finished_run(ui_home: Path) -> Path:
    lines = (EXAMPLES / "train.csv").read_text(encoding="utf-8").splitlines()
    data = ui_home / "two.csv"
    data.write_text("\n".join([lines[0], *(ln for ln in lines if ln.startswith(("TRAIN_008,", "TRAIN_010,")))]) + "\n",
                    encoding="utf-8")
    run = ui_home / "run"
    p = run_vqa("batch", str(data), "--images", str(EXAMPLES), "--run-dir", str(run), "--out", str(run / "sub.csv"),
                "--reasoner", "evidence", env={"HF_HUB_OFFLINE": "1", "TMPDIR": str(ui_home)})
    assert p.returncode == 0, p.stderr
    return run


@pytest.mark.slow
def test_the_runs_tab_lists_a_finished_run_filters_it_and_shows_a_trace(page, finished_run: Path) -> None:
    from playwright.sync_api import expect

    from agent.dev.ui_driver import open_run

    answers = ResultsLog(finished_run / "results.jsonl").load()
    wrong = [a.id for a in answers.values() if a.answer != a.gold]
    open_run(page, finished_run, "TRAIN_008")
    table = page.locator("#runs-table")
    assert "TRAIN_008" in table.inner_text() and "TRAIN_010" in table.inner_text()
    assert f"accuracy {1 - len(wrong) / 2:.1%}" in page.locator("#runs-summary").inner_text()
    trace = page.frame_locator("#runs-trace iframe")
    assert "사진 속 고양이의 눈은 무슨 색인가요?" in trace.locator('[data-qid="TRAIN_008"]').inner_text()
    page.locator("#filter-wrong input").check()
    for qid in ("TRAIN_008", "TRAIN_010"):  # the table redrawn with the wrong answers only (waited for, not timed)
        shown = expect(table).to_contain_text if qid in wrong else expect(table).not_to_contain_text
        shown(qid, use_inner_text=True, timeout=60_000)
    shown = [i for i in ("TRAIN_008", "TRAIN_010") if i in table.inner_text()]
    assert shown == sorted(wrong)


@pytest.mark.slow
def test_the_ask_endpoint_answers_like_vqa_ask(server: str, ui_home: Path) -> None:
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    record = client.predict(handle_file(str(SIGN)), SIGN_QUESTION, "\n".join(SIGN_OPTIONS), api_name="/ask")
    args = [c for o in SIGN_OPTIONS for c in ("-c", o)]
    p = run_vqa("ask", str(SIGN), SIGN_QUESTION, *args, "--reasoner", "evidence", "--json",
                env={"HF_HUB_OFFLINE": "1", "TMPDIR": str(ui_home)})
    assert p.returncode == 0, p.stderr
    cli = json.loads(p.stdout)
    assert Answer.model_validate(record).answer == cli["answer"] == "b"
    assert record["tools"] == cli["tools"] and record["options"] == cli["options"]
    assert record["probs"] == pytest.approx(cli["probs"], abs=1e-6)
    with pytest.raises(Exception, match="expected 2-5 options, one per line, found 1"):
        client.predict(handle_file(str(SIGN)), SIGN_QUESTION, "행복분식", api_name="/ask")


def test_a_chat_error_keeps_the_conversation_and_the_line(tmp_path: Path) -> None:
    from agent.api import Orchestrator
    from agent.ui.chat_tab import ChatHandlers

    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 32), (200, 20, 20)).save(photo)
    with Orchestrator(reasoner="evidence", tools="none") as engine:
        h = ChatHandlers(engine, tmp_path / "chat.db", tmp_path / "images", {})
        name, shown, box, _ = h.send("What colour? | red | blue", str(photo), None)
        assert box == "" and len(shown) == 2
        name2, after, box, _ = h.send("What colour, without options?", None, name)
        assert name2 == name and after[:2] == shown and box == "What colour, without options?"
        assert after[2]["role"] == "assistant" and after[2]["content"].startswith("⚠ error: ")
