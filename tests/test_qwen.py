"""The Qwen-VL backend on tiny random-weight checkpoints (real loading code), plus its pure scoring helpers."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import skimage
import torch
from PIL import Image

from agent.core.errors import ConfigError, ModelLoadError
from agent.core.probs import logsumexp
from agent.core.schema import Question
from agent.dev.llamacpp import vocab_cases
from agent.dev.tiny import ROLES, SPECIAL_TOKENS, make_tiny
from agent.reasoners.base import ReasonRequest
from agent.reasoners.qwen import QwenBackend, letter_probs, letter_token_ids

VLMS = ["vlm-qwen2.5-vl", "vlm-qwen3-vl"]
DATA = Path(skimage.__file__).parent / "data"
SMALL = 80_000  # pixel budget that keeps the tiny forward passes fast

Q4 = Question(id="q4", text="What is in the cup?", options={"a": "coffee", "b": "tea", "c": "milk", "d": "water"})
Q3 = Question(id="q3", text="사진에 무엇이 있습니까? 자세히 보고 고르세요.",
              options={"a": "카메라", "b": "사람", "c": "고양이"})
Q2 = Question(id="q2", text="Is this a long question with many words, written so that its prompt is longer than the "
              "others and needs no padding in the batch?", options={"a": "yes", "b": "no"})


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    return {"coffee": Image.open(DATA / "coffee.png"), "camera": Image.open(DATA / "camera.png"),
            "astronaut": Image.open(DATA / "astronaut.png").resize((128, 96))}


@pytest.fixture(scope="module", params=VLMS)
def backend(request, tiny_dir) -> QwenBackend:
    b = QwenBackend(str(tiny_dir / request.param), max_pixels=SMALL)
    b.load()
    return b


# ---- the tiny checkpoints -------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", VLMS)
def test_tiny_loads_through_auto_classes(tiny_dir, role):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_dir / role
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    expected = {"vlm-qwen2.5-vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
                "vlm-qwen3-vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor")}[role]
    assert (type(model).__name__, type(processor).__name__) == expected
    tok = processor.tokenizer
    for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert getattr(model.config, key) == tok.convert_tokens_to_ids(token)
    assert all(tok.convert_tokens_to_ids(t) < model.config.text_config.vocab_size for t in SPECIAL_TOKENS)
    korean = "정답은 b입니다. 사진 속 커피"
    assert tok.decode(tok.encode(korean, add_special_tokens=False)) == korean
    content = [{"type": "image"}, {"type": "text", "text": "hi"}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n" in chat
    assert (path / "model.safetensors").stat().st_size < 45_000_000  # the 151936 x 64 embeddings, tied: 39 MB
    assert "useless for answers" in (path / "README.md").read_text(encoding="utf-8").lower()


# Qwen's added tokens at the ids of the published tokenizer_config.json files (Qwen3-VL adds the last four).
REAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
            "<tool_call>": 151657, "</tool_call>": 151658, "<|file_sep|>": 151664}
QWEN3_IDS = {"<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}


@pytest.mark.parametrize("role", VLMS)
def test_tiny_tokenizer_is_qwens_real_vocabulary(tiny_dir, role):
    """The tokenizer make-tiny writes passes llama.cpp's own Qwen2 tokenizer cases and has the real added ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / role)
    cases = vocab_cases()
    assert len(cases) >= 40
    wrong = [(text, ids) for text, ids in cases if tok.encode(text, add_special_tokens=False) != ids]
    assert wrong == []
    want = REAL_IDS | (QWEN3_IDS if role == "vlm-qwen3-vl" else {})
    assert {t: tok.convert_tokens_to_ids(t) for t in want} == want
    assert len(tok) == max(want.values()) + 1
    if role == "vlm-qwen2.5-vl":  # not a token of Qwen2.5-VL: plain text there
        assert len(tok.encode("<think>", add_special_tokens=False)) > 1
    assert tok.encode(" a", add_special_tokens=False) == [264]  # the made-up vocabulary gave other ids
    assert tok.encode("<|im_start|>user", add_special_tokens=False) == [151644, 872]


def test_make_tiny_refuses_a_file_that_is_not_a_vocabulary(tmp_path):
    with pytest.raises(ConfigError, match="--vocab-gguf.*found no file"):
        make_tiny(tmp_path, roles=["vlm-qwen2.5-vl"], vocab_gguf=tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ConfigError, match="--vocab-gguf"):
        make_tiny(tmp_path, roles=["vlm-qwen2.5-vl"], vocab_gguf=bad)


def test_make_tiny_is_deterministic_and_overwrites(tmp_path):
    def digest(folder: Path) -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}

    first = make_tiny(tmp_path / "one", roles=["vlm-qwen3-vl"])["vlm-qwen3-vl"]
    (first / "stale.txt").write_text("left from an older build")
    again = make_tiny(tmp_path / "one", roles=["vlm-qwen3-vl"])["vlm-qwen3-vl"]
    other = make_tiny(tmp_path / "two", roles=["vlm-qwen3-vl"])["vlm-qwen3-vl"]
    assert not (again / "stale.txt").exists()
    assert digest(again) == digest(other)
    assert set(ROLES) >= set(VLMS)
    with pytest.raises(ConfigError, match="unknown tiny role"):
        make_tiny(tmp_path, roles=["no-such-role"])


# ---- pure helpers ---------------------------------------------------------------------------------------------

TABLE = {"a": [10], " a": [11], "(a": [12], "A": [20], "b": [30], " b": [31, 32], "B": [40], "**b": [41],
         "c": [50], "C": [50]}  # "C" sharing "c"'s id is deduplicated; unknown variants encode to several tokens


def _encode(text: str) -> list[int]:
    return TABLE.get(text, [99, 98])


@pytest.mark.parametrize(("letters", "expected"), [
    ("abc", {"a": [10, 11, 12, 20], "b": [30, 40, 41], "c": [50]}),
    ("d", {"d": []}),
    ("ab", {"a": [10, 11, 12, 20], "b": [30, 40, 41]}),
])
def test_letter_token_ids_keeps_single_token_variants(letters, expected):
    assert letter_token_ids(_encode, letters) == expected


IDS = {"a": [0, 1], "b": [2], "c": [3], "d": [4]}


@pytest.mark.parametrize(("logits", "letters", "expected"), [
    # a: log(e^0 + e^0) = ln 2, b: 0, c: 0 -> 2/4, 1/4, 1/4
    ([0.0, 0.0, 0.0, 0.0, 50.0], "abc", {"a": 0.5, "b": 0.25, "c": 0.25}),
    # d's huge logit is ignored for a 3-option question; with it the 4-option one is all d
    ([0.0, -math.inf, math.log(3.0), 0.0, 50.0], "ab", {"a": 0.25, "b": 0.75}),
    ([1.0, 1.0, 1.0, 1.0, 1.0], "abcd", {"a": 0.4, "b": 0.2, "c": 0.2, "d": 0.2}),
    ({0: -math.inf, 1: -math.inf, 2: -math.inf, 3: -math.inf}, "abc", {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
])
def test_letter_probs_reduces_logits_by_logsumexp_then_softmax(logits, letters, expected):
    probs = letter_probs(logits, IDS, list(letters))
    assert list(probs) == list(letters)
    assert probs == pytest.approx(expected, abs=1e-12)


def test_letter_without_tokens_gets_zero_and_logsumexp_edges():
    assert letter_probs([0.0, 0.0, 0.0], {"a": [0], "b": []}, ["a", "b"]) == {"a": 1.0, "b": 0.0}
    assert logsumexp([]) == -math.inf
    assert logsumexp([math.log(2.0), math.log(3.0)]) == pytest.approx(math.log(5.0))


# ---- configuration and load errors ----------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("quant", ["4bit", "8bit"])
def test_quantisation_without_cuda_is_a_config_error(tiny_dir, quant):
    with pytest.raises(ConfigError, match=f"quant='{quant}' needs a CUDA GPU"):
        QwenBackend(str(tiny_dir / "vlm-qwen3-vl"), quant=quant)


@pytest.mark.parametrize(("kwargs", "match"), [({"dtype": "int3"}, "dtype must be"), ({"quant": "2bit"}, "quant must be")])
def test_bad_settings_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QwenBackend("Qwen/Qwen2.5-VL-7B-Instruct", **kwargs)


def test_missing_path_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        QwenBackend(str(tmp_path / "nowhere")).load()


def test_unreachable_hub_id_is_a_model_load_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="not in the local hub cache and HF_HUB_OFFLINE is set.*--model.*--reasoner evidence") as err:
        QwenBackend("no-such-org/no-such-vlm").load()
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_text_only_checkpoint_is_a_model_load_error(tmp_path, tiny_dir):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path / "text-only"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=512, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_dir / "vlm-qwen3-vl").save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="as a vision-language checkpoint"):
        QwenBackend(str(folder)).load()


def test_fingerprint_follows_the_settings(tiny_dir):
    path = str(tiny_dir / "vlm-qwen3-vl")
    base = QwenBackend(path).fingerprint
    assert base == QwenBackend(path).fingerprint
    assert base.startswith(f"qwen:{path}@")
    others = {QwenBackend(path, max_pixels=1000).fingerprint, QwenBackend(path, generate=True).fingerprint,
              QwenBackend(path, dtype="bf16").fingerprint, QwenBackend(path, adapter="x").fingerprint}
    assert base not in others and len(others) == 4


# ---- forward passes on the tiny models -------------------------------------------------------------------------

@pytest.mark.slow
def test_logits_give_probabilities_over_the_question_letters(backend, images):
    [d] = backend.decide([ReasonRequest(Q4, images["coffee"])])
    assert d.method == "logits"
    assert list(d.probs) == ["a", "b", "c", "d"]
    assert sum(d.probs.values()) == pytest.approx(1.0)
    assert all(0.0 < p < 1.0 for p in d.probs.values())
    assert "<|vision_start|><|image_pad|><|vision_end|>Question: What is in the cup?" in d.prompt
    assert d.prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert d.template == "answer.en@3" and d.reasoner == backend.fingerprint  # the prompt version and the model


@pytest.mark.slow
def test_three_option_question_never_gets_d(backend, images):
    for req in (ReasonRequest(Q3, images["camera"]), ReasonRequest(Q3, None)):
        [d] = backend.decide([req])
        assert list(d.probs) == ["a", "b", "c"]
        assert sum(d.probs.values()) == pytest.approx(1.0)
    assert "<|image_pad|>" not in d.prompt


@pytest.mark.slow
def test_scores_do_not_depend_on_batch_composition(backend, images):
    requests = [ReasonRequest(Q4, images["coffee"]), ReasonRequest(Q3, images["camera"]), ReasonRequest(Q2, None),
                ReasonRequest(Q2, images["astronaut"]), ReasonRequest(Q4, None)]
    alone = [backend.decide([r])[0] for r in requests]
    together = backend.decide(requests)
    reordered = backend.decide(requests[::-1])[::-1]
    for a, b, c in zip(alone, together, reordered):
        assert a.prompt == b.prompt == c.prompt
        assert b.probs == pytest.approx(a.probs, abs=1e-5)
        assert c.probs == pytest.approx(a.probs, abs=1e-5)
    text_only = [(r, a) for r, a in zip(requests, alone) if r.image is None]  # positions come from the mask
    for d, (_, a) in zip(backend.decide([r for r, _ in text_only]), text_only):
        assert d.probs == pytest.approx(a.probs, abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("role", VLMS)
def test_pixel_budget_bounds_the_image_grid(tiny_dir, images, role):
    b = QwenBackend(str(tiny_dir / role), min_pixels=20_000, max_pixels=40_000)
    b.load()
    patch = b._processor.image_processor.patch_size
    for name in ("coffee", "astronaut"):
        inputs, _ = b.encode([ReasonRequest(Q4, images[name])])
        t, h, w = inputs["image_grid_thw"][0].tolist()
        assert 20_000 <= h * w * patch * patch <= 40_000
    [d] = b.decide([ReasonRequest(Q4, images["coffee"])])
    assert sum(d.probs.values()) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("role", VLMS)
def test_generate_mode_parses_the_new_text(tiny_dir, images, role):
    b = QwenBackend(str(tiny_dir / role), generate=True, max_new_tokens=4, max_pixels=SMALL)
    decisions = b.decide([ReasonRequest(Q4, images["coffee"]), ReasonRequest(Q2, None)])
    for d, q in zip(decisions, (Q4, Q2)):
        assert d.method == "generate"
        assert isinstance(d.raw, str) and "<|im_end|>" not in d.raw
        assert list(d.probs) == q.letters and sum(d.probs.values()) == pytest.approx(1.0)
        if "unparsed" in d.flags:
            assert set(d.probs.values()) == {1 / len(q.letters)}
        else:
            assert sorted(d.probs.values())[-1] == 1.0 and any(f.startswith("parsed:") for f in d.flags)


# ---- LoRA adapters ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adapter(tiny_dir, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_dir / "vlm-qwen2.5-vl")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))  # non-zero B, so the adapter changes outputs
    out = tmp_path_factory.mktemp("lora")
    lora.save_pretrained(out)
    return out


@pytest.mark.slow
def test_lora_adapter_is_applied(tiny_dir, images, adapter):
    from peft import PeftModel

    path = str(tiny_dir / "vlm-qwen2.5-vl")
    req = ReasonRequest(Q4, images["coffee"])
    plain = QwenBackend(path, max_pixels=SMALL).decide([req])[0].probs
    tuned = QwenBackend(path, adapter=str(adapter), max_pixels=SMALL)
    probs = tuned.decide([req])[0].probs
    assert isinstance(tuned._model, PeftModel)
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs != pytest.approx(plain, abs=1e-6)
    assert tuned.model_id == f"{path}+{adapter}"


def test_missing_or_incompatible_adapter_is_a_model_load_error(tiny_dir, adapter, tmp_path):
    path = str(tiny_dir / "vlm-qwen2.5-vl")
    with pytest.raises(ModelLoadError, match="not a PEFT adapter folder"):
        QwenBackend(path, adapter=str(tmp_path / "no-adapter")).load()
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["no_such_proj"]}))
    (broken / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="could not apply adapter"):
        QwenBackend(path, adapter=str(broken)).load()
