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
   conforms to it, and is ruled out when the server rejects it (HTTP 400) or ignores it. An ignored form's
   reply is a plain answer: parsed when it names a letter, else the next form is tried.
3. ``path:parsed``: plain generation, the letter parsed from the text (``extract_letter``, its rule flagged
   ``parsed:<rule>``); ``unparsed`` when none.

Open questions (``vqa chat`` without options) are plain generation: ``path:free_text``.

HTTP is the ``openai`` SDK's client (connection pool, per-request ``timeout``) over the retrying transport of
``agent.reasoners.retry`` (the SDK's own retries off): connection errors, timeouts, 408, 429 and 5xx are retried
with backoff, never another 4xx; the ``vlm`` planner's chat model uses the same policy. Server-specific fields
(``structured_outputs``, ``guided_choice``, ``grammar``) go into the request body under their servers' names.
Requests of one ``decide`` batch run concurrently, at most ``max_concurrency`` in flight over every calling thread.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import openai
from PIL import Image

import prompts
from agent.core.errors import ConfigError, ModelLoadError, VqaError
from agent.core.images import encode_jpeg, fit_pixels
from agent.core.probs import one_hot, uniform
from agent.core.schema import Decision
from agent.reasoners.base import ReasonRequest
from agent.reasoners.extract import extract_letter
from agent.reasoners.letter_forms import DIALECTS, conforming_letter, constraint_fields, logprob_probs
from agent.reasoners.retry import attempts, retryable, retrying_client

Constrain = Literal["auto", "choice", "guided_choice", "json_schema", "grammar", "none"]
TOP_LOGPROBS = 20  # OpenAI's maximum, and vLLM's default --max-logprobs


class ServerError(VqaError):
    """The server did not give a usable answer (down, overloaded, timing out, or an unexpected reply)."""


class _Rejected(Exception):
    """HTTP 400/422: the server refused this request's form (e.g. an unsupported constraint field)."""


@dataclass
class _Reply:
    text: str
    logprobs: list[dict] | None  # OpenAI ``choices[0].logprobs.content``


def data_url(image: Image.Image, max_pixels: int | None, quality: int = 92) -> str:
    img = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image
    target = fit_pixels(img.size, max_pixels)
    if target != img.size:
        img = img.resize(target, Image.Resampling.LANCZOS)
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(img, quality)).decode("ascii")


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
        self._client: openai.OpenAI | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(max_concurrency)  # requests in flight, from every thread
        self._load_lock = threading.Lock()
        self._served: list[str] = []
        self._name = model  # the name sent in requests: the served one (Ollama lists "name:latest")

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
            # The SDK insists on a key; "EMPTY" is what servers started without --api-key expect (vLLM's docs).
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY", timeout=self.timeout,
                                         max_retries=0, http_client=retrying_client(self.retries, self.timeout,
                                                                                    self.backoff))
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
            data = self._call(f"GET {url}", self._client.get, "/models", cast_to=object)
        except ServerError as exc:
            raise ModelLoadError(f"cannot reach an OpenAI-compatible server at {self.base_url}: {exc}. Is it "
                                 "running? Start one (docs/serving.md) or fix --base-url") from None
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
        self._name = self.model if self.model in ids else f"{self.model}:latest"
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
        """All requests concurrently, at most ``max_concurrency`` in flight over every caller; the first failure
        fails the batch. A batch of one (the batcher's usual case for a server) runs in the calling thread."""
        if not batch:
            return []
        self.load()
        if len(batch) == 1:
            decisions = [self._one(batch[0])]
        else:
            futures = [self._pool.submit(self._one, req) for req in batch]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
            if failed is not None:
                for f in futures:
                    f.cancel()
                wait(futures)
                raise failed.exception()
            decisions = [f.result() for f in futures]
        fingerprint = self.fingerprint
        return [d.model_copy(update={"template": prompts.template_id(r.question), "reasoner": fingerprint})
                for r, d in zip(batch, decisions, strict=True)]

    def _one(self, req: ReasonRequest) -> Decision:
        with self._slots:
            return self._answer(req)

    def _answer(self, req: ReasonRequest) -> Decision:
        q = req.question
        messages, prompt = self._messages(req)
        if not q.options:
            text = self._complete(messages, self.max_text_tokens).text
            return Decision(probs={}, method="generate", prompt=prompt, raw=text, text=text.strip(),
                            flags=["path:free_text"])
        letters, seen = q.letters, None
        if not self.generate and self._caps.logprobs is not False:
            reply = self._try(messages, logprobs=True)
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
                if extract_letter(seen, q.options).letter is not None:
                    break  # else the next form may be one this server honours (llama.cpp: grammar)
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

    def _post(self, messages: list[dict], max_tokens: int, *, logprobs: bool = False, **extra: Any) -> _Reply:
        """One chat completion; ``extra`` (server-specific fields: the constraint forms) goes into the body.

        Sent with the client's generic ``post``, which keeps its retries, timeouts and pool: the typed
        ``chat.completions.create`` walks the whole request, base64 images included (~2 ms of CPU a request)."""
        body = {"model": self._name, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, **extra}
        if logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        data = self._call(f"POST {self.base_url}/chat/completions", self._client.post, "/chat/completions",
                          body=body, cast_to=object)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            if isinstance(content, list):  # some servers return content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            tokens = (choice.get("logprobs") or {}).get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(f"{self.base_url}/chat/completions answered without choices[0].message: "
                              f"{str(data)[:200]!r}") from None
        return _Reply(text=str(content), logprobs=tokens or None)

    # ------------------------------------------------------------ errors (retries: agent.reasoners.retry)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` through the SDK; its errors become ours, saying what to do about them."""
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as exc:
            code, msg = exc.status_code, _error_message(exc)
            if code == 500 and "validation error" in msg:  # llama-cpp-python's server: a refused field is a 500
                raise _Rejected(f"HTTP {code}: {msg}") from None
            if retryable(code):
                raise ServerError(f"{what} failed after {attempts(exc, self.retries)}: HTTP {code}: {msg}") from None
            if code in (400, 422):
                raise _Rejected(f"HTTP {code}: {msg}") from None
            if code in (401, 403):
                raise ConfigError(f"the server at {self.base_url} refused the API key (HTTP {code}: {msg}); pass "
                                  "--api-key or set VQA_API_KEY (or OPENAI_API_KEY)") from None
            if code == 404 and what.endswith("/models"):
                raise ConfigError(f"{what} answered 404: expected an OpenAI-compatible base URL that ends in /v1, "
                                  f"e.g. http://127.0.0.1:8000/v1, found {self.base_url}") from None
            if code == 404:
                served = f"; it serves {self._served}" if self._served else ""
                raise ConfigError(f"the server at {self.base_url} does not serve model {self.model!r} (HTTP 404: "
                                  f"{msg}){served}. Pass --model with a served name") from None
            if code == 413:
                raise ServerError(f"the server refused the request as too large (HTTP 413: {msg}); lower "
                                  "--max-pixels") from None
            raise ServerError(f"{what} answered HTTP {code}: {msg}") from None
        except openai.APITimeoutError as exc:
            raise ServerError(f"{what} failed after {attempts(exc, self.retries)}: no answer within "
                              f"{self.timeout:g}s (raise request_timeout, or lower --batch-size)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise ServerError(f"{what} failed after {attempts(exc, self.retries)}: "
                              f"{type(cause).__name__}: {cause}") from None



def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body  # the SDK unwraps OpenAI's {"error": {...}}; llama.cpp/Ollama send {"error": "..."}
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    return " ".join(str(body or exc.response.reason_phrase).split())[:300]

