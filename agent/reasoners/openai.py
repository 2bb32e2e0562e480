"""Qwen-VL behind an OpenAI-compatible server (vLLM, LMDeploy, llama.cpp ``llama-server``, Ollama).

One ``POST {base_url}/chat/completions`` per question; the photo and the request's extra images (``som``'s
marked image) go as base64 JPEG data URLs, downscaled to the same pixel budget as the in-process backend.
Three ways to an answer, tried in this order; the ``Decision`` flags say which one answered (``path:...``):

1. ``path:logprobs`` (method ``logits``): ask for ``logprobs``/``top_logprobs``; when the server returns them and
   the answer's first word is an option letter, each letter's score is the log-sum-exp of the alternatives at
   that position that spell it (``b``, `` B``, ``(b`` ...), softmaxed over the question's letters (letters
   outside the top-k get 0). A server that returns no logprobs is remembered and not asked again.
2. ``path:choice`` / ``path:guided_choice`` / ``path:json_schema`` / ``path:grammar`` (method ``generate``):
   constrained decoding to the option letters — vLLM ``structured_outputs.choice`` (``guided_choice`` before
   vLLM 0.12), a JSON schema enum (vLLM, LMDeploy, llama.cpp, Ollama), llama.cpp GBNF. Most servers ignore
   fields they do not know, so support is detected from the reply: a form counts as supported once a reply
   conforms to it, and is ruled out when the server rejects it (HTTP 400) or ignores it.
3. ``path:parsed``: plain generation, the letter parsed from the text (``extract_letter``, its rule flagged
   ``parsed:<rule>``); ``unparsed`` when none.

Open questions (``vqa chat`` without options) are plain generation: ``path:free_text``.

Requests of one ``decide`` batch run concurrently, at most ``max_concurrency`` in flight; each has ``timeout``
seconds and up to ``retries`` retries with exponential backoff on connection errors, timeouts, 408, 429 and
5xx, never on other 4xx. Retries and timeouts live only here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import httpx
from PIL import Image

import prompts
from agent.errors import ConfigError, ModelLoadError, VqaError
from agent.images import fit_pixels
from agent.probs import logsumexp, one_hot, softmax_over_letters, uniform
from agent.reasoners.base import ReasonRequest
from agent.reasoners.extract import extract_letter
from agent.schema import Decision

DIALECTS: tuple[str, ...] = ("choice", "guided_choice", "json_schema", "grammar")
Constrain = Literal["auto", "choice", "guided_choice", "json_schema", "grammar", "none"]
TOP_LOGPROBS = 20  # OpenAI's maximum, and vLLM's default --max-logprobs
_LETTER = re.compile(r"^[\s(\[*\"']*([a-eA-E])[\s)\].:*\"',]*$")


class ServerError(VqaError):
    """The server did not give a usable answer (down, overloaded, timing out, or an unexpected reply)."""


class _Rejected(Exception):
    """HTTP 400/422: the server refused this request's form (e.g. an unsupported constraint field)."""


@dataclass
class _Reply:
    text: str
    logprobs: list[dict] | None  # OpenAI ``choices[0].logprobs.content``


# ---------------------------------------------------------------- pure helpers


def token_letter(token: str) -> str | None:
    """The option letter a token spells (``"b"``, ``" B"``, ``"(b"``, ``"**B"``, ``"b."``), else ``None``."""
    m = _LETTER.match(token)
    return m.group(1).lower() if m else None


def logprob_probs(content: Sequence[dict], letters: Sequence[str], max_skip: int = 3) -> dict[str, float] | None:
    """Per-letter probabilities from the answer's first word, or ``None`` when it is not an option letter.

    Leading tokens without letters or digits (``"("``, ``"**"``, spaces) are skipped, at most ``max_skip``.
    """
    for i, entry in enumerate(content):
        token = entry.get("token", "")
        if not any(c.isalnum() for c in token):
            if i >= max_skip:
                return None
            continue
        if token_letter(token) not in letters:
            return None
        alternatives = [(token, entry.get("logprob", 0.0))]
        alternatives += [(t.get("token", ""), t.get("logprob", -math.inf)) for t in entry.get("top_logprobs") or []]
        scores: dict[str, list[float]] = {k: [] for k in letters}
        for tok, lp in dict(alternatives).items():
            k = token_letter(tok)
            if k in scores and lp is not None:
                scores[k].append(float(lp))
        return softmax_over_letters({k: logsumexp(v) for k, v in scores.items()})
    return None


def constraint_fields(dialect: str, letters: Sequence[str]) -> dict[str, Any]:
    """The request fields that constrain the answer to ``letters`` in one server dialect."""
    if dialect == "choice":
        return {"structured_outputs": {"choice": list(letters)}}
    if dialect == "guided_choice":
        return {"guided_choice": list(letters)}
    if dialect == "json_schema":
        schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": list(letters)}},
                  "required": ["answer"], "additionalProperties": False}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}}
    if dialect == "grammar":
        return {"grammar": "root ::= " + " | ".join(f'"{k}"' for k in letters)}
    raise ValueError(f"unknown constraint dialect {dialect!r}: expected one of {DIALECTS}")


def conforming_letter(text: str, dialect: str, letters: Sequence[str]) -> str | None:
    """The letter when ``text`` is exactly what ``dialect`` allows, else ``None`` (the server ignored it)."""
    t = text.strip()
    if dialect == "json_schema":
        try:
            t = json.loads(t)["answer"]
        except (ValueError, TypeError, KeyError):
            return None
    return t if t in letters else None


def data_url(image: Image.Image, max_pixels: int | None, quality: int = 92) -> str:
    img = image.convert("RGB")
    target = fit_pixels(img.size, max_pixels)
    if target != img.size:
        img = img.resize(target, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _error_message(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return " ".join(r.text.split())[:300] or r.reason_phrase
    msg = None
    if isinstance(data, dict):  # OpenAI/vLLM: {"error": {"message": ...}}; llama.cpp/Ollama: {"error": "..."}
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err or data.get("detail") or data.get("message")
    return str(msg or data)[:300]


# ---------------------------------------------------------------- the backend


@dataclass
class _Capabilities:
    """What this server turned out to support (shared by all threads of one backend)."""

    logprobs: bool | None = None
    dialect: str | None = None  # a constraint form that produced a conforming reply
    ruled_out: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class OpenAIBackend:
    """Reasoner on an OpenAI-compatible ``/v1/chat/completions`` server; ``load()`` checks server and model.

    ``generate=True`` skips logprob scoring (constrained decoding, then parsing). ``constrain`` picks one
    constraint form or ``"none"``; ``"auto"`` tries them in ``DIALECTS`` order until one works.
    """

    name = "openai"
    max_text_tokens = 256  # generation budget for open (free-text, `vqa chat`) questions

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, max_concurrency: int = 8,
                 timeout: float = 60.0, retries: int = 3, max_pixels: int | None = 1_003_520,
                 generate: bool = False, max_new_tokens: int = 16, constrain: Constrain = "auto",
                 backoff: float = 0.5) -> None:
        if not re.match(r"^https?://", base_url or ""):
            raise ConfigError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, found {base_url!r}")
        if constrain != "auto" and constrain != "none" and constrain not in DIALECTS:
            raise ConfigError(f"constrain must be 'auto', 'none' or one of {list(DIALECTS)}, found {constrain!r}")
        if max_concurrency < 1 or retries < 0 or timeout <= 0:
            raise ConfigError(f"expected max_concurrency >= 1, retries >= 0, timeout > 0; found "
                              f"{max_concurrency}, {retries}, {timeout}")
        self.model, self.base_url, self.api_key = model, base_url.rstrip("/"), api_key
        self.max_concurrency, self.timeout, self.retries, self.backoff = max_concurrency, timeout, retries, backoff
        self.max_pixels, self.generate, self.max_new_tokens = max_pixels, generate, max_new_tokens
        self.constrain = constrain
        self._caps = _Capabilities()
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._load_lock = threading.Lock()
        self._served: list[str] = []

    @property
    def concurrent_batches(self) -> int:
        """The server takes concurrent requests: the batcher keeps up to this many batches in flight."""
        return self.max_concurrency

    @property
    def fingerprint(self) -> str:
        """Everything that determines the output, hashed: for traces and cache keys."""
        parts = [self.model, self.base_url, str(self.max_pixels), self.constrain,
                 f"generate:{self.max_new_tokens}" if self.generate else "logprobs"]
        return f"openai:{self.model}@" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    def load(self) -> None:
        """Open the client and check that the server answers and serves ``model`` (idempotent)."""
        with self._load_lock:
            if self._pool is not None:
                return
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._client = httpx.Client(headers=headers, timeout=self.timeout, limits=limits)
            try:
                self._served = self._served_models()
            except BaseException:
                self._client.close()
                self._client = None
                raise
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai")

    def _served_models(self) -> list[str]:
        url = f"{self.base_url}/models"
        try:
            data = self._request("GET", "/models")
        except ServerError as exc:
            raise ModelLoadError(f"cannot reach an OpenAI-compatible server at {self.base_url}: {exc}. Is it "
                                 "running? Start one (README, 'Serving backend') or fix --base-url") from None
        except _Rejected as exc:
            raise ModelLoadError(f"GET {url} was refused: {exc}") from None
        ids = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)] if isinstance(data, dict) else None
        if not ids:
            raise ModelLoadError(f"GET {url} did not answer like an OpenAI-compatible server: expected JSON with a "
                                 f"'data' list of models, found {str(data)[:200]!r}")
        if self.model not in ids and f"{self.model}:latest" not in ids:
            raise ConfigError(f"model {self.model!r} is not served at {self.base_url}; it serves {ids}. Pass "
                              "--model with one of those names (vLLM: the path or id given to `vllm serve`, "
                              "or its --served-model-name; llama-server: its --alias)")
        return ids

    def close(self) -> None:
        """Stop the request pool (queued requests are cancelled) and close the HTTP client and its connections."""
        with self._load_lock:
            if self._pool is not None:  # running requests finish first: they still use the client
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------ deciding

    def decide(self, batch: Sequence[ReasonRequest]) -> list[Decision]:
        """All requests concurrently (at most ``max_concurrency`` in flight); the first failure fails the batch."""
        if not batch:
            return []
        self.load()
        futures = [self._pool.submit(self._one, req) for req in batch]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            wait(futures)
            raise failed.exception()
        fingerprint = self.fingerprint
        return [f.result().model_copy(update={"template": prompts.template_id(r.question), "reasoner": fingerprint})
                for r, f in zip(batch, futures, strict=True)]

    def _one(self, req: ReasonRequest) -> Decision:
        q = req.question
        messages, prompt = self._messages(req)
        if not q.options:
            text = self._complete(messages, self.max_text_tokens).text
            return Decision(probs={}, method="generate", prompt=prompt, raw=text, text=text.strip(),
                            flags=["path:free_text"])
        letters, seen = q.letters, None
        if not self.generate and self._caps.logprobs is not False:
            reply = self._try(messages, logprobs=True, top_logprobs=TOP_LOGPROBS)
            with self._caps.lock:
                self._caps.logprobs = reply is not None and reply.logprobs is not None
            if reply is not None:
                probs = logprob_probs(reply.logprobs, letters) if reply.logprobs else None
                if probs is not None:
                    return Decision(probs=probs, method="logits", prompt=prompt, raw=reply.text,
                                    flags=["path:logprobs"])
                seen = reply.text
        for dialect in self._dialects():
            reply = self._try(messages, **constraint_fields(dialect, letters))
            letter = conforming_letter(reply.text, dialect, letters) if reply is not None else None
            with self._caps.lock:
                if letter is not None:
                    self._caps.dialect = dialect
                elif self._caps.dialect != dialect:  # rejected (400) or ignored while probing
                    self._caps.ruled_out.add(dialect)
            if letter is not None:
                return Decision(probs=one_hot(letter, letters), method="generate", prompt=prompt,
                                raw=reply.text, flags=[f"path:{dialect}"])
            if reply is not None:  # the server ignored the constraint: its reply is a plain answer, parse it
                seen = reply.text
                break
        if seen is None:
            seen = self._complete(messages, self.max_new_tokens).text
        found = extract_letter(seen, q.options)
        if found.letter is None:
            return Decision(probs=uniform(letters), method="generate", prompt=prompt, raw=seen,
                            flags=["path:parsed", "unparsed"])
        return Decision(probs=one_hot(found.letter, letters), method="generate", prompt=prompt, raw=seen,
                        flags=["path:parsed", found.flag])

    def _dialects(self) -> list[str]:
        if self.constrain == "none":
            return []
        with self._caps.lock:
            if self._caps.dialect is not None:
                return [self._caps.dialect]
            wanted = DIALECTS if self.constrain == "auto" else (self.constrain,)
            return [d for d in wanted if d not in self._caps.ruled_out]

    def _messages(self, req: ReasonRequest) -> tuple[list[dict], str]:
        text, _ = prompts.render(req.question, req.results, history=req.history, marked=bool(req.images))
        images = ([req.image] if req.image is not None else []) + list(req.images)  # photo, then e.g. som's marks
        content: list[dict] = [{"type": "image_url", "image_url": {"url": data_url(im, self.max_pixels)}}
                               for im in images]
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}], text

    def _try(self, messages: list[dict], **extra: Any) -> _Reply | None:
        """A probe: the reply, or ``None`` when the server refuses the request's form (HTTP 400/422)."""
        try:
            return self._post(messages, self.max_new_tokens, **extra)
        except _Rejected:
            return None

    def _complete(self, messages: list[dict], max_tokens: int) -> _Reply:
        """Plain generation; a refusal here is the request itself (model, images), not an optional field."""
        try:
            return self._post(messages, max_tokens)
        except _Rejected as exc:
            raise ServerError(f"the server at {self.base_url} refused the request ({exc}). Is {self.model!r} a "
                              "vision-language model, and does the server accept this many images per prompt "
                              "(vLLM: --limit-mm-per-prompt)?") from None

    def _post(self, messages: list[dict], max_tokens: int, **extra: Any) -> _Reply:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, **extra}
        data = self._request("POST", "/chat/completions", body)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            logprobs = (choice.get("logprobs") or {}).get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(f"{self.base_url}/chat/completions answered without choices[0].message: "
                              f"{str(data)[:200]!r}") from None
        return _Reply(text=str(content), logprobs=logprobs or None)

    # ------------------------------------------------------------ HTTP with retries

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        """One call with retries on connection errors, timeouts, 408, 429 and 5xx; 4xx raise at once."""
        url = self.base_url + path
        problem, retry_after = "", None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
                retry_after = None
            try:
                r = self._client.request(method, url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g}s (raise request_timeout, or lower --batch-size)"
                continue
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code < 400:
                try:
                    return r.json()
                except ValueError:
                    raise ServerError(f"{method} {url} answered HTTP {r.status_code} with non-JSON: "
                                      f"{r.text[:200]!r}") from None
            if r.status_code in (408, 429) or r.status_code >= 500:
                problem = f"HTTP {r.status_code}: {_error_message(r)}"
                retry_after = r.headers.get("Retry-After") if r.status_code in (429, 503) else None
                continue
            raise self._client_error(r, method, url)
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        raise ServerError(f"{method} {url} failed after {tries}: {problem}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff (``backoff``, 2x, 4x ..., up to 10% jitter); a server's Retry-After (<= 60 s) wins."""
        wait_s = self.backoff * 2 ** (attempt - 1) * (1 + 0.1 * random.random())
        if retry_after and retry_after.isdigit():
            wait_s = max(wait_s, min(float(retry_after), 60.0))
        return wait_s

    def _client_error(self, r: httpx.Response, method: str, url: str) -> Exception:
        msg = _error_message(r)
        if r.status_code in (400, 422):
            return _Rejected(f"HTTP {r.status_code}: {msg}")
        if r.status_code in (401, 403):
            return ConfigError(f"the server at {self.base_url} refused the API key (HTTP {r.status_code}: {msg}); "
                               "pass --api-key or set VQA_API_KEY (or OPENAI_API_KEY)")
        if r.status_code == 404 and url.endswith("/models"):
            return ConfigError(f"GET {url} answered 404: expected an OpenAI-compatible base URL that ends in /v1, "
                               f"e.g. http://127.0.0.1:8000/v1, found {self.base_url}")
        if r.status_code == 404:
            served = f"; it serves {self._served}" if self._served else ""
            return ConfigError(f"the server at {self.base_url} does not serve model {self.model!r} "
                               f"(HTTP 404: {msg}){served}. Pass --model with a served name")
        if r.status_code == 413:
            return ServerError(f"the server refused the request as too large (HTTP 413: {msg}); lower --max-pixels")
        return ServerError(f"{method} {url} answered HTTP {r.status_code}: {msg}")
