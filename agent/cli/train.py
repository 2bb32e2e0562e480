"""``vqa train``: a LoRA / QLoRA adapter for the Qwen-VL reasoner from a labelled CSV, trained as it infers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import BY_SETTING, Config, Opt, SettingsFlags, Tools, err, fail, out, tools as parse_tools

# the shared flags vqa train takes too, declared once in agent.cli.common (--quant is its own: no 8bit here)
Model, Dtype, Device = (BY_SETTING[k].option() for k in ("model", "dtype", "device"))
MinPx, MaxPx, OcrEngine, ToolTimeout = (BY_SETTING[k].option() for k in ("min_pixels", "max_pixels", "ocr_engine",
                                                                         "tool_timeout"))
Detector, Segmenter, Kb = (BY_SETTING[k].option() for k in ("detector", "segmenter", "kb"))

Quant4 = Annotated[Optional[str], Opt("--quant", help="none (LoRA on bf16/fp32 weights) or 4bit (QLoRA: NF4 weights, "
                                      "bitsandbytes, CUDA GPU only).")]


def train_cmd(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Labelled file: id,path,question,a,b,c,d[,e],answer")],
    images: Annotated[Path, Opt("--images", help="Root folder the CSV's paths are relative to.")],
    out_dir: Annotated[Path, Opt("--out", help="ADAPTER_DIR: the adapter, its manifest, log, plot, checkpoints.")],
    model: Model = None, quant: Quant4 = None, dtype: Dtype = None, device: Device = None,
    min_pixels: MinPx = None, max_pixels: MaxPx = None, tools: Tools = None, config: Config = None,
    ocr_engine: OcrEngine = None, tool_timeout: ToolTimeout = None, detector: Detector = None,
    segmenter: Segmenter = None, kb: Kb = None,
    cache: Annotated[Optional[str], Opt("--cache", help="Tool cache: auto (ADAPTER_DIR/cache), off, or a folder "
                                        "(share it with vqa eval/batch to compute each tool output once).")] = None,
    val: Annotated[Optional[Path], Opt("--val", help="Labelled validation CSV (same --images root).")] = None,
    val_frac: Annotated[Optional[float], Opt("--val-frac", help="Hold out this share of the rows for validation "
                                             "(seeded); default 0: no validation, the last epoch is kept.")] = None,
    rank: Annotated[Optional[int], Opt("--rank", help="LoRA rank r. Default: 16.")] = None,
    alpha: Annotated[Optional[float], Opt("--alpha", help="LoRA alpha (scale alpha/r). Default: 32.")] = None,
    dropout: Annotated[Optional[float], Opt("--dropout", help="LoRA dropout. Default: 0.05.")] = None,
    target_modules: Annotated[Optional[str], Opt("--target-modules", help="Comma list of the language model's "
                                                 "linear layers to adapt. Default: q,k,v,o,gate,up,down_proj.")] = None,
    train_vision: Annotated[Optional[bool], Opt("--train-vision/--freeze-vision", help="Also adapt the vision "
                                                "tower's blocks. Default: frozen.")] = None,
    lr: Annotated[Optional[float], Opt("--lr", help="Peak learning rate. Default: 5e-4.")] = None,
    warmup: Annotated[Optional[float], Opt("--warmup", help="Share of the steps with linear warm-up before the "
                                           "cosine decay. Default: 0.05.")] = None,
    weight_decay: Annotated[Optional[float], Opt("--weight-decay", help="AdamW weight decay. Default: 0.")] = None,
    epochs: Annotated[Optional[float], Opt("--epochs", help="Passes over the training rows. Default: 3.")] = None,
    max_steps: Annotated[Optional[int], Opt("--max-steps", help="Optimizer steps; overrides --epochs.")] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Rows per forward pass, per GPU. "
                                             "Default: 2.")] = None,
    grad_accum: Annotated[Optional[int], Opt("--grad-accum", help="Forward passes per optimizer step. "
                                             "Default: 1.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], Opt("--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help="Recompute activations in the backward pass (less "
                                                          "memory, ~30% more time). Default: on with a GPU, off on "
                                                          "CPU.")] = None,
    seed: Annotated[Optional[int], Opt("--seed", help="Seed of the LoRA init, data order, dropout, split. "
                                       "Default: 0.")] = None,
    save_steps: Annotated[Optional[int], Opt("--save-steps", help="Checkpoint every N optimizer steps (default: "
                                             "every epoch).")] = None,
    eval_batch_size: Annotated[Optional[int], Opt("--eval-batch-size", help="Rows per scoring pass in the "
                                                  "per-epoch accuracy. Default: 8.")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    task: Annotated[str, Opt("--task", help="mc (a labelled CSV of lettered questions) or visdial (a VisDial v1.0 "
                             "JSON: LoRA on the ground-truth answers in the ranking prompt).")] = "mc",
) -> None:
    """Fine-tune a LoRA (or QLoRA) adapter on a labelled CSV with the same prompt and tool evidence as inference."""
    from agent.data import read_questions
    from agent.train.options import train_options
    from eval.evaluate import labelled

    if task not in ("mc", "visdial"):
        fail(f"--task must be mc or visdial, found {task!r}")
    if not images.is_dir():
        fail(f"--images {images} is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file; expected a folder for the adapter (it is created when missing): choose "
             f"another path, e.g. {out_dir.with_suffix('')}-adapter")
    if task == "visdial":
        if val is not None or val_frac or resume:
            fail("--val, --val-frac and --resume are for --task mc; --task visdial trains on every round of FILE")
        opts = train_options(rank=rank, alpha=alpha, dropout=dropout, train_vision=train_vision, lr=lr,
                             warmup=warmup, weight_decay=weight_decay, epochs=epochs, max_steps=max_steps,
                             batch_size=batch_size, grad_accum=grad_accum, seed=seed,
                             target_modules=[m.strip() for m in target_modules.split(",") if m.strip()]
                             if target_modules is not None else None)
        given = dict(model=model, quant=quant, dtype=dtype, device=device, min_pixels=min_pixels,
                     max_pixels=max_pixels, ocr_engine=ocr_engine, tool_timeout=tool_timeout, detector=detector,
                     segmenter=segmenter, kb=kb, cache=cache)
        settings = SettingsFlags(config, {k: v for k, v in given.items() if v is not None}).settings()
        _train_visdial(csv_path, images, out_dir, settings, opts, parse_tools(tools))
        return
    if val is not None and val_frac:
        fail("give --val CSV or --val-frac, not both")
    opts = train_options(rank=rank, alpha=alpha, dropout=dropout, train_vision=train_vision, lr=lr, warmup=warmup,
                         weight_decay=weight_decay, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                         grad_accum=grad_accum, gradient_checkpointing=gradient_checkpointing, seed=seed,
                         val_frac=val_frac, save_steps=save_steps, eval_batch_size=eval_batch_size,
                         target_modules=[m.strip() for m in target_modules.split(",") if m.strip()]
                         if target_modules is not None else None)
    rows = read_questions(csv_path, images)
    questions, row_errors, unlabelled = labelled(rows, csv_path)
    unusable = unusable_rows(rows)
    val_rows = []
    if val is not None:
        val_all = read_questions(val, images)
        val_rows, _, _ = labelled(val_all, val)
        unusable += [(qid, f"--val: {why}") for qid, why in unusable_rows(val_all)]
        overlap = sorted({q.id for q in questions} & {q.id for q in val_rows})
        if overlap:
            fail(f"--val {val} repeats {len(overlap)} training id(s) (first: {overlap[0]}); validation rows must be "
                 "held out")
    given = dict(model=model, quant=quant, dtype=dtype, device=device, min_pixels=min_pixels, max_pixels=max_pixels,
                 ocr_engine=ocr_engine, tool_timeout=tool_timeout, detector=detector, segmenter=segmenter, kb=kb,
                 cache=cache)
    settings = SettingsFlags(config, {k: v for k, v in given.items() if v is not None}).settings()
    forced = parse_tools(tools)  # after the settings: the config file may register plug-in tools
    from agent.train.examples import split_rows

    if val is None:
        questions, val_rows = split_rows(questions, opts.val_frac, opts.seed)
    if unusable:
        err.print(f"skipping {row_errors} malformed and {unlabelled} unlabelled row(s) of {csv_path} "
                  f"(all listed in {out_dir / SKIPPED_FILE}):")
        for qid, reason in unusable[:SHOWN]:
            err.print(f"  skipped {qid}: {reason}", highlight=False)
        if len(unusable) > SHOWN:
            err.print(f"  ... and {len(unusable) - SHOWN} more")
        write_skipped(out_dir, unusable)
    result = _run(questions, val_rows, settings, opts, out_dir, images, forced, resume)
    if not result.main_process:  # data parallel: the main process reports
        return
    best = result.best
    skipped = unusable + list(result.skipped)
    write_skipped(out_dir, skipped)
    out.print(f"[bold]rows[/] train {result.train_rows}, val {result.val_rows}, skipped {len(skipped)}   "
              f"[bold]steps[/] {result.steps} ({result.epochs:.2f} epochs, {result.seconds:.1f}s)   [bold]loss[/] "
              f"{_f(result.first_loss)} -> {_f(result.last_loss)}"
              + (f"   [bold]best val accuracy[/] {best['val_accuracy']:.1%} (epoch {best['epoch']:.0f})"
                 if best else ""))
    if result.tools:
        out.print("[bold]tools[/] " + ", ".join(f"{t} ok {c['ok']} failed {c['failed']}"
                                              for t, c in result.tools.items()))
    for qid, reason in result.skipped[:5]:
        err.print(f"skipped {qid}: {reason}", highlight=False)
    out.print(f"adapter: {out_dir}   log: {out_dir / 'train_log.jsonl'}   plot: {out_dir / 'train_plot.png'}")


def _train_visdial(file: Path, images: Path, out_dir: Path, settings, opts, forced) -> None:
    """``--task visdial``: read the rounds (a bad file stops before any model loads), train, print the summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agent.train.visdial import train_visdial
    from agent.visdial.data import read_dialogs

    rounds = read_dialogs(file, images)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
    bars: dict[str, int] = {}

    def tick(name: str, done: int, total: int, info: str = "") -> None:
        if name not in bars:
            bars[name] = progress.add_task(name, total=total, info="")
        progress.update(bars[name], completed=done, info=info)

    with progress:
        res = train_visdial(rounds, settings, opts, out_dir, images, forced_tools=forced,
                            on_evidence=lambda d, t: tick("tool evidence", d, t),
                            on_step=lambda s, t, loss: tick("training", s, t, f"loss={loss:.4f}"))
    write_skipped(out_dir, res["skipped"])
    out.print(f"[bold]rounds[/] train {res['train_rows']}, skipped {len(res['skipped'])}   [bold]steps[/] "
              f"{res['steps']} ({res['seconds']:.1f}s)   [bold]loss[/] {_f(res['first_loss'])} -> "
              f"{_f(res['last_loss'])}")
    out.print(f"adapter: {out_dir}   log: {out_dir / 'train_log.jsonl'}   (use it: vqa rank/eval --task visdial "
              f"--adapter {out_dir})")


SKIPPED_FILE = "skipped_rows.csv"  # in --out: every row left out of training, with the reason
SHOWN = 10  # skipped rows named on the terminal; the file has them all


def unusable_rows(rows: list) -> list[tuple[str, str]]:
    """``(id, reason)`` of each row training cannot use: a ``RowError`` (its reason and message; ``line N`` when it
    has no id) or a question without a gold answer."""
    from agent.data import RowError

    return [(r.id or f"line {r.line}", f"{r.reason}: {r.message}") if isinstance(r, RowError)
            else (r.id, "unlabelled: the answer column is empty; training needs the gold letter")
            for r in rows if isinstance(r, RowError) or r.answer is None]


def write_skipped(out_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """``--out/skipped_rows.csv``: ``id,reason`` for every row left out (written before training, and after it
    with the rows the tool pass skipped)."""
    import csv

    from agent.core.fileio import atomic_open
    from agent.data import spreadsheet_cell

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / SKIPPED_FILE, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "reason"])
        w.writerows([spreadsheet_cell(qid), spreadsheet_cell(reason)] for qid, reason in skipped)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _run(questions, val_rows, settings, opts, out_dir: Path, images: Path, forced, resume: bool):
    """The training run under a Rich progress bar: tool evidence, then optimizer steps with loss, accuracy, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    from agent.train.run import train

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                        transient=False, disable=os.environ.get("RANK", "0") != "0")  # torchrun: rank 0 draws it

    class RichProgress(TrainerCallback):
        task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.task = progress.add_task("training", total=state.max_steps, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.task is not None:
                progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.task is None or not logs:
                return
            info = progress.tasks[self.task].fields.get("info", "")
            parts = dict(p.split("=", 1) for p in info.split() if "=" in p)
            if "loss" in logs:
                parts["loss"] = f"{logs['loss']:.4f}"
            for split in ("val", "train"):
                if f"{split}_accuracy" in logs:
                    parts[f"{split}_acc"] = f"{logs[f'{split}_accuracy']:.3f}"
            parts["epoch"] = f"{state.epoch or 0:.2f}"
            progress.update(self.task, info=" ".join(f"{k}={v}" for k, v in parts.items()))

    evidence = {}

    def on_evidence(done: int, total: int) -> None:
        if "task" not in evidence:
            evidence["task"] = progress.add_task("tool evidence", total=total, info="")
        progress.update(evidence["task"], completed=done)

    with progress:
        return train(questions, settings, opts, out_dir, images, val_rows=val_rows, forced_tools=forced, resume=resume,
                     callbacks=[RichProgress()], on_evidence=on_evidence)
