"""The one retry policy for server requests (agent/reasoners/retry.py), on httpx's MockTransport standing for the
server: what is retried, how long it waits, what the caller gets when it gives up."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from agent.reasoners.retry import RetryTransport, attempts, retry_after, retryable


def scripted(*replies: int | Exception, headers: dict[str, str] | None = None):
    """A server that answers the given statuses (or raises the given errors) in turn; the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return httpx.Response(reply, headers=headers or {}, json={"n": len(seen)})

    return httpx.MockTransport(handler), seen


def client(inner: httpx.BaseTransport, retries: int, waits: list[float]) -> httpx.Client:
    return httpx.Client(transport=RetryTransport(retries, 0.5, inner=inner, sleep=waits.append), base_url="http://x")


@pytest.mark.parametrize(("status", "expected"), [(200, False), (400, False), (404, False), (409, False),
                                                   (408, True), (429, True), (500, True), (503, True)])
def test_retryable_statuses(status: int, expected: bool) -> None:
    assert retryable(status) is expected


def test_5xx_is_retried_with_doubling_backoff_and_the_body_posted_again() -> None:
    inner, seen = scripted(503, 502, 200)
    waits: list[float] = []
    r = client(inner, 3, waits).post("/v1/chat/completions", json={"q": 1})
    assert r.status_code == 200 and r.json() == {"n": 3}
    assert [req.content for req in seen] == [b'{"q":1}'] * 3
    assert len(waits) == 2 and 0.5 <= waits[0] <= 0.55 and 1.0 <= waits[1] <= 1.1
    assert r.extensions["vqa_attempts"] == 3


def test_other_4xx_is_never_retried() -> None:
    inner, seen = scripted(409)
    waits: list[float] = []
    assert client(inner, 3, waits).get("/v1/models").status_code == 409
    assert len(seen) == 1 and waits == []


def test_giving_up_returns_the_last_response_and_counts_the_attempts() -> None:
    inner, seen = scripted(500, 500, 500)
    waits: list[float] = []
    r = client(inner, 2, waits).get("/v1/models")
    assert r.status_code == 500 and len(seen) == 3 and len(waits) == 2
    err = httpx.HTTPStatusError("500", request=r.request, response=r)
    assert attempts(err, 2) == "3 attempts"


def test_connection_errors_are_retried_then_raised_with_the_attempts_noted() -> None:
    inner, seen = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectError("refused"))
    waits: list[float] = []
    with pytest.raises(httpx.ConnectError) as info:
        client(inner, 2, waits).get("/v1/models")
    assert len(seen) == 3 and len(waits) == 2
    wrapped = RuntimeError("sdk error")
    wrapped.__cause__ = info.value
    assert attempts(wrapped, 2) == "3 attempts"


def test_retry_after_in_seconds_or_as_a_date_wins_when_longer_and_is_capped() -> None:
    inner, _ = scripted(429, 200, headers={"Retry-After": "7"})
    waits: list[float] = []
    assert client(inner, 1, waits).get("/").status_code == 200
    assert waits == [7.0]
    t = RetryTransport(1, 0.5)
    assert t.delay(1, 600.0) == 60.0 and 0.5 <= t.delay(1, 0.1) <= 0.55 and 0.5 <= t.delay(1, None) <= 0.55
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after(httpx.Headers({"Retry-After": later})) <= 31
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after(httpx.Headers()) is None
