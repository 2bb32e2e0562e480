"""The tool-output cache: what the key depends on, that failures are never stored, that interrupted writes are
never served, and (slow) that a real OCR run is computed once and then served with its artifact."""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path

import pytest

import agent.cache as cache_mod
from agent.cache import ToolCache, cache_key, key_parts, open_cache
from agent.core.images import load_image
from agent.core.schema import OcrEvidence, Question, TextSpan, ToolResult
from tools.base import Tool
from tools.ocr import OcrTool

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIGN = EXAMPLES / "images" / "no_parking.jpg"
FAST_OCR = {"engine": "tesseract", "tesseract_boxes": "tesseract"}


class SubclassedOcrTool(OcrTool):
    """The same tool defined in another source file: its code hash differs."""


def question(**kw) -> Question:
    base = {"id": "q1", "image": SIGN, "text": "What does the sign say?", "options": {"a": "NO PARKING", "b": "EXIT"}}
    return Question(**{**base, **kw})


@pytest.fixture(scope="module")
def sign():
    return load_image(SIGN)


@pytest.fixture(scope="module")
def coins():
    return load_image(EXAMPLES / "images" / "coins.jpg")


def ocr_result(artifact: Path | None = None) -> ToolResult:
    ev = OcrEvidence(engine="tesseract:eng", spans=[TextSpan(text="NO PARKING", box=[1, 2, 30, 40], confidence=0.9)])
    return ToolResult(tool="ocr", ok=True, evidence=ev, artifacts={"annotated": str(artifact)} if artifact else {},
                      seconds=2.5, settings=FAST_OCR)


def test_the_key_is_stable_and_ignores_the_order_of_settings(sign) -> None:
    a = key_parts(OcrTool(engine="tesseract", tesseract_boxes="tesseract"), sign, question())
    b = key_parts(OcrTool(tesseract_boxes="tesseract", engine="tesseract"), sign, question())
    assert cache_key(a) == cache_key(b)
    assert a["image_sha256"] == sign.sha256 and a["image_size"] == [1024, 768] and a["tool"] == "ocr"
    assert len(a["tool_source"]) == 64 and a["question"] == {"engines": [["tesseract", ["en"]]]}  # what ocr reads


@pytest.mark.parametrize("change", ["image", "size", "settings", "fingerprint", "version", "code", "question_text",
                                    "question_id", "options", "peers"])
def test_everything_that_determines_the_output_changes_the_key(change: str, sign, coins) -> None:
    tool, img, q, peers = OcrTool(**FAST_OCR), sign, question(), None
    base = cache_key(key_parts(tool, img, q, peers))
    if change == "image":
        img = coins
    elif change == "size":  # the same file, a smaller working copy
        img = load_image(SIGN, max_pixels=200_000)
    elif change == "settings":
        tool = OcrTool(**FAST_OCR, min_confidence=0.5)
    elif change == "fingerprint":
        tool.fingerprint = "model@abc123"
    elif change == "version":
        tool.version = "2"
    elif change == "code":
        tool = SubclassedOcrTool(**FAST_OCR)
    elif change == "question_text":
        q = question(text="표지판에 적힌 글자는?")
    elif change == "question_id":
        tool.cache_inputs = functools.partial(Tool.cache_inputs, tool)  # a tool that reads the whole question
        base = cache_key(key_parts(tool, img, q, peers))
        q = question(id="q2")
    elif change == "options":
        tool.cache_inputs = functools.partial(Tool.cache_inputs, tool)
        base = cache_key(key_parts(tool, img, q, peers))
        q = question(options={"a": "EXIT", "b": "NO PARKING"})
    elif change == "peers":
        peers = {"ocr": OcrTool(engine="easyocr")}
    assert cache_key(key_parts(tool, img, q, peers)) != base


def test_a_tool_may_narrow_what_it_reads_of_the_question(sign) -> None:
    tool = OcrTool(**FAST_OCR)
    tool.cache_inputs = lambda q: {"language": q.language}
    same = [cache_key(key_parts(tool, sign, question(id=i, text=t))) for i, t in (("q1", "What is it?"),
                                                                                   ("q2", "What does it say?"))]
    assert same[0] == same[1]
    assert cache_key(key_parts(tool, sign, question(text="무엇인가요?"))) != same[0]


def test_ocr_reads_only_which_engines_read_the_photo(sign) -> None:
    """OCR's output depends on the image, its settings and the engines the question's scripts call for: not on the
    question's id or wording, so questions about one photo share one reading."""
    tool = OcrTool()  # auto: one engine per script of the question and its options
    key = lambda **kw: cache_key(key_parts(tool, sign, question(**kw)))  # noqa: E731
    assert key() == key(id="q2", text="Which word is on the sign?", options={"a": "EXIT", "b": "STOP", "c": "GO"})
    assert key(options={"a": "주차 금지", "b": "출구"}) != key()  # Hangul options need a Korean reading
    assert key_parts(tool, sign, question())["question"] == {"engines": [["easyocr", ["en"]]]}


def test_rewriting_a_folder_named_in_the_settings_invalidates(tmp_path: Path, sign) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "manifest.json").write_text("{}")
    tool = OcrTool(**FAST_OCR)
    tool.settings = {**tool.settings, "kb": str(kb)}
    before = cache_key(key_parts(tool, sign, question()))
    (kb / "manifest.json").write_text('{"entries": 2}')
    assert cache_key(key_parts(tool, sign, question())) != before


def test_a_stored_result_is_served_with_cached_true_and_its_artifact_copied(tmp_path: Path) -> None:
    drawn = tmp_path / "work1" / "ocr.jpg"
    drawn.parent.mkdir()
    drawn.write_bytes(b"\xff\xd8 jpeg bytes")
    c = ToolCache(tmp_path / "cache")
    c.put("ab" * 32, ocr_result(drawn), {"tool": "ocr"})
    drawn.unlink()  # the run folder it came from may be gone
    got = c.get("ab" * 32, tmp_path / "work2")
    assert got is not None and got.cached and got.ok
    assert got.evidence.spans[0].text == "NO PARKING" and got.settings == FAST_OCR
    assert got.artifacts == {"annotated": str(tmp_path / "work2" / "ocr.jpg")}
    assert (tmp_path / "work2" / "ocr.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"
    entry = json.loads((tmp_path / "cache" / "ab" / f"{'ab' * 32}.json").read_text())
    assert entry["result"]["cached"] is False and entry["parts"] == {"tool": "ocr"}
    assert c.get("cd" * 32) is None


def test_failures_are_never_cached(tmp_path: Path, sign) -> None:
    c = ToolCache(tmp_path / "cache")
    broken = OcrTool(engine="easyocr", languages=["ko"], easyocr_model_dir=str(tmp_path / "none"), gpu=False)
    for attempt in (1, 2):
        r = c.run(broken, sign, question())
        assert not r.ok and "korean_g2" in r.error and not r.cached
        assert (c.computed, c.failed, c.served) == (0, attempt, 0)
    assert not list((tmp_path / "cache").rglob("*.json"))
    failed = ToolResult(tool="ocr", ok=False, error="boom")
    with pytest.raises(ValueError, match="only successful"):
        c.put("ab" * 32, failed)


def test_a_write_interrupted_before_the_entry_is_committed_is_a_miss(tmp_path: Path, monkeypatch) -> None:
    drawn = tmp_path / "ocr.jpg"
    drawn.write_bytes(b"jpeg")
    c = ToolCache(tmp_path / "cache")
    real = cache_mod.atomic_write

    def crash_on_entry(path: Path, data: bytes) -> None:
        if path.suffix == ".json":
            raise KeyboardInterrupt  # killed between the artifact copy and the commit
        real(path, data)

    monkeypatch.setattr(cache_mod, "atomic_write", crash_on_entry)
    with pytest.raises(KeyboardInterrupt):
        c.put("ef" * 32, ocr_result(drawn))
    monkeypatch.setattr(cache_mod, "atomic_write", real)
    assert c.get("ef" * 32) is None  # the artifact alone is not an entry
    (tmp_path / "cache" / "ef" / f".{'ef' * 32}.json.123.tmp").write_text('{"torn')  # a temp file left by a kill
    assert c.get("ef" * 32) is None
    c.put("ef" * 32, ocr_result(drawn))
    assert c.get("ef" * 32).cached


@pytest.mark.parametrize("damage", ["garbage", "missing_artifact"])
def test_a_damaged_entry_is_a_miss(tmp_path: Path, damage: str) -> None:
    drawn = tmp_path / "ocr.jpg"
    drawn.write_bytes(b"jpeg")
    c = ToolCache(tmp_path / "cache")
    c.put("12" * 32, ocr_result(drawn))
    if damage == "garbage":
        (tmp_path / "cache" / "12" / f"{'12' * 32}.json").write_text("{not json")
    else:
        next((tmp_path / "cache" / "12").glob("*.annotated.jpg")).unlink()
    assert c.get("12" * 32) is None


def test_the_cache_setting(tmp_path: Path) -> None:
    run = tmp_path / "some-run"
    assert open_cache("off", run) is None and open_cache("auto", None) is None
    assert open_cache("auto", run).root == run / "cache"


@pytest.mark.slow
def test_a_real_tool_is_computed_once_even_when_asked_concurrently_then_served(tmp_path: Path, sign) -> None:
    c = ToolCache(tmp_path / "cache")
    tool = OcrTool(**FAST_OCR)
    got: list[ToolResult] = []
    threads = [threading.Thread(target=lambda i=i: got.append(c.run(tool, sign, question(), tmp_path / f"w{i}")))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (c.computed, c.served, c.failed) == (1, 2, 0)
    first = next(r for r in got if not r.cached)
    assert first.ok and any("PARKING" in s.text for s in first.evidence.spans), first.evidence
    for r in got:
        assert r.evidence == first.evidence and os.path.isfile(r.artifacts["annotated"])
    again = ToolCache(tmp_path / "cache").run(OcrTool(**FAST_OCR), sign, question(), tmp_path / "w9")
    assert again.cached and again.evidence == first.evidence
    assert again.artifacts["annotated"] == str(tmp_path / "w9" / "ocr.jpg")


@pytest.mark.slow
def test_two_questions_on_one_photo_read_it_once_even_when_asked_concurrently(tmp_path: Path, monkeypatch) -> None:
    """Through ``run_batch`` (two question threads): the real Tesseract engine reads the photo once, wrapped by a
    counting spy on the engine object; the other question is served the same reading, artifact included."""
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import ResultsLog, run_batch
    from agent.services import Services

    services = Services(reasoner=EvidenceReasoner(), tool_settings={"ocr": FAST_OCR},
                        cache=ToolCache(tmp_path / "cache"), artifacts_dir=tmp_path / "run" / "artifacts")
    qs = [question(), question(id="q2", text="Which word is written on the sign?",
                               options={"a": "STOP", "b": "PARKING", "c": "EXIT"})]
    tool = services.tool("ocr")
    assert tool.plan_for(qs[0]) == tool.plan_for(qs[1]) == [("tesseract", ("en",))]
    engine = tool.engine("tesseract", ("en",))
    reads: list[str] = []
    real_read = engine.read

    def counting_read(image):
        reads.append(threading.current_thread().name)
        return real_read(image)

    monkeypatch.setattr(engine, "read", counting_read)
    summary = run_batch(qs, services, tmp_path / "run", batch_size=2, forced_tools=["ocr"])
    assert summary.answered == 2 and len(reads) == 1
    assert (services.cache.computed, services.cache.served, services.cache.failed) == (1, 1, 0)
    answers = ResultsLog(tmp_path / "run" / "results.jsonl").load()
    ocr = {qid: a.evidence[0] for qid, a in answers.items()}
    assert sorted(r.cached for r in ocr.values()) == [False, True]
    assert ocr["q1"].evidence == ocr["q2"].evidence and any("PARKING" in s.text for s in ocr["q1"].evidence.spans)
    for qid, r in ocr.items():
        assert Path(r.artifacts["annotated"]).is_file() and qid in r.artifacts["annotated"]
