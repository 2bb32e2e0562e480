"""The ``detect`` tool: its evidence on recorded runs (pure), the evidence reasoner and prompt on that evidence, and
the tiny random Grounding DINO through the real loading and inference code."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import prompts
from agent.core.phrases import target
from agent.core.schema import DetectEvidence, Question, ToolResult
from agent.reasoners.base import ReasonRequest
from agent.reasoners.evidence import EvidenceReasoner, score_detect
from tools.base import ToolError
from tools.boxes import make_detections
from tools.detect import DetectTool, Grounded, SingleFlight, to_evidence, token_phrases

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"
PEOPLE = Question(id="p", text="사진 속 사람은 몇 명인가요?", options={"a": "1명", "b": "2명", "c": "세 명", "d": "4명 이상"})


def recorded(question: Question, rows: list[tuple[list[float], float, str]], near: list[float] = ()) -> Grounded:
    """A detector run as ``detections()`` returns it, from hand-written boxes."""
    t = target(question.text, question.options)
    ids = [t.phrases.index(label) for _, _, label in rows]
    kept = make_detections([r[0] for r in rows], [r[1] for r in rows], ids, t.phrases)
    miss = make_detections([[0, 0, 5, 5]] * len(near), list(near), [0] * len(near), t.phrases)
    return Grounded(t, kept, miss, tiles=0, size=(100, 80))


# ---- evidence from a recorded run ----------------------------------------------------------------------------

def test_evidence_counts_the_phrase_and_relates_the_count_to_the_options() -> None:
    g = recorded(PEOPLE, [([0, 0, 10, 20], 0.62, "person"), ([20, 0, 30, 20], 0.91, "person"),
                          ([40, 0, 50, 20], 0.80, "person")], near=[0.33])
    ev = to_evidence(g, PEOPLE, "gd", box_threshold=0.35)
    assert (ev.phrase, ev.target, ev.source, ev.query, ev.count) == ("person.", "person", "lexicon", "사람", 3)
    assert [b.score for b in ev.boxes] == [0.91, 0.8, 0.62]  # best first
    assert ev.option_counts == {"a": [1, 1], "b": [2, 2], "c": [3, 3], "d": [4, None]}
    assert ev.counts == {"person": 3} and ev.image_size == [100, 80]
    # three boxes well above the threshold and one near miss (0.33 -> p = 0.40): P(3) = 0.6, P(4) = 0.4
    assert ev.count_probs[3] == pytest.approx(0.6, abs=0.02) and ev.count_probs[4] == pytest.approx(0.4, abs=0.02)
    assert ev.confidence == ev.count_probs[3] and sum(ev.count_probs.values()) == pytest.approx(1.0, abs=1e-3)
    stored = ToolResult(tool="detect", ok=True, evidence=ev).model_dump_json()
    assert ToolResult.model_validate_json(stored).evidence == ev  # the discriminated union reads it back


def test_a_shared_run_reports_each_question_in_its_own_words() -> None:
    g = recorded(PEOPLE, [([0, 0, 10, 20], 0.9, "person")])
    english = Question(id="e", text="How many people are there?", options={"a": "one", "b": "two"})
    ev = to_evidence(g, english, "gd", 0.35)
    assert (ev.query, ev.source, ev.count, ev.option_counts) == ("people", "english", 1, {"a": [1, 1], "b": [2, 2]})
    with pytest.raises(ValueError, match="do not answer"):
        to_evidence(g, Question(id="c", text="How many cats?", options={"a": "1", "b": "2"}), "gd", 0.35)


def test_evidence_reasoner_picks_the_option_matching_the_count() -> None:
    g = recorded(PEOPLE, [([0, 0, 10, 20], 0.9, "person"), ([20, 0, 30, 20], 0.8, "person"),
                          ([40, 0, 50, 20], 0.85, "person")])
    r = ToolResult(tool="detect", ok=True, evidence=to_evidence(g, PEOPLE, "gd", 0.35))
    d = EvidenceReasoner().decide([ReasonRequest(question=PEOPLE, image=None, results=[r])])[0]
    assert max(d.probs, key=d.probs.get) == "c" and d.probs["c"] > 0.9 and not d.flags


def test_near_misses_make_the_at_least_option_plausible() -> None:
    g = recorded(PEOPLE, [([0, 0, 10, 20], 0.9, "person")] * 3, near=[0.34, 0.34])
    s = score_detect(to_evidence(g, PEOPLE, "gd", 0.35), PEOPLE)
    assert s["c"] == pytest.approx(0.3, abs=0.05) and s["d"] == pytest.approx(0.7, abs=0.05) and s["a"] == 0.0


@pytest.mark.parametrize(("text", "options", "expected"), [
    ("고양이가 있나요?", {"a": "예", "b": "아니요"}, "a"),
    ("고양이가 없나요?", {"a": "예", "b": "아니요"}, "b"),  # yes to "is there none?" means none
    ("Is there a cat?", {"a": "there is none", "b": "there is one"}, "b"),
    ("사진 속 동물은 무엇인가요?", {"a": "개", "b": "고양이", "c": "토끼"}, "b"),
])
def test_existence_and_object_options(text: str, options: dict[str, str], expected: str) -> None:
    q = Question(id="e", text=text, options=options)
    t = target(q.text, q.options)
    g = recorded(q, [([0, 0, 10, 20], 0.8, "cat")])
    r = ToolResult(tool="detect", ok=True, evidence=to_evidence(g, q, "gd", 0.35))
    d = EvidenceReasoner().decide([ReasonRequest(question=q, image=None, results=[r])])[0]
    assert max(d.probs, key=d.probs.get) == expected, (t, d)


def test_a_count_under_a_negated_question_is_no_evidence() -> None:
    q = Question(id="n", text="모자를 쓰지 않은 사람은 몇 명인가요?", options={"a": "1명", "b": "2명"})
    r = ToolResult(tool="detect", ok=True,
                   evidence=to_evidence(recorded(q, [([0, 0, 9, 9], 0.9, "person")]), q, "gd", 0.35))
    d = EvidenceReasoner().decide([ReasonRequest(question=q, image=None, results=[r])])[0]
    assert d.flags == ["no_evidence"]


def test_prompt_lines_quote_the_phrase_and_name_the_matching_option() -> None:
    g = recorded(PEOPLE, [([0, 0, 10, 20], 0.9, "person"), ([20, 0, 30, 20], 0.8, "person")])
    r = ToolResult(tool="detect", ok=True, evidence=to_evidence(g, PEOPLE, "gd", 0.35))
    lines = prompts.evidence_lines(r)
    assert lines[0] == 'phrase="person." from="사람" (lexicon) count=2 confidence=1.00'
    assert lines[1] == "options as counts: a=1 b=2 c=3 d=4+; count 2 matches b"
    assert lines[2] == 'box=[0, 0, 10, 20] label="person" score=0.90' and len(lines) == 4
    text, template = prompts.render(PEOPLE, [r])
    assert "<tool_output tool=\"detect\">" in text and template == "answer.ko@3"
    assert "번호 표시" not in text  # no marked image: no marks instruction


# ---- plain helpers -------------------------------------------------------------------------------------------

def test_token_phrases_maps_word_pieces_to_their_phrase() -> None:
    prompt = "cat. red car."
    offsets = [(0, 0), (0, 3), (3, 4), (5, 8), (9, 12), (12, 13), (0, 0)]  # [CLS] cat . red car . [SEP]
    assert token_phrases(offsets, prompt, ["cat", "red car"]).tolist() == [-1, 0, -1, 1, 1, -1, -1]


def test_single_flight_runs_concurrent_callers_once_and_does_not_cache_failures(monkeypatch) -> None:
    """Three callers arrive while the first one computes (each seen waiting on its result, no clock involved):
    one computation, four answers."""
    import concurrent.futures

    import tools.detect

    cache, calls, release, waiting = SingleFlight(size=2), [], threading.Event(), threading.Semaphore(0)

    class Watched(concurrent.futures.Future):
        def result(self, timeout=None):
            waiting.release()  # a caller is about to wait for the running computation
            return super().result(timeout)

    monkeypatch.setattr(tools.detect, "Future", Watched)

    def slow() -> int:
        calls.append(1)
        assert release.wait(timeout=120)
        return 42

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(3):
        assert waiting.acquire(timeout=120)
    release.set()
    for t in threads:
        t.join(timeout=120)
    assert got == [42] * 4 and len(calls) == 1

    def broken() -> int:
        raise RuntimeError("no weights")

    with pytest.raises(RuntimeError):
        cache.get("x", broken)
    assert cache.get("x", lambda: 7) == 7


def test_missing_or_wrong_checkpoints_are_tool_errors_naming_the_flag(tmp_path: Path) -> None:
    q, img = PEOPLE, Image.new("RGB", (64, 48))
    r = DetectTool(model=str(tmp_path / "nowhere")).run(img, q)
    assert not r.ok and "--detector" in r.error and r.error.startswith("ToolUnavailable")
    r = DetectTool(model=str(tmp_path / "groundingdino_swint_ogc.pth")).run(img, q)
    assert not r.ok and "original-format" in r.error and "convert" in r.error


def test_unreachable_hub_id_fails_offline_without_touching_the_network(monkeypatch) -> None:
    import socket

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    lookups: list[str] = []

    def no_network(host, *args, **kwargs):  # every connection to a host name starts here; offline, none should
        lookups.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "this test forbids network access")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    r = DetectTool().run(Image.new("RGB", (64, 48)), PEOPLE)
    assert not r.ok and "IDEA-Research/grounding-dino-tiny" in r.error and "--detector" in r.error
    assert lookups == []


# ---- the tiny checkpoint through the real code ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tool(tiny_dir: Path) -> DetectTool:
    t = DetectTool(model=str(tiny_dir / "detector-grounding-dino"), tiling="off")
    t.setup()
    return t


@pytest.mark.slow
def test_tiny_detector_loads_with_a_lexicon_aware_tokenizer(tool: DetectTool, tiny_dir: Path) -> None:
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    assert type(tool._model) is GroundingDinoForObjectDetection and tool.input_side == 160
    tok = AutoProcessor.from_pretrained(tiny_dir / "detector-grounding-dino").tokenizer
    assert tok.tokenize("red car. traffic light.") == ["red", "car", ".", "traffic", "light", "."]
    assert "random weights" in (tiny_dir / "detector-grounding-dino" / "README.md").read_text().lower()
    assert (tiny_dir / "detector-grounding-dino" / "model.safetensors").stat().st_size < 3_000_000


@pytest.mark.slow
def test_korean_count_question_runs_the_detector_path(tool: DetectTool, tmp_path: Path) -> None:
    img = Image.open(IMAGES / "astronaut.jpg").convert("RGB")
    r = tool.run(img, PEOPLE, tmp_path)
    assert r.ok, r.error
    ev = r.evidence
    assert isinstance(ev, DetectEvidence) and (ev.phrase, ev.target, ev.source) == ("person.", "person", "lexicon")
    assert ev.count == len([b for b in ev.boxes if b.label == "person"]) == ev.counts["person"]
    assert all(0 <= b.box[0] <= b.box[2] <= img.width and 0 <= b.box[1] <= b.box[3] <= img.height for b in ev.boxes)
    assert all(b.score >= 0.35 for b in ev.boxes) and ev.tiles == 0
    assert ev.confidence == ev.count_probs[ev.count]
    assert Image.open(r.artifacts["annotated"]).size == img.size
    assert r.settings["model"].endswith("detector-grounding-dino")


@pytest.mark.slow
def test_tiling_reads_overlapping_tiles_and_keeps_boxes_in_image_coordinates(tiny_dir: Path) -> None:
    img = Image.open(IMAGES / "coffee.jpg").convert("RGB")  # 600 x 400
    tiled = DetectTool(model=str(tiny_dir / "detector-grounding-dino"), tiling="on", tile_size=256, max_tiles=12)
    r = tiled.run(img, PEOPLE)
    assert r.ok and r.evidence.tiles == len(tiled.tiles_for(img.size)) == 6
    assert all(b.box[2] <= 600 and b.box[3] <= 400 for b in r.evidence.boxes)


@pytest.mark.slow
def test_auto_tiling_only_for_images_much_larger_than_the_detector_input(tiny_dir: Path) -> None:
    t = DetectTool(model=str(tiny_dir / "detector-grounding-dino"), tiling="auto", max_tiles=4)
    t.setup()
    assert t.tiles_for((240, 200)) is None  # short side <= 1.5 x 160
    grid = t.tiles_for((1200, 900))
    assert grid is not None and 1 < len(grid) <= 4 and grid[:, 2].max() == 1200 and grid[:, 3].max() == 900


@pytest.mark.slow
def test_repeated_questions_on_one_image_reuse_the_run(tool: DetectTool) -> None:
    img = Image.open(IMAGES / "chelsea.jpg").convert("RGB")
    first = tool.detections(img, PEOPLE)
    assert tool.detections(img.copy(), PEOPLE) is first
    other = Question(id="c", text="고양이가 있나요?", options={"a": "예", "b": "아니요"})
    assert tool.detections(img, other).target.prompt == "cat."


@pytest.mark.slow
def test_a_checkpoint_of_another_kind_is_refused(tiny_dir: Path) -> None:
    r = DetectTool(model=str(tiny_dir / "segmenter-sam")).run(Image.new("RGB", (64, 48)), PEOPLE)
    assert not r.ok and "'sam' checkpoint" in r.error and "--detector" in r.error
    with pytest.raises(ToolError):
        DetectTool(model=str(tiny_dir / "segmenter-sam")).setup()


@pytest.mark.slow
def test_mm_grounding_dino_checkpoints_load_too(tiny_dir: Path, tmp_path: Path) -> None:
    from transformers import (
        AutoProcessor,
        BertConfig,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    processor = AutoProcessor.from_pretrained(tiny_dir / "detector-grounding-dino")
    config = MMGroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                                   out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(processor.tokenizer), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, encoder_n_points=2, decoder_n_points=2,
        max_text_len=64)
    MMGroundingDinoForObjectDetection(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    r = DetectTool(model=str(tmp_path), tiling="off").run(Image.open(IMAGES / "chelsea.jpg"), PEOPLE)
    assert r.ok and r.evidence.phrase == "person." and r.evidence.count == len(r.evidence.boxes)


def test_thresholds_are_checked() -> None:
    from agent.core.errors import ConfigError

    with pytest.raises(ConfigError, match="box_threshold"):
        DetectTool(box_threshold=1.5)
    with pytest.raises(ConfigError, match="tiling"):
        DetectTool(tiling="sometimes")
    assert np.isclose(DetectTool().settings["box_threshold"], 0.35)
