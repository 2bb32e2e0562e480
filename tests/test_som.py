"""The ``som`` tool: region selection (pure), the tiny random SAM through the real loading and inference code,
seeding from ``detect``, and the marked image reaching the reasoner through the graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import prompts
from agent.core.schema import Question, SomEvidence
from agent.reasoners.evidence import EvidenceReasoner
from agent.reasoners.qwen import QwenBackend
from agent.runner import ask
from agent.services import Services
from tools.detect import DetectTool
from tools.sam_original import architecture
from tools.sam_transformers import point_grid, stability
from tools.som import SomTool, save_marked, select_regions

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"
PEOPLE = Question(id="p", image=IMAGES / "astronaut.jpg", text="사진 속 사람은 몇 명인가요?",
                  options={"a": "1명", "b": "2명", "c": "3명"})
WHERE = Question(id="w", image=IMAGES / "coffee.jpg", text="컵의 오른쪽에 있는 물건은?",
                 options={"a": "숟가락", "b": "접시", "c": "책"})
ANY = {"pred_iou_thresh": 0.0, "stability_thresh": 0.0, "points_per_side": 6}  # random SAM scores are ~0


# ---- plain functions -----------------------------------------------------------------------------------------

def test_point_grid_is_centred_cells() -> None:
    assert point_grid((100, 50), 2).tolist() == [[25, 12.5], [75, 12.5], [25, 37.5], [75, 37.5]]


def test_stability_is_area_at_plus_offset_over_area_at_minus_offset() -> None:
    logits = np.array([[[2.0, 0.5, -0.5, -2.0]]])  # > 1: one pixel; > -1: three pixels
    assert stability(logits).tolist() == pytest.approx([1 / 3])


def _square(x: int, y: int, side: int, size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y:y + side, x:x + side] = True
    return m


def test_select_regions_caps_by_priority_and_drops_slivers() -> None:
    masks = np.stack([_square(0, 0, 40), _square(2, 2, 10), _square(20, 20, 10), _square(30, 2, 2)])
    idx, regions = select_regions(masks, priority=np.array([1.0, 3.0, 2.0, 9.0]), min_area=0.01, max_regions=2)
    assert idx.tolist() == [1, 2]  # the 2x2 square is 0.25 % of the image; then the two best of the rest
    assert regions.sum((1, 2)).tolist() == [100, 100]
    idx, regions = select_regions(masks, priority=np.array([1.0, 3.0, 2.0, 9.0]), min_area=0.01, max_regions=3)
    assert idx.tolist() == [0, 1, 2] and regions[0].sum() == 1600 - 200  # the background keeps what is left


def test_marked_image_without_a_run_directory_goes_to_a_content_addressed_temp_file(tmp_path: Path) -> None:
    img = Image.new("RGB", (32, 24), (200, 10, 10))
    first, again = save_marked(img, None), save_marked(img.copy(), None)
    assert first == again and first.parent == Path(tempfile.gettempdir()) / "vqa-som" and first.is_file()
    assert save_marked(img, tmp_path) == tmp_path / "som.jpg"


# ---- the tiny checkpoint through the real code ---------------------------------------------------------------

@pytest.fixture(scope="module")
def som(tiny_dir: Path) -> SomTool:
    tool = SomTool(model=str(tiny_dir / "segmenter-sam"), **ANY)
    tool.setup()
    return tool


@pytest.fixture(scope="module")
def detect(tiny_dir: Path) -> DetectTool:
    return DetectTool(model=str(tiny_dir / "detector-grounding-dino"), tiling="off", box_threshold=0.5)


def check_marks(ev: SomEvidence, size: tuple[int, int]) -> None:
    assert [m.id for m in ev.marks] == list(range(1, len(ev.marks) + 1))
    for m in ev.marks:
        x1, y1, x2, y2 = m.box
        assert 0 <= x1 <= m.point[0] <= x2 + 1 and 0 <= y1 <= m.point[1] <= y2 + 1, m
        assert x2 <= size[0] and y2 <= size[1] and 0 < m.area <= 1


@pytest.mark.slow
def test_automatic_regions_are_marked_and_the_image_is_written(som: SomTool, tmp_path: Path) -> None:
    img = Image.open(IMAGES / "coffee.jpg").convert("RGB")
    r = som.run(img, WHERE, tmp_path)
    assert r.ok, r.error
    ev = r.evidence
    assert ev.source == "auto" and ev.note is None and 1 <= len(ev.marks) <= 24 and ev.image_size == [600, 400]
    assert all(m.label is None for m in ev.marks)
    check_marks(ev, img.size)
    assert r.artifacts == {"marked": str(tmp_path / "som.jpg")}
    marked = np.asarray(Image.open(r.artifacts["marked"]).convert("RGB"), dtype=int)
    assert marked.shape == (400, 600, 3) and np.abs(marked - np.asarray(img, dtype=int)).mean() > 2  # marks drawn


@pytest.mark.slow
def test_when_no_region_passes_the_filters_the_best_ones_are_marked_and_the_note_says_so(tiny_dir: Path) -> None:
    tool = SomTool(model=str(tiny_dir / "segmenter-sam"), points_per_side=6)  # default filters: random SAM fails
    r = tool.run(Image.open(IMAGES / "coffee.jpg"), WHERE, None)
    assert r.ok and len(r.evidence.marks) >= 1 and "quality filters" in r.evidence.note
    assert Path(r.artifacts["marked"]).is_file()


@pytest.mark.slow
def test_without_a_run_directory_the_marked_image_still_exists(som: SomTool) -> None:
    r = som.run(Image.open(IMAGES / "chelsea.jpg"), WHERE, None)
    assert r.ok and Path(r.artifacts["marked"]).is_file()
    assert Path(r.artifacts["marked"]).parent == Path(tempfile.gettempdir()) / "vqa-som"


@pytest.mark.slow
def test_large_images_are_marked_at_max_side_and_boxes_reported_in_image_pixels(tiny_dir: Path) -> None:
    tool = SomTool(model=str(tiny_dir / "segmenter-sam"), max_side=300, **ANY)
    img = Image.open(IMAGES / "coffee.jpg").convert("RGB")
    r = tool.run(img, WHERE)
    assert r.ok and Image.open(r.artifacts["marked"]).size == (300, 200)
    check_marks(r.evidence, img.size)
    assert max(m.box[2] for m in r.evidence.marks) > 300  # back in the 600 px image's coordinates


@pytest.mark.slow
def test_regions_seeded_from_detect_carry_its_labels(som: SomTool, detect: DetectTool) -> None:
    img = Image.open(IMAGES / "astronaut.jpg").convert("RGB")
    r = som.run(img, PEOPLE, None, peers={"detect": detect})
    assert r.ok, r.error
    g = detect.detections(img, PEOPLE)
    assert r.evidence.source == "detect" and 1 <= len(r.evidence.marks) <= min(len(g.kept), 24)
    assert {m.label for m in r.evidence.marks} == {"person"}
    assert {m.score for m in r.evidence.marks} <= {round(float(s), 4) for s in g.kept.confidence}
    check_marks(r.evidence, img.size)


@pytest.mark.slow
def test_a_failing_detect_falls_back_to_automatic_regions_and_says_why(som: SomTool, tmp_path: Path) -> None:
    broken = DetectTool(model=str(tmp_path / "no-detector"))
    r = som.run(Image.open(IMAGES / "coffee.jpg"), WHERE, None, peers={"detect": broken})
    assert r.ok and r.evidence.source == "auto" and "detect failed" in r.evidence.note
    assert "--detector" in r.evidence.note


def test_missing_segmenter_is_a_tool_error_naming_the_flag(tmp_path: Path) -> None:
    r = SomTool(model=str(tmp_path / "nowhere")).run(Image.new("RGB", (40, 30)), WHERE)
    assert not r.ok and "--segmenter" in r.error
    r = SomTool(model=str(tmp_path / "sam_vit_b_01ec64.pth")).run(Image.new("RGB", (40, 30)), WHERE)
    assert not r.ok and "--segmenter" in r.error and "sam_vit_*.pth" in r.error


# ---- the original segment-anything package, on a tiny random checkpoint in its own format ---------------------

@pytest.fixture(scope="module")
def original_sam(tmp_path_factory) -> Path:
    """A random ``sam_vit_*.pth``-style state dict: 32-wide, 2 blocks, the second global (segment-anything's code)."""
    import torch
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    torch.save(_build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                          encoder_global_attn_indexes=[1]).state_dict(), path)
    return path


def test_architecture_is_read_from_the_checkpoint(original_sam: Path) -> None:
    import torch

    state = torch.load(original_sam, weights_only=True)
    assert architecture(state) == {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
                                   "encoder_global_attn_indexes": [1]}


@pytest.mark.slow
def test_original_checkpoint_runs_through_segment_anything(original_sam: Path) -> None:
    tool = SomTool(model=str(original_sam), max_side=160, **{**ANY, "points_per_side": 2})
    img = Image.open(IMAGES / "astronaut.jpg").convert("RGB")
    auto = tool.run(img, WHERE)
    assert auto.ok, auto.error
    assert auto.evidence.model.startswith("segment-anything:") and auto.evidence.source == "auto"
    check_marks(auto.evidence, img.size)
    small = img.resize((160, 160))  # box prompts: one mask per box, at the image's own size
    masks, scores = tool._sam.segment(small, np.array([[10, 10, 80, 150], [90, 20, 150, 90]]), tool.settings)
    assert masks.shape == (2, 160, 160) and masks.dtype == bool and scores.shape == (2,)


# ---- through the graph ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_graph_runs_detect_once_seeds_som_and_shows_the_marked_image_to_qwen(tiny_dir: Path, tmp_path: Path) -> None:
    qwen = QwenBackend(str(tiny_dir / "vlm-qwen2.5-vl"), max_pixels=60_000)
    services = Services(reasoner=qwen, artifacts_dir=tmp_path / "artifacts", tool_settings={
        "detect": {"model": str(tiny_dir / "detector-grounding-dino"), "tiling": "off", "box_threshold": 0.5},
        "som": {"model": str(tiny_dir / "segmenter-sam"), **ANY}})
    runs = []
    tool = services.tool("detect")
    inner = tool._detect
    tool._detect = lambda *a: runs.append(1) or inner(*a)
    a = ask(services, PEOPLE, forced_tools=["detect", "som"])
    assert a.method == "logits" and not a.errors, a.errors
    by_tool = {r.tool: r for r in a.evidence}
    assert by_tool["detect"].ok and by_tool["som"].ok and by_tool["som"].evidence.source == "detect"
    assert len(runs) == 1  # som reused detect's run
    marked = tmp_path / "artifacts" / "p" / "som.jpg"
    assert by_tool["som"].artifacts["marked"] == str(marked) and marked.is_file()
    assert (tmp_path / "artifacts" / "p" / "detect.jpg").is_file()
    assert a.prompt.count("<|vision_start|><|image_pad|><|vision_end|>") == 2  # the photo, then the marked copy
    assert "번호 표시" in a.prompt and 'label="person"' in a.prompt and "marked image: the second image" in a.prompt


@pytest.mark.slow
def test_som_alone_uses_automatic_regions_and_the_evidence_reasoner_ignores_the_marks(tiny_dir: Path) -> None:
    services = Services(reasoner=EvidenceReasoner(), tool_settings={"som": {"model": str(tiny_dir / "segmenter-sam"),
                                                                            **ANY}})
    a = ask(services, WHERE, forced_tools=["som"])
    [r] = a.evidence
    assert r.ok and r.evidence.source == "auto" and Path(r.artifacts["marked"]).is_file()
    assert a.method == "evidence" and a.flags == ["no_evidence"]


def test_prompt_tells_the_model_how_to_use_the_marks() -> None:
    from agent.core.schema import Mark, ToolResult

    ev = SomEvidence(model="sam", source="auto", marks=[Mark(id=1, box=[0, 0, 10, 10], area=0.25, point=[5, 5])])
    r = ToolResult(tool="som", ok=True, evidence=ev, artifacts={"marked": "artifacts/e/som.jpg"})
    text, template = prompts.render(WHERE, [r])
    assert template == "answer.ko@3" == prompts.template_id(WHERE) and "번호로 영역을 찾아" in text
    assert "mark=1 box=[0, 0, 10, 10] area=0.250" in text
    english = Question(id="e", text="What is left of the cup?", options={"a": "spoon", "b": "plate"})
    assert "numbered marks drawn by the som tool" in prompts.render(english, [r])[0]
    assert "numbered marks drawn" not in prompts.render(english, [r], marked=False)[0]
