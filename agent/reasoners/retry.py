"""One retry policy for every request to an OpenAI-compatible server: an ``httpx`` transport.

The scorer (``agent.reasoners.openai``, through the ``openai`` SDK) and the ``vlm`` planner's chat model
(LangChain's ``ChatOpenAI``) both send their HTTP through ``retrying_client``, with the SDK's own retries turned
off (``max_retries=0``), so the same server sees the same policy from both:

- retried: connection errors, timeouts (each attempt gets the request's whole timeout), HTTP 408, 429 and 5xx;
  never another 4xx (the SDK alone would also retry 409);
- ``retries`` retries after the first attempt, waiting ``backoff``, 2x, 4x ... (up to 10% jitter); a server's
  ``Retry-After`` (seconds or an HTTP date, at most 60 s) wins when longer.

Only public ``httpx`` API: a ``BaseTransport`` wrapping ``HTTPTransport``, passed as ``http_client``.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx

MAX_RETRY_AFTER = 60.0


def retryable(status: int) -> bool:
    """Worth another attempt: 408 (request timeout), 429 (rate limit) and 5xx; never another 4xx."""
    return status in (408, 429) or status >= 500


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a server asked to wait (``Retry-After``: seconds or an HTTP date), or ``None``."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()


class RetryTransport(httpx.BaseTransport):
    """Sends a request up to ``retries + 1`` times under the policy above; the last response or error is the
    caller's. ``attempts`` is how many attempts the last request of this thread took (for error messages)."""

    def __init__(self, retries: int, backoff: float = 0.5, *, inner: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError(f"expected retries >= 0 and backoff >= 0, found {retries} and {backoff}")
        self.retries, self.backoff, self.sleep = retries, backoff, sleep
        # the openai SDK's own pool limits (httpx's defaults keep only 20 idle connections)
        self.inner = inner or httpx.HTTPTransport(limits=httpx.Limits(max_connections=1000,
                                                                      max_keepalive_connections=100))

    def delay(self, attempt: int, after: float | None) -> float:
        """Seconds before retry ``attempt`` (1, 2 ...): backoff doubling with jitter, or a longer Retry-After."""
        wait_s = self.backoff * 2 ** (attempt - 1) * (1 + 0.1 * random.random())
        return max(wait_s, min(after, MAX_RETRY_AFTER)) if after and after > 0 else wait_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:  # connection refused or dropped, timeouts
                if attempt >= self.retries:
                    exc.add_note(f"attempts: {attempt + 1}")
                    raise
                self.sleep(self.delay(attempt + 1, None))
            else:
                if not retryable(response.status_code) or attempt >= self.retries:
                    response.extensions = {**response.extensions, "vqa_attempts": attempt + 1}
                    return response
                response.read()
                response.close()
                self.sleep(self.delay(attempt + 1, retry_after(response.headers)))
            attempt += 1

    def close(self) -> None:
        self.inner.close()


def retrying_client(retries: int, timeout: float, backoff: float = 0.5) -> httpx.Client:
    """An ``httpx.Client`` for the ``openai`` SDK or ``ChatOpenAI`` (``http_client=``; give them ``max_retries=0``)."""
    return httpx.Client(transport=RetryTransport(retries, backoff), timeout=timeout, follow_redirects=True)


def attempts(exc: BaseException, retries: int) -> str:
    """How many attempts a failed request took: from the response (a status) or the note on the error."""
    response = getattr(exc, "response", None)
    n = response.extensions.get("vqa_attempts") if isinstance(response, httpx.Response) else None
    if n is None:
        cause = exc.__cause__ or exc
        n = next((int(note.split(": ", 1)[1]) for note in getattr(cause, "__notes__", ())
                  if note.startswith("attempts: ")), retries + 1)
    return f"{n} attempt{'s' if n > 1 else ''}"
