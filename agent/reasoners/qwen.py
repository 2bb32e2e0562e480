"""In-process Qwen-VL reasoner (transformers): scores option letters from next-token logits, or generates.

Any checkpoint that ``AutoModelForImageTextToText`` + ``AutoProcessor`` load and that uses Qwen's chat
format works (Qwen2.5-VL, Qwen3-VL); nothing branches on the model's name.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import torch

import prompts
from agent.core.adapter import check_adapter
from agent.core.errors import ConfigError, ModelLoadError, brief
from agent.core.hub import locate
from agent.core.probs import logsumexp, one_hot, softmax_over_letters, uniform
from agent.core.schema import LETTERS, Decision
from agent.reasoners.base import ReasonRequest, letter_variants
from agent.reasoners.extract import extract_letter
from tools.device import cuda_available, resolve_device

Quant = Literal["none", "4bit", "8bit"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def letter_token_ids(encode: Callable[[str], list[int]], letters: Iterable[str] = LETTERS) -> dict[str, list[int]]:
    """For each letter, the sorted ids of its ``letter_variants`` that encode to exactly one token."""
    out: dict[str, list[int]] = {}
    for letter in letters:
        ids = {ids[0] for ids in (encode(v) for v in letter_variants(letter)) if len(ids) == 1}
        out[letter] = sorted(ids)
    return out


def letter_probs(logits: Mapping[int, float] | Sequence[float], ids: Mapping[str, Sequence[int]],
                 letters: Sequence[str]) -> dict[str, float]:
    """Per-letter score = logsumexp of its tokens' logits, softmaxed over ``letters`` only (no tokens: probability 0)."""
    scores = {k: logsumexp([float(logits[i]) for i in ids.get(k, ())]) for k in letters}
    return softmax_over_letters(scores)


def load_checkpoint(model: str, *, quant: Quant, dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    """``(model, processor)`` of a vision-language checkpoint (a folder, or a hub id found through ``agent.core.hub``:
    the local cache first, the hub at most once per process), quantised as asked, on ``device``. Raises
    ``ModelLoadError`` with a short reason."""
    folder = locate(model, flag="--model", what="vision-language model")
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": {"": device}}
    if quant == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    elif quant == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    try:
        processor = AutoProcessor.from_pretrained(folder)
        loaded = AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- any failure here is the user's checkpoint or path
        raise ModelLoadError(f"could not load {model!r} as a vision-language checkpoint "
                             f"(AutoModelForImageTextToText + AutoProcessor): {brief(exc)}. Check the path, or for "
                             "a hub id that its files are in the local cache") from None
    return loaded, processor


class QwenBackend:
    """Qwen-VL reasoner on transformers; loads lazily on the first ``decide`` (or ``load()``).

    ``quant``: ``"4bit"`` (bitsandbytes NF4, double quantisation, compute in ``dtype``: bf16 under "auto") or ``"8bit"``
    (LLM.int8); both need a CUDA GPU and bitsandbytes. ``dtype="auto"``: bf16 on CUDA (fp16 where bf16 is
    unsupported), fp32 on CPU. ``adapter``: a PEFT LoRA folder applied with ``PeftModel.from_pretrained``.

    Pixel budget: ``min_pixels``/``max_pixels`` bound each image's area after resizing (aspect kept, sides
    multiples of patch*merge). They are passed on every processor call as
    ``size={"shortest_edge": min_pixels, "longest_edge": max_pixels}`` (the transformers 5 form for Qwen2-VL
    style image processors); ``None`` keeps the checkpoint's own value.

    Scoring (default): one forward pass per batch (left padding + attention mask), the next-token logits at
    the last position, per letter the logsumexp over its single-token variants, softmax over the question's
    own letters. ``generate=True``: greedy decoding, the letter parsed from the new text (``min_new_tokens``
    forbids an earlier end, so a benchmark times a fixed answer length).
    """

    name = "qwen"
    max_text_tokens = 256  # generation budget for open (free-text, `vqa chat`) questions

    def __init__(self, model: str, *, quant: Quant = "none", dtype: str = "auto", adapter: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = 1_003_520, generate: bool = False,
                 max_new_tokens: int = 16, min_new_tokens: int = 0, device: str = "auto") -> None:
        if quant not in ("none", "4bit", "8bit"):
            raise ConfigError(f"quant must be 'none', '4bit' or '8bit', found {quant!r}")
        if dtype != "auto" and dtype not in _DTYPES:
            raise ConfigError(f"dtype must be 'auto', 'bf16', 'fp16' or 'fp32', found {dtype!r}")
        cuda = cuda_available()
        self.device = resolve_device(device)
        if quant != "none":
            if not self.device.startswith("cuda"):
                raise ConfigError(f"quant={quant!r} needs a CUDA GPU (bitsandbytes), but the device is {self.device!r} "
                                  f"(torch {torch.__version__}, CUDA available: {cuda}); use quant='none' on CPU")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(f"quant={quant!r} needs bitsandbytes, which is not installed; "
                                  "install it with `pip install 'vqa-orchestrator[gpu]'` or use quant='none'")
        if dtype == "auto":
            gpu_half = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
            self.dtype = gpu_half if self.device.startswith("cuda") else torch.float32
        else:
            self.dtype = _DTYPES[dtype]
        self.model, self.quant, self.adapter = model, quant, adapter
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.generate, self.max_new_tokens = generate, max_new_tokens
        self.min_new_tokens = min_new_tokens  # > 0: no end of answer before that many tokens (``vqa bench mc``)
        self._model: Any = None
        self._processor: Any = None
        self._letter_ids: dict[str, list[int]] = {}

    @property
    def model_id(self) -> str:
        return self.model if self.adapter is None else f"{self.model}+{self.adapter}"

    @property
    def fingerprint(self) -> str:
        """Everything that determines the output, hashed: for traces and cache keys."""
        parts = [self.model_id, self.quant, str(self.dtype).removeprefix("torch."), str(self.min_pixels),
                 str(self.max_pixels), f"generate:{self.max_new_tokens}" if self.generate else "logits"]
        if self.generate and self.min_new_tokens:
            parts.append(f"min_new_tokens:{self.min_new_tokens}")
        return f"qwen:{self.model_id}@" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    def load(self) -> None:
        """Load processor, weights and adapter (idempotent). Raises ``ModelLoadError`` with a short reason."""
        if self._model is not None:
            return
        if self.adapter is not None:  # vqa train's manifest: the same base model and prompt versions, before loading
            check_adapter(self.adapter, self.model, prompts.template_versions())
        try:
            model, processor = load_checkpoint(self.model, quant=self.quant, dtype=self.dtype, device=self.device)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; or answer without a model: --reasoner evidence (OCR and detection "
                                 "evidence only)") from None
        if self.adapter is not None:
            model = self._with_adapter(model)
        self.attach(model.eval(), processor)

    def attach(self, model: Any, processor: Any) -> None:
        """Score with an already loaded model and processor (e.g. one being fine-tuned) instead of loading one.
        The caller owns the model's mode (``eval()`` for scoring)."""
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "chat_template", None) is None:
            raise ModelLoadError(f"{self.model!r} has no tokenizer or chat template in its processor; "
                                 "expected an Instruct vision-language checkpoint")
        tokenizer.padding_side = "left"
        self._letter_ids = letter_token_ids(lambda s: tokenizer.encode(s, add_special_tokens=False))
        self._model, self._processor = model, processor

    def with_decoding(self, *, generate: bool, max_new_tokens: int, min_new_tokens: int = 0) -> QwenBackend:
        """This backend with other decoding settings, sharing its loaded weights (one copy for both)."""
        other = copy.copy(self)
        other.generate, other.max_new_tokens, other.min_new_tokens = generate, max_new_tokens, min_new_tokens
        return other

    @property
    def loaded(self) -> tuple[Any, Any]:
        """``(model, processor)``, loaded first when needed (the vlm planner's chat model generates with them)."""
        self.load()
        return self._model, self._processor

    def image_kwargs(self, images: list[Any]) -> dict[str, Any]:
        """The processor's image arguments for ``images``, with this backend's pixel budget (none: ``{}``)."""
        if not images:
            return {}
        size = dict(self._processor.image_processor.size)
        if self.min_pixels is not None:
            size["shortest_edge"] = self.min_pixels
        if self.max_pixels is not None:
            size["longest_edge"] = self.max_pixels
        return {"images": images, "size": size}

    @property
    def letter_ids(self) -> dict[str, list[int]]:
        """Per letter, the ids of its single-token variants (after ``load``/``attach``)."""
        return self._letter_ids

    def close(self) -> None:
        """Free the weights (and the CUDA cache they used); a later ``decide`` loads them again."""
        if self._model is None:
            return
        on_cuda = self._model.device.type == "cuda"
        self._model = self._processor = None
        self._letter_ids = {}
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    def _with_adapter(self, model: Any) -> Any:
        from peft import PeftModel

        if not (Path(self.adapter).expanduser() / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {self.adapter!r} is not a PEFT adapter folder (no adapter_config.json)")
        try:
            return PeftModel.from_pretrained(model, self.adapter)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"could not apply adapter {self.adapter!r} to {self.model!r}: {brief(exc)}; "
                                 "was it trained on this base model?") from None

    def chat_text(self, req: ReasonRequest) -> str:
        """The request's prompt (``prompts.render``) in the processor's chat template, ending where the answer
        starts; an image placeholder per picture (the photo, then the tools' marked copies)."""
        text, _template_id = prompts.render(req.question, req.results, history=req.history, marked=bool(req.images))
        pictures = (req.image is not None) + len(req.images)
        content = [{"type": "image"} for _ in range(pictures)] + [{"type": "text", "text": text}]
        return self._processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True)

    def encode(self, batch: Sequence[ReasonRequest]) -> tuple[Any, list[str]]:
        """The model inputs of a batch (CPU tensors, left padded) and each request's ``chat_text``."""
        texts = [self.chat_text(req) for req in batch]
        images = [p.convert("RGB") for req in batch for p in ([req.image] if req.image is not None else [])
                  + list(req.images)]  # per request: the photo, then the marked copies
        inputs = self._processor(text=texts, padding=True, return_tensors="pt", **self.image_kwargs(images))
        if "image_grid_thw" not in inputs:  # text only: positions must skip the left padding
            mask = inputs["attention_mask"]
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return inputs, texts

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        """One decision per request, stamped with its prompt template id and this backend's fingerprint."""
        fingerprint = self.fingerprint
        return [d.model_copy(update={"template": prompts.template_id(r.question), "reasoner": fingerprint})
                for r, d in zip(batch, self._decide(batch), strict=True)]

    def _decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        if not batch:
            return []
        is_open = [not r.question.options for r in batch]
        if any(is_open) and not all(is_open):  # open questions are generated apart from scored ones
            parts = {flag: [i for i, o in enumerate(is_open) if o == flag] for flag in (True, False)}
            got = {i: d for idx in parts.values() for i, d in zip(idx, self._decide([batch[i] for i in idx]))}
            return [got[i] for i in range(len(batch))]
        self.load()
        inputs, texts = self.encode(batch)
        inputs = inputs.to(self._model.device)
        with torch.inference_mode():
            if self.generate or all(is_open):
                return self._generate(batch, inputs, texts)
            logits = self._model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1, :]
            wanted = sorted({i for ids in self._letter_ids.values() for i in ids})
            table = logits[:, wanted].float().cpu().tolist()
        out = []
        for req, text, row in zip(batch, texts, table):
            probs = letter_probs(dict(zip(wanted, row)), self._letter_ids, req.question.letters)
            out.append(Decision(probs=probs, method="logits", prompt=text))
        return out

    def _generate(self, batch: Sequence[ReasonRequest], inputs: Any, texts: list[str]) -> list[Decision]:
        tokenizer = self._processor.tokenizer
        inputs.pop("position_ids", None)  # generate derives positions from the attention mask itself
        limit = self.max_new_tokens if batch[0].question.options else self.max_text_tokens
        ids = self._model.generate(**inputs, do_sample=False, max_new_tokens=limit,
                                   min_new_tokens=min(self.min_new_tokens, limit) or None,
                                   pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
        new = tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        out = []
        for req, text, raw in zip(batch, texts, new):
            if not req.question.options:
                out.append(Decision(probs={}, method="generate", prompt=text, raw=raw, text=raw.strip()))
                continue
            found = extract_letter(raw, req.question.options)
            if found.letter is None:
                out.append(Decision(probs=uniform(req.question.letters), method="generate", prompt=text, raw=raw,
                                    flags=["unparsed"]))
            else:
                out.append(Decision(probs=one_hot(found.letter, req.question.letters), method="generate", prompt=text,
                                    raw=raw, flags=[found.flag]))
        return out
