"""``transformers.Trainer`` with the per-epoch accuracy of ``vqa batch``'s letter scoring, and the callbacks that
keep the best adapter and write the log and plot.

Evaluation (``LetterTrainer.evaluate``, called by the Trainer at each epoch end): the rows are scored by a
``QwenBackend`` attached to the model being trained, i.e. by ``QwenBackend.decide``, the same code ``vqa batch``
scores with (one forward pass, next-token logits, logsumexp per letter, softmax over the question's letters);
the chosen letter breaks ties as ``finish`` does. Under data parallel each process scores a share of the rows
and the shares are gathered. Logged as ``val_accuracy``, ``val_nll`` (mean -log p(gold)) and ``val_rows``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import Trainer, TrainerCallback

from agent.train import logbook
from agent.train.examples import Example, request


def chosen(probs: dict[str, float], letters: Sequence[str]) -> str:
    """The letter ``finish`` picks: the highest probability, the earliest letter on ties."""
    return max(letters, key=lambda k: (probs.get(k, 0.0), -list(letters).index(k)))


class LetterTrainer(Trainer):
    """A Trainer whose evaluation is letter-scoring accuracy (see the module docstring)."""

    def __init__(self, *args: Any, scorer: Any, services: Any, eval_split: str, eval_batch_size: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scorer, self.services = scorer, services
        self.eval_split, self.eval_batch_size = eval_split, eval_batch_size

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        rows: list[Example] = list(eval_dataset if eval_dataset is not None else self.eval_dataset)
        world, rank = self.args.world_size, self.args.process_index
        mine = rows[rank::world]
        was_training = self.model.training
        self.model.eval()
        scored: list[tuple[bool, float]] = []
        try:
            for i in range(0, len(mine), self.eval_batch_size):
                chunk = mine[i:i + self.eval_batch_size]
                decisions = self.scorer.decide([request(e, self.services) for e in chunk])
                for e, d in zip(chunk, decisions):
                    q = e.question
                    p_gold = max(d.probs.get(q.answer, 0.0), 1e-12)
                    scored.append((chosen(d.probs, q.letters) == q.answer, -math.log(p_gold)))
        finally:
            self.model.train(was_training)
        if world > 1:
            shares: list[Any] = [None] * world
            torch.distributed.all_gather_object(shares, scored)
            scored = [s for share in shares for s in share]
        n = len(scored)
        prefix = self.eval_split
        metrics = {f"{prefix}_accuracy": sum(ok for ok, _ in scored) / n if n else 0.0,
                   f"{prefix}_nll": sum(v for _, v in scored) / n if n else 0.0, f"{prefix}_rows": float(n)}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics


class Logbook(TrainerCallback):
    """``train_log.jsonl`` (rewritten from the Trainer's history at start, so a resumed run lists each step once)
    and the plot after every evaluation and at the end. Main process only."""

    def __init__(self, folder: Path, title: str) -> None:
        self.log_path, self.plot_path, self.title = folder / logbook.LOG, folder / logbook.PLOT, title
        self.t0 = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            logbook.rewrite(self.log_path, state.log_history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and state.log_history:
            logbook.append(self.log_path, {**state.log_history[-1], "time": round(time.time(), 3)})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:
            logbook.plot(state.log_history, self.plot_path, self.title)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            logbook.plot(state.log_history, self.plot_path, self.title)


class KeepBest(TrainerCallback):
    """With a validation set: save the adapter whenever validation accuracy improves (ties: lower NLL).

    The best so far is read back from the Trainer's history at start, so a resumed run keeps comparing with the
    epochs before its checkpoint. ``save(model, metrics)`` writes the adapter and its manifest.
    """

    def __init__(self, save: Callable[[Any, dict[str, float]], None], metric: str = "val") -> None:
        self.save, self.metric = save, metric
        self.best: tuple[float, float] | None = None
        self.best_metrics: dict[str, float] | None = None

    def _key(self, m: dict[str, Any]) -> tuple[float, float] | None:
        acc = m.get(f"{self.metric}_accuracy")
        return None if acc is None else (acc, -m.get(f"{self.metric}_nll", 0.0))

    def on_train_begin(self, args, state, control, **kwargs):
        for h in state.log_history:
            key = self._key(h)
            if key is not None and (self.best is None or key > self.best):
                self.best, self.best_metrics = key, dict(h)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        key = self._key(metrics or {})
        if key is None or (self.best is not None and key <= self.best):
            return
        self.best = key
        self.best_metrics = {**metrics, "epoch": state.epoch, "step": state.global_step}
        if state.is_world_process_zero:
            self.save(model, self.best_metrics)
