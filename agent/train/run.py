"""One ``vqa train`` run: checks, evidence, the LoRA model, the Trainer, the adapter and its manifest.

``OUT`` (ADAPTER_DIR) holds the adapter (``adapter_config.json``, ``adapter_model.safetensors``: the best
validation epoch, or the last epoch without validation) with ``vqa_adapter.json`` (the manifest),
``train_log.jsonl``, ``train_plot.png``, ``evidence.jsonl`` (each row's tool results and exact prompt),
``train_config.json`` (the settings the run started with; ``--resume`` must repeat them), ``checkpoints/`` (the
Trainer's, for ``--resume``; the last two are kept), ``cache/`` (the tool cache, unless ``--cache`` names
another) and ``evidence/`` (images the tools drew).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import prompts
from agent.config import Settings
from agent.core.adapter import base_fingerprint
from agent.core.errors import ConfigError
from agent.core.schema import Question
from agent.rundir import package_version
from agent.train import logbook
from agent.train.manifest import template_versions, write_manifest
from agent.train.options import TrainOptions
from tools import tool_flags

CHECKPOINTS, CONFIG, EVIDENCE = "checkpoints", "train_config.json", "evidence.jsonl"


@dataclass
class TrainResult:
    out: Path
    train_rows: int
    val_rows: int
    skipped: list[tuple[str, str]]
    tools: dict[str, dict[str, int]]  # tool -> {"ok": n, "failed": n} over the rows' evidence
    steps: int = 0
    epochs: float = 0.0
    first_loss: float | None = None
    last_loss: float | None = None
    best: dict[str, float] | None = None
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = ""  # "cuda max allocated" or "process peak RSS"
    resumed_from: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    main_process: bool = True  # False in the other processes of a data-parallel run


def check_settings(settings: Settings) -> None:
    """Before any work: ``--quant`` none or 4bit, 4bit (QLoRA) only with a CUDA GPU and bitsandbytes; fp16 only
    on a GPU; the retrieve leakage guard on."""
    import importlib.util

    import torch

    if settings.quant not in ("none", "4bit"):
        raise ConfigError(f"vqa train supports --quant none (bf16/fp32 LoRA) or 4bit (QLoRA), found {settings.quant!r}")
    if settings.quant == "4bit":
        if not torch.cuda.is_available() or settings.device == "cpu":
            raise ConfigError(f"--quant 4bit (QLoRA) trains on a CUDA GPU with bitsandbytes, but torch "
                              f"{torch.__version__} sees no CUDA GPU here; use --quant none (LoRA in bf16/fp32) on "
                              "this machine, or run on a GPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("--quant 4bit (QLoRA) needs bitsandbytes, which is not installed; "
                              "pip install 'vqa-orchestrator[gpu]'")
    if settings.dtype == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--dtype fp16 trains with CUDA mixed precision; on CPU use --dtype fp32 or bf16")
    if settings.tool_settings().get("retrieve", {}).get("leakage_guard") == "off":
        raise ConfigError("retrieve leakage_guard 'off' would let a training row retrieve itself with its answer; "
                          "vqa train needs 'row' (the default) or 'image'")


def train_device(settings: Settings) -> str:
    """This process's device: the CPU, or its GPU (under ``torchrun``/``accelerate launch`` each process takes the
    one its ``LOCAL_RANK`` names; pick GPUs with ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    if settings.device == "cpu" or (settings.device == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if settings.device not in ("auto", "cuda"):
        raise ConfigError(f"vqa train runs on --device auto, cuda or cpu, found {settings.device!r}; choose the GPU "
                          "with CUDA_VISIBLE_DEVICES (each process of torchrun takes its own)")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA GPU; use --device cpu or auto")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete Trainer checkpoint (``trainer_state.json`` is written last)."""
    folder = out / CHECKPOINTS
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def run_config(settings: Settings, options: TrainOptions, forced: list[str] | None,
               train: Sequence[Question], val: Sequence[Question]) -> dict[str, Any]:
    """What determines the run; ``--resume`` refuses to continue a run started with anything else."""
    rows = hashlib.sha256(json.dumps([[q.id, q.answer] for q in train] + [["val"]] + [[q.id, q.answer] for q in val])
                          .encode()).hexdigest()[:16]
    keep = ("model", "quant", "dtype", "min_pixels", "max_pixels", "image_max_pixels", "tool_tables",
            *tool_flags())  # every tool's settings: its table and the flags it declares (Tool.flags)
    return {"options": options.model_dump(mode="json"), "settings": settings.model_dump(mode="json", include=set(keep)),
            "tools": "router" if forced is None else forced, "rows": rows}


def prepare_out(out: Path, config: dict[str, Any], resume: bool) -> Path | None:
    """Check ``OUT`` against ``--resume``; returns the checkpoint to resume from (or ``None``)."""
    ckpt = latest_checkpoint(out)
    if not resume:  # a run killed before its first checkpoint has nothing to resume: it starts again
        if ckpt is not None:
            raise ConfigError(f"{out} already holds a training run; pass --resume to continue it, or choose "
                              "another --out")
        return None
    if ckpt is None:
        raise ConfigError(f"--resume: no checkpoint in {out / CHECKPOINTS} (a run saves one per epoch); "
                          "run without --resume to start")
    before = json.loads((out / CONFIG).read_text(encoding="utf-8")) if (out / CONFIG).is_file() else {}
    diff = [k for k in sorted(set(before) | set(config)) if before.get(k) != config.get(k)]
    if diff:
        detail = []
        for k in diff:
            a, b = before.get(k), config.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                detail += [f"{k}.{n}: {a.get(n)!r} -> {b.get(n)!r}" for n in sorted(set(a) | set(b))
                           if a.get(n) != b.get(n)]
            else:
                detail.append(f"{k}: {a!r} -> {b!r}")
        raise ConfigError(f"--resume: {out} was started with other settings ({'; '.join(detail)}); resume with the "
                          "same flags and CSV, or train into another --out")
    return ckpt


def evidence_services(settings: Settings, images: Path, out: Path, exclude_ids: Sequence[str] = ()):
    """The graph's services for gathering evidence: the configured tools and the tool cache, the model-free
    evidence reasoner in the model's place. ``exclude_ids`` are kept out of retrieval (the validation rows)."""
    from agent.cache import open_cache
    from agent.graph import Services
    from agent.reasoners.evidence import EvidenceReasoner

    tool_settings = settings.tool_settings()
    retrieve = dict(tool_settings.get("retrieve", {}))
    if exclude_ids:
        retrieve["exclude_ids"] = sorted(set(map(str, retrieve.get("exclude_ids", ()))) | set(exclude_ids))
        tool_settings["retrieve"] = retrieve
    return Services(reasoner=EvidenceReasoner(), tool_settings=tool_settings, max_pixels=settings.image_max_pixels,
                    hard_cap_pixels=settings.hard_cap_pixels, tool_timeout=settings.tool_timeout,
                    artifacts_dir=out / "evidence", images_root=images, cache=open_cache(settings.cache, out))


def build_model(settings: Settings, options: TrainOptions, device: str):
    """``(backend, peft model, processor)``: the checkpoint loaded as inference loads it (``load_checkpoint``),
    LoRA added, and a ``QwenBackend`` attached to it for scoring."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from agent.reasoners.qwen import QwenBackend, load_checkpoint

    backend = QwenBackend(settings.model, quant=settings.quant, dtype=settings.dtype, device=device,
                          min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    model, processor = load_checkpoint(settings.model, quant=settings.quant, dtype=backend.dtype, device=device)
    set_seed(options.seed)  # the LoRA A matrices are drawn here
    lora = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout, bias="none",
                      target_modules=options.lora_targets(), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    backend.attach(model, processor)
    return backend, model, processor


def training_arguments(options: TrainOptions, out: Path, device: str, dtype: str, validate: bool):
    """The Trainer's arguments: warm-up then cosine decay, a log line per step, a checkpoint per epoch (or per
    ``save_steps``), the last two kept, evaluation per epoch when there is a validation set."""
    from transformers import TrainingArguments

    cuda = device.startswith("cuda")
    checkpointing = cuda if options.gradient_checkpointing is None else options.gradient_checkpointing
    name = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    recompute = {f"{name}_checkpointing": checkpointing, f"{name}_checkpointing_kwargs": {"use_reentrant": False}}
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1, learning_rate=options.lr, warmup_steps=options.warmup,
        lr_scheduler_type="cosine", weight_decay=options.weight_decay, logging_strategy="steps", logging_steps=1,
        eval_strategy="epoch" if validate else "no", save_strategy="steps" if options.save_steps else "epoch",
        save_steps=options.save_steps or 500, save_total_limit=2, seed=options.seed, data_seed=options.seed,
        bf16=dtype == "bfloat16", fp16=dtype == "float16", use_cpu=device == "cpu",
        remove_unused_columns=False, label_names=["labels"], report_to="none", disable_tqdm=True,
        dataloader_pin_memory=cuda, ddp_find_unused_parameters=False, **recompute)


def manifest_data(settings: Settings, options: TrainOptions, model: Any, dtype: str, forced: list[str] | None,
                  templates: set[str], tools: dict[str, dict[str, int]], rows: tuple[int, int]) -> dict[str, Any]:
    return {
        "base_model": {"name": settings.model, "fingerprint": base_fingerprint(settings.model),
                       "architecture": list(getattr(model.config, "architectures", None) or []),
                       "quant": settings.quant, "dtype": dtype},
        "prompt": {"templates": template_versions(sorted(templates))},
        "tools": {"mode": "router" if forced is None else "forced", "forced": forced,
                  "settings": {k: {n: v for n, v in s.items() if n != "exclude_ids"}
                               for k, s in settings.tool_settings().items()}, "ran": tools},
        "pixels": {"min_pixels": settings.min_pixels, "max_pixels": settings.max_pixels,
                   "image_max_pixels": settings.image_max_pixels},
        "lora": {"rank": options.rank, "alpha": options.alpha, "dropout": options.dropout,
                 "target_modules": options.lora_targets(), "train_vision": options.train_vision},
        "training": {**options.model_dump(mode="json"), "train_rows": rows[0], "val_rows": rows[1]},
        "package": package_version(),
    }


def train(train_rows: Sequence[Question], settings: Settings, options: TrainOptions, out: Path, images: Path, *,
          val_rows: Sequence[Question] = (), forced_tools: list[str] | None = None, resume: bool = False,
          callbacks: Sequence[Any] = (), on_evidence: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train a LoRA adapter into ``out`` (see the module docstring); returns what happened."""
    import torch
    from transformers.trainer_callback import PrinterCallback

    from agent.train.examples import Collator, collect, request, write_evidence
    from agent.train.trainer import KeepBest, LetterTrainer, Logbook

    check_settings(settings)
    device, out = train_device(settings), Path(out)
    config = run_config(settings, options, forced_tools, train_rows, val_rows)
    ckpt = prepare_out(out, config, resume)
    out.mkdir(parents=True, exist_ok=True)
    backend, model, processor = build_model(settings, options, device)
    dtype = str(backend.dtype).removeprefix("torch.")
    args = training_arguments(options, out, device, dtype, validate=bool(val_rows))
    main = args.process_index == 0

    # Evidence: the main process computes it first, the others then read it from the tool cache.
    total, done = len(train_rows) + len(val_rows), [0]

    def tick(_q: Question) -> None:
        done[0] += 1
        if on_evidence and main:
            on_evidence(done[0], total)

    with args.main_process_first(desc="tool evidence"):
        train_ex, skipped = collect(train_rows, evidence_services(settings, images, out, [q.id for q in val_rows]),
                                    split="train", forced_tools=forced_tools, on_done=tick)
        services = evidence_services(settings, images, out)
        val_ex, skipped_val = collect(val_rows, services, split="val", forced_tools=forced_tools, on_done=tick)
    skipped += skipped_val
    for name, got, asked in (("training", train_ex, train_rows), ("validation", val_ex, val_rows)):
        if asked and not got:
            raise ConfigError(f"no {name} row is usable: all {len(asked)} were skipped (first: {skipped[0][0]}: "
                              f"{skipped[0][1]})")
    tools: dict[str, dict[str, int]] = {}
    templates: set[str] = set()
    chat: dict[str, str] = {}
    for e in train_ex + val_ex:
        for r in e.results:
            tools.setdefault(r.tool, {"ok": 0, "failed": 0})["ok" if r.ok else "failed"] += 1
        req = request(e, services)
        templates.add(prompts.render(req.question, req.results, history=req.history, marked=bool(req.images))[1])
        chat[e.question.id] = backend.chat_text(req)
    if main:
        write_evidence(out / EVIDENCE, train_ex + val_ex, chat)
        (out / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    manifest = manifest_data(settings, options, model, dtype, forced_tools, templates, tools,
                             (len(train_ex), len(val_ex)))

    def save_adapter(m: Any, metrics: dict[str, float] | None) -> None:
        m.save_pretrained(out)
        write_manifest(out, {**manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "metrics": metrics})

    keep = KeepBest(save_adapter, "val") if val_ex else None
    trainer = LetterTrainer(
        model=model, args=args, train_dataset=train_ex, eval_dataset=val_ex or None,
        data_collator=Collator(backend, processor.tokenizer, services),
        callbacks=[Logbook(out, f"{Path(settings.model).name}: LoRA r={options.rank}, lr={options.lr:g}"),
                   *([keep] if keep else []), *callbacks],
        scorer=backend, services=services, eval_split="val", eval_batch_size=options.eval_batch_size)
    trainer.remove_callback(PrinterCallback)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    if keep is not None and not any(h.get("step") == trainer.state.global_step and "val_accuracy" in h
                                    for h in trainer.state.log_history):
        trainer.evaluate()  # training stopped between epochs (--max-steps): score the final weights too
    seconds = time.perf_counter() - t0
    if keep is None and main:
        save_adapter(trainer.model, None)
    history = list(trainer.state.log_history)
    steps = logbook.losses(history)
    return TrainResult(
        out=out, train_rows=len(train_ex), val_rows=len(val_ex), skipped=skipped, tools=tools,
        steps=trainer.state.global_step, epochs=float(trainer.state.epoch or 0.0),
        first_loss=steps[0][1] if steps else None, last_loss=steps[-1][1] if steps else None,
        best=keep.best_metrics if keep else None, seconds=seconds,
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if cuda else _peak_rss(),
        memory_kind="cuda max allocated" if cuda else "process peak RSS", resumed_from=str(ckpt) if ckpt else None,
        history=history, main_process=main)


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

