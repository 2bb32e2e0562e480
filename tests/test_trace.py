"""The trace: schema and reader, what a run writes (node order, images as files, cached tool outputs, rotations,
failures), the terminal tree, the HTML page rendered by headless Chromium, and the OpenTelemetry export."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from agent.cache import ToolCache, cache_key, key_parts
from agent.calibration import RotatingReasoner, TemperatureReasoner, rotate, unrotate
from agent.core.errors import ConfigError
from agent.core.images import load_image
from agent.core.probs import apply_temperature
from agent.core.schema import OcrEvidence, Question, TextSpan, ToolResult
from agent.data import RowError
from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import EvidenceReasoner
from agent.runner import ResultsLog, run_batch
from agent.services import Services
from agent.trace.events import TRACE_VERSION, TraceError, TraceEvent, TraceWriter
from agent.trace.export import OtelSink, sinks_from_env
from agent.trace.read import questions, read_trace
from agent.trace.render import render_question

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VQA = str(Path(sys.executable).parent / "vqa")
SIGN = EXAMPLES / "images" / "no_parking.jpg"
OCR_SETTINGS = {"engine": "tesseract", "tesseract_boxes": "tesseract"}
SPANS = [TextSpan(text="NO PARKING", box=[380.0, 300.0, 640.0, 360.0], confidence=0.93),
         TextSpan(text="PARKING", box=[700.0, 420.0, 860.0, 470.0], confidence=0.61)]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def sign_question() -> Question:
    return Question(id="sign", image=SIGN, text="노란 펜스에 붙은 안내문에 적힌 문구는 무엇인가요?",
                    options={"a": "NO PARKING", "b": "BUS STOP", "c": "ONE WAY"}, answer="a")


def seed_ocr(cache: ToolCache, tmp: Path) -> None:
    """A recorded OCR output for the sign (spans and the annotated image), stored under the key the run will use."""
    from tools.ocr import OcrTool

    img = load_image(SIGN)
    drawn = img.image.copy()
    d = ImageDraw.Draw(drawn)
    for s in SPANS:
        d.rectangle(s.box, outline=(228, 87, 46), width=4)
    (tmp / "rec").mkdir(exist_ok=True)
    drawn.save(tmp / "rec" / "ocr.jpg")
    result = ToolResult(tool="ocr", ok=True, evidence=OcrEvidence(engine="tesseract:kor+eng", spans=SPANS),
                        artifacts={"annotated": str(tmp / "rec" / "ocr.jpg")}, seconds=3.0, settings=OCR_SETTINGS)
    tool = OcrTool(**OCR_SETTINGS)
    cache.put(cache_key(key_parts(tool, img, sign_question())), result)


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory) -> Path:
    """A batch over: the sign (OCR served from the cache), a question without tools, a missing image, a bad row."""
    tmp = tmp_path_factory.mktemp("traced")
    cache = ToolCache(tmp / "cache")
    seed_ocr(cache, tmp)
    run = tmp / "run"
    rows = [sign_question(),
            Question(id="cat", image=EXAMPLES / "images" / "chelsea.jpg", text="What animal is shown?",
                     options={"a": "dog", "b": "cat"}, answer="b"),
            Question(id="gone", image=EXAMPLES / "images" / "missing.jpg", text="무엇인가요?",
                     options={"a": "가", "b": "나"}),
            RowError(id="broken", line=5, reason="bad_options", message="line 5: expected 2-5 options")]
    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": OCR_SETTINGS}, cache=cache,
                        artifacts_dir=run / "artifacts")
    run_batch(rows, services, run, forced_tools=["ocr"], batch_size=2)
    assert (cache.computed, cache.served) == (1, 1)  # the sign served from the seed; the cat computed for real
    return run


def test_event_schema_round_trips_and_newer_versions_are_refused(tmp_path: Path) -> None:
    e = TraceEvent(run="r1", qid="q", seq=0, kind="node", node="run_tool", tool="ocr", start=1.0, end=1.5,
                   cached=True, outputs={"ok": True})
    assert TraceEvent.model_validate_json(e.model_dump_json()) == e
    assert e.v == TRACE_VERSION and e.seconds == 0.5 and e.label == "run_tool:ocr"
    path = tmp_path / "trace.jsonl"
    newer = json.loads(e.model_dump_json()) | {"v": TRACE_VERSION + 1}
    path.write_text(e.model_dump_json() + "\n" + json.dumps(newer) + "\n")
    with pytest.raises(TraceError, match="newer"):
        read_trace(path)


def test_a_torn_last_line_is_dropped_and_a_torn_middle_line_is_an_error(tmp_path: Path) -> None:
    e = TraceEvent(run="r1", qid="q", seq=0, kind="question", start=1.0, end=1.0)
    path = tmp_path / "trace.jsonl"
    path.write_text(e.model_dump_json() + "\n" + e.model_dump_json()[:30])
    assert read_trace(path) == [e]
    TraceWriter(path).emit(e)  # opening for append repairs the torn line first
    assert read_trace(path) == [e, e]
    path.write_text(e.model_dump_json()[:30] + "\n" + e.model_dump_json() + "\n")
    with pytest.raises(TraceError, match="one JSON event per line"):
        read_trace(path)


def test_a_run_traces_every_node_in_order_with_cached_tool_outputs(traced_run: Path) -> None:
    text = (traced_run / "trace.jsonl").read_text()
    assert "base64" not in text and max(len(line) for line in text.splitlines()) < 20_000
    views = {v.qid: v for v in questions(read_trace(traced_run / "trace.jsonl"))}
    assert set(views) == {"sign", "cat", "gone", "broken"}
    sign = views["sign"]
    assert [e.label for e in sign.events] == ["question", "load_image", "route", "run_tool:ocr", "reason", "finish"]
    assert [e.seq for e in sign.events] == list(range(6))
    assert all(e.start <= e.end for e in sign.events)
    assert sign.question["gold"] == "a" and sign.question["forced_tools"] == ["ocr"]
    load = sign.first("node", "load_image")
    assert load.outputs["size"] == [1024, 768] and (traced_run / load.outputs["file"]).is_file()
    with Image.open(traced_run / load.outputs["file"]) as im:
        assert im.format == "JPEG" and im.size == (1024, 768)
    [tool] = sign.nodes("run_tool")
    assert tool.cached is True and tool.outputs["cached"] is True and tool.inputs["settings"] == OCR_SETTINGS
    assert tool.outputs["evidence"]["spans"][0]["text"] == "NO PARKING"
    assert tool.outputs["artifacts"]["annotated"] == "artifacts/sign/ocr.jpg"
    reason = sign.first("node", "reason")
    assert reason.outputs["method"] == "evidence" and max(reason.outputs["probs"], key=reason.outputs["probs"].get) == "a"
    assert reason.outputs["reasoner"] == "evidence:sharpness=6,min_support=0.5" and reason.outputs["template"] is None
    answers = ResultsLog(traced_run / "results.jsonl").load()
    assert answers["sign"].reasoner == reason.outputs["reasoner"]  # what produced the answer is in its record
    assert sign.answer["answer"] == answers["sign"].answer == "a" and sign.answer["probs"] == answers["sign"].probs
    cat_tool = views["cat"].first("node", "run_tool")
    assert cat_tool.cached is False  # computed here: nothing was seeded for it
    gone = views["gone"]
    assert [e.label for e in gone.events] == ["question", "load_image", "finish"]
    assert not gone.events[1].ok and "missing" in gone.events[1].error and gone.answer["method"] == "fallback"
    [err] = views["broken"].events
    assert err.kind == "error" and "bad_options" in err.error


def test_the_terminal_tree_shows_route_tools_reasoner_and_answer(traced_run: Path) -> None:
    from rich.console import Console

    [sign] = questions(read_trace(traced_run / "trace.jsonl"), qid="sign")
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(render_question(sign))
    text = console.export_text()
    for needle in ("sign", "answer a", "gold a ✓", "load_image", "route", "tools: ocr (by forced)", "run_tool:ocr",
                   "cached", "'NO PARKING'", "reason", "finish"):
        assert needle in text, (needle, text)


def test_rotation_maps_options_and_gold_both_ways() -> None:
    q = Question(id="r", text="q?", options={"a": "X", "b": "Y", "c": "Z"}, answer="a")
    r1 = rotate(q, 1)
    assert r1.options == {"a": "Y", "b": "Z", "c": "X"} and r1.answer == "c"
    assert rotate(q, 3) == q
    # rotated probabilities a(Y)=.5 b(Z)=.3 c(X)=.2 -> original X=.2 Y=.5 Z=.3
    assert unrotate({"a": 0.5, "b": 0.3, "c": 0.2}, "abc", 1) == {"a": 0.2, "b": 0.5, "c": 0.3}


def test_debiasing_an_order_free_reasoner_changes_nothing_and_records_every_rotation() -> None:
    q = sign_question()
    ocr = ToolResult(tool="ocr", ok=True, evidence=OcrEvidence(engine="t", spans=SPANS))
    req = ReasonRequest(question=q, image=None, results=[ocr])
    plain = EvidenceReasoner().decide([req])[0]
    seen = {}
    rot = RotatingReasoner(EvidenceReasoner(), average=True, on_rotations=lambda qid, r, s, e: seen.update({qid: r}))
    [d] = rot.decide([req])
    assert d.probs == pytest.approx(plain.probs) and d.flags == [*plain.flags, "debiased"]
    assert [r["order"] for r in seen["sign"]] == [list("abc"), list("bca"), list("cab")]
    assert [r["chosen"] for r in seen["sign"]] == ["a", "a", "a"]  # always NO PARKING, wherever it is shown
    assert [r["chosen_position"] for r in seen["sign"]] == ["a", "c", "b"]
    tempered = TemperatureReasoner(EvidenceReasoner(), 2.0).decide([req])[0]
    assert tempered.probs == pytest.approx(apply_temperature(plain.probs, 2.0))


def test_batch_debias_writes_rotation_events(tmp_path: Path) -> None:
    q = Question(id="cat", image=EXAMPLES / "images" / "chelsea.jpg", text="What animal?",
                 options={"a": "dog", "b": "cat", "c": "fox", "d": "cow"})
    run_batch([q], Services(reasoner=EvidenceReasoner()), tmp_path, forced_tools=[], debias=True)
    [view] = questions(read_trace(tmp_path / "trace.jsonl"))
    rot = view.first("rotations")
    assert [r["shift"] for r in rot.outputs["rotations"]] == [0, 1, 2, 3]
    assert "debiased" in view.first("node", "reason").outputs["flags"]
    assert [e.label for e in view.events][-3:] == ["rotations", "reason", "finish"]


def test_export_to_opentelemetry_mirrors_the_events_as_spans(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    writer = TraceWriter(tmp_path / "trace.jsonl", sinks=[OtelSink(provider.get_tracer("test"))])
    q = Question(id="cat", image=EXAMPLES / "images" / "chelsea.jpg", text="What animal?",
                 options={"a": "dog", "b": "cat"})
    run_batch([q], Services(reasoner=EvidenceReasoner()), tmp_path, forced_tools=[], trace=writer)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"vqa.question", "vqa.load_image", "vqa.route", "vqa.reason", "vqa.finish"}
    root = spans["vqa.question"]
    events = {e.label: e for e in read_trace(tmp_path / "trace.jsonl")}
    for name in ("load_image", "route", "reason", "finish"):
        s = spans[f"vqa.{name}"]
        assert s.parent.span_id == root.context.span_id and s.context.trace_id == root.context.trace_id
        assert (s.start_time, s.end_time) == (int(events[name].start * 1e9), int(events[name].end * 1e9))
    assert root.attributes["vqa.answer"] == events["finish"].outputs["answer"]


def test_export_is_off_by_default_and_names_are_checked(monkeypatch) -> None:
    monkeypatch.delenv("VQA_TRACE_EXPORT", raising=False)
    assert sinks_from_env() == []
    monkeypatch.setenv("VQA_TRACE_EXPORT", "zipkin")
    with pytest.raises(ConfigError, match="otel"):
        sinks_from_env()


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: the HTML trace test renders the page headless. Install it with "
                    "`apt-get install chromium` (`make system-deps` does).")
    return exe


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


def test_trace_show_prints_trees_and_the_html_page_renders_in_headless_chromium(traced_run: Path,
                                                                               tmp_path: Path) -> None:
    p = subprocess.run([VQA, "trace", "show", str(traced_run), "--id", "sign"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "run_tool:ocr" in p.stdout and "cached" in p.stdout and "answer a" in p.stdout
    page = tmp_path / "trace.html"
    p = subprocess.run([VQA, "trace", "show", str(traced_run), "--html", str(page)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    html = page.read_text(encoding="utf-8")
    assert "src=\"file:" not in html and "href=\"images/" not in html  # self-contained: images are embedded
    dom = run_chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    d = dom.stdout
    assert 'data-questions="4"' in d  # sign, cat, gone, broken
    assert "bad_options" in d.split('data-qid="broken"')[1] and "missing" in d.split('data-qid="gone"')[1]
    images = d.split('data-images-ok="')[1].split('"')[0], d.split('data-images-total="')[1].split('"')[0]
    assert images[0] == images[1] and int(images[0]) >= 3, images  # every embedded image decoded
    sign = d.split('data-qid="sign"')[1].split("</section>")[0]
    for k, prob in ResultsLog(traced_run / "results.jsonl").load()["sign"].probs.items():
        assert f'data-letter="{k}" data-p="{prob:.4f}"' in sign
    assert sign.count('class="bar"') == 3
    assert sign.count('class="box-group ocr-span"') == 2 and 'data-label="NO PARKING"' in sign
    assert 'class="marked"' in sign and "노란 펜스에 붙은 안내문" in sign
    assert sign.count('class="ocr-span-row"') == 2 and 'class="tag cached"' in sign
    shot = tmp_path / "shot.png"
    r = run_chromium("--window-size=1200,1400", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1200, 1400)
        colours = im.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 1000  # the photo is there, not a blank page


OTEL_MAIN = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

spans = open(sys.argv[1], "w", encoding="utf-8")
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=spans, formatter=lambda s: s.name + "\\n")))
trace.set_tracer_provider(provider)  # what a user's OpenTelemetry set-up does before the command runs
sys.argv = ["vqa", *sys.argv[2:]]
from agent.cli import main

main()
"""


@pytest.mark.parametrize("command", ["ask", "batch", "eval"])
def test_every_tracing_command_exports_its_spans_when_asked(tmp_path: Path, command: str) -> None:
    data = tmp_path / "train.csv"
    lines = (EXAMPLES / "train.csv").read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join([lines[0], *(ln for ln in lines if ln.startswith(("TRAIN_008,", "TRAIN_010,")))]) + "\n",
                    encoding="utf-8")
    run = tmp_path / "run"
    args = {"ask": ["ask", SIGN, "What does it say?", "-c", "NO PARKING", "-c", "BUS STOP", "--tools", "none",
                    "--run-dir", run],
            "batch": ["batch", data, "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir", run, "--tools",
                      "none"],
            "eval": ["eval", data, "--images", EXAMPLES, "--run-dir", run]}[command]
    spans = tmp_path / "spans.txt"
    p = subprocess.run([sys.executable, "-c", OTEL_MAIN, str(spans), *map(str, args), "--reasoner", "evidence"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "VQA_TRACE_EXPORT": "otel"})
    assert p.returncode == 0, p.stderr
    names = spans.read_text(encoding="utf-8").splitlines()
    asked = {e.qid for e in read_trace(run / "trace.jsonl") if e.kind == "question"}
    assert names.count("vqa.question") == len(asked) == (1 if command == "ask" else 2)
    assert names.count("vqa.finish") == len(asked) and "vqa.reason" in names
def test_html_embeds_only_image_files_inside_the_run_directory(traced_run: Path, tmp_path: Path) -> None:
    from agent.trace.html import render_html

    run = tmp_path / "run"
    shutil.copytree(traced_run, run)
    secret = tmp_path / "secret.png"  # an image outside the run directory
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    (run / "link.png").symlink_to(secret)
    edited, names = [], iter(["/etc/passwd", str(secret), "link.png", "results.jsonl"])
    for line in (run / "trace.jsonl").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["kind"] == "node" and e["node"] == "load_image" and e["outputs"].get("file") and e["qid"] == "sign":
            e["outputs"]["file"] = next(names)
        elif e["kind"] == "node" and e.get("outputs", {}).get("artifacts") and e["qid"] == "sign":
            e["outputs"]["artifacts"] = {"a": next(names), "b": next(names), "c": next(names)}
        edited.append(json.dumps(e))
    (run / "trace.jsonl").write_text("\n".join(edited) + "\n", encoding="utf-8")
    html = render_html(questions(read_trace(run / "trace.jsonl")), run, title="edited")
    sign = html.split('data-qid="sign"')[1].split("</section>")[0]
    assert 'class="marked"' not in sign and "photo-image" not in sign  # nothing of the edited paths embedded
    assert "not embedded: /etc/passwd is outside the run directory" in sign
    assert f"not embedded: {secret} is outside" in sign and "not embedded: link.png is outside" in sign
    assert "not embedded: results.jsonl is not an image file" in sign
    passwd = Path("/etc/passwd").read_bytes() if Path("/etc/passwd").is_file() else b""
    for leaked in (passwd[:30], secret.read_bytes()[:30]):  # 30 bytes: the exact start of the file's base64
        assert not leaked or base64.b64encode(leaked).decode() not in html
    cat = html.split('data-qid="cat"')[1].split("</section>")[0]
    assert "photo-image" in cat and "data:image/jpeg;base64," in cat  # files inside the run are still embedded
