"""The caption tool: the metrics against pycocoevalcap's own scorers on a hand-made set, the Korean tokenisation
rule, and the captioner paths (Qwen-VL, BLIP) on tiny random-weight checkpoints (captions meaningless, the pipeline
real) through `vqa caption` and `vqa eval --task caption`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from agent.core.schema import Question
from tools import load_tool
from tools.caption.metrics import score, tokenize_ko
from tools.caption.tool import CaptionEvidence, clean_caption

VQA = str(Path(sys.executable).parent / "vqa")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
REFS_KO = {"1": ["고양이가 소파 위에서 잔다", "소파에 고양이 한 마리가 누워 있다"], "2": ["빨간 버스가 도로를 달린다"],
           "3": ["우주비행사가 우주복을 입고 서 있다"]}
HYPS_KO = {"1": "고양이가 소파에서 자고 있다", "2": "버스가 도로 위를 달린다", "3": "우주복을 입은 사람이 서 있다"}


def vqa(*args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("text", "tokens"), [
    ("고양이가 잔다.", "고 양 이 가 잔 다"),
    ("TV 2대, 고양이!", "tv 2 대 고 양 이"),
    ("Ｃａｔ  소파", "ｃａｔ 소 파"),
])
def test_korean_is_tokenised_into_syllables_and_latin_words(text: str, tokens: str) -> None:
    assert tokenize_ko(text) == tokens


def test_korean_metrics_match_pycocoevalcap_on_a_hand_made_set() -> None:
    got = score(REFS_KO, HYPS_KO, "ko")
    gts = {k: [tokenize_ko(c) for c in v] for k, v in REFS_KO.items()}
    res = {k: [tokenize_ko(v)] for k, v in HYPS_KO.items()}
    assert got["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert got["rougeL"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert got["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert 0 < got["bleu4"] < 1 and 0 < got["rougeL"] < 1 and got["tokenizer"] == "syllables"
    assert got["meteor"] is not None or "meteor_error" in got  # METEOR runs where Java does


def test_a_caption_equal_to_its_reference_scores_one() -> None:
    same = {"1": "고양이가 소파 위에서 잔다", "2": "빨간 버스가 도로를 달린다", "3": "우주비행사가 서 있다"}
    got = score({k: [v] for k, v in same.items()}, same, "ko")
    assert got["bleu4"] == pytest.approx(1.0) and got["rougeL"] == pytest.approx(1.0)


def test_english_uses_the_ptb_tokenizer() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {"1": ["A cat sleeps on the sofa.", "a cat lying on a couch"], "2": ["A red bus drives down the road."]}
    hyps = {"1": "a cat is sleeping on a sofa", "2": "a red bus on the road"}
    got = score(refs, hyps, "en")
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in hyps.items()})
    assert got["rougeL"] == pytest.approx(Rouge().compute_score(gts, res)[0]) and got["tokenizer"] == "ptb"


@pytest.mark.parametrize(("raw", "clean"), [("  \"고양이가 잔다.\"\n둘째 줄", "고양이가 잔다."), ("", "")])
def test_clean_caption_keeps_the_first_line(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_qwen_captioner_on_the_tiny_model(tiny_dir: Path) -> None:
    from agent.core.images import load_image

    tool = load_tool("caption", model=str(tiny_dir / "vlm-qwen3-vl"), max_new_tokens=8)
    ko = Question(id="q", text="이 사진은 어떤 장면인가요?", options={"a": "x", "b": "y"})
    en = Question(id="q", text="What is happening?", options={"a": "x", "b": "y"})
    result = tool.run(load_image(EXAMPLES / "chelsea.jpg").image, ko)
    assert result.ok, result.error
    assert isinstance(result.evidence, CaptionEvidence) and result.evidence.language == "ko"
    assert result.evidence.model == "vlm-qwen3-vl" and "caption=" in result.evidence.prompt_lines()[0]
    assert tool.cache_inputs(ko) == {"language": "ko"} != tool.cache_inputs(en)  # one caption per image, language


@pytest.mark.slow
def test_vqa_caption_and_eval_task_caption_on_the_tiny_models(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    p = vqa("caption", EXAMPLES / "chelsea.jpg", EXAMPLES / "astronaut.jpg", "--lang", "ko", "--out", out,
            "--model", tiny_dir / "vlm-qwen3-vl")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["chelsea.jpg", "astronaut.jpg"]
    assert {r["language"] for r in rows} == {"ko"}

    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"images": [{"id": 1, "file_name": "chelsea.jpg"}, {"id": 2, "file_name": "astronaut.jpg"}],
                                "annotations": [{"image_id": 1, "caption": "고양이가 앉아 있다"},
                                                {"image_id": 2, "caption": "우주비행사가 서 있다"}]}, ensure_ascii=False))
    run = tmp_path / "run"
    blip = make_tiny_blip(tmp_path / "blip")
    p = vqa("eval", "--task", "caption", refs, "--images", EXAMPLES, "--run-dir", run, "--captioner", blip)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert {"bleu4", "meteor", "rougeL", "cider"} <= set(m) and m["n"] == 2 and m["lang"] == "ko"
    captions = [json.loads(line) for line in (run / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {c["language"] for c in captions} == {"en"}  # BLIP writes English, and says so


def test_bad_caption_input_is_one_clear_line(tmp_path: Path) -> None:
    p = vqa("caption", tmp_path / "missing.jpg")
    assert p.returncode == 2 and "no such image file" in p.stderr and "Traceback" not in p.stderr + p.stdout
    refs = tmp_path / "refs.json"
    refs.write_text('{"images": []}')
    p = vqa("eval", "--task", "caption", refs, "--images", tmp_path, "--run-dir", tmp_path / "run")
    assert p.returncode == 2 and "COCO-style" in p.stderr and "Traceback" not in p.stderr + p.stdout


def make_tiny_blip(out: Path) -> Path:
    """A random-weight BLIP captioner (one layer, 32-wide, 32 px images) with its processor, saved like a hub one."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    out.mkdir(parents=True, exist_ok=True)
    words = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "cat",
                                "photo", "of"]))
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(out / "vocab.txt"))
    cfg = BlipConfig(text_config={"vocab_size": len(words), "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "intermediate_size": 37, "encoder_hidden_size": 32,
                                  "bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0},
                     vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "intermediate_size": 37, "image_size": 32, "patch_size": 8}, projection_dim=32)
    BlipForConditionalGeneration(cfg).save_pretrained(out)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(out)
    return out


def test_the_reasoner_checkpoint_is_the_default_captioner() -> None:
    from agent.config import DEFAULT_MODEL, load_settings
    from tools.caption.tool import DEFAULT_MODEL as CAPTION_DEFAULT

    assert CAPTION_DEFAULT == DEFAULT_MODEL  # left alone, both are the project's default checkpoint
    assert load_settings(None, {}).tool_settings() == {}  # a flag at its default fills no tool's settings
    assert load_settings(None, {"model": "/m/qwen"}).tool_settings() == {"caption": {"model": "/m/qwen"}}


def test_retrieve_searches_with_the_caption_when_caption_is_routed(tiny_dir: Path, tmp_path: Path) -> None:
    """"caption → retrieval": with the caption tool as its peer, retrieve searches the question and the caption."""
    from agent.core.images import load_image
    from agent.kb.build import build_kb

    kb = tmp_path / "kb"
    build_kb(Path(__file__).resolve().parents[1] / "examples" / "train.csv", kb, clip="e5")
    caption = load_tool("caption", model=str(tiny_dir / "vlm-qwen3-vl"), max_new_tokens=8)
    retrieve = load_tool("retrieve", kb=str(kb), k=3)
    image = load_image(EXAMPLES / "chelsea.jpg").image
    q = Question(id="TEST_X", image=EXAMPLES / "chelsea.jpg", text="고양이 눈은 무슨 색인가요?",
                 options={"a": "파란색", "b": "노란색"})
    alone = retrieve.run(image, q)
    both = retrieve.run(image, q, peers={"caption": caption})
    assert alone.ok and both.ok, (alone.error, both.error)
    said = caption.describe(image, "ko")[0]
    assert said and [e.score for e in both.evidence.entries] != [e.score for e in alone.evidence.entries]
    assert caption.run(image, q).evidence.caption == said  # one generation, read by both
