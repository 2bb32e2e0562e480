"""TEST DOUBLE — a scripted stand-in for an OpenAI-compatible Qwen-VL server. It is not a model.

It speaks the slice of the API that ``agent.reasoners.openai.OpenAIBackend`` uses (``GET /v1/models``,
``POST /v1/chat/completions``) over real HTTP on 127.0.0.1, so the backend's HTTP client, retries, timeouts and
concurrency are exercised for real, at the process boundary. What the "model" says is scripted (``Script``):

- ``text`` (multiple-choice prompts) / ``free_text`` (open prompts) or a ``reply(body) -> str`` callable;
- ``top``: the first token's ``top_logprobs``, returned when the request asks for logprobs and ``logprobs`` is on;
- ``dialects``: the constrained-decoding request forms it honours — ``choice`` (vLLM ``structured_outputs``),
  ``guided_choice`` (vLLM < 0.12), ``json_schema`` (``response_format``), ``grammar`` (llama.cpp GBNF). Others are
  ignored like unknown fields on most servers, or answered 400 when ``reject_unsupported``;
- faults: ``fail`` (HTTP status codes for the next chat requests), ``drop`` (close the next N connections without
  answering), ``delay`` (seconds before each chat answer), ``api_key`` (401 when the bearer token differs);
- tool calling (a request that offers ``tools``): ``turns`` are the scripted assistant turns (``Turn``: text and
  ``tool_calls``, each a name and the raw arguments string as a model wrote it, malformed or not), answered in
  order; then ``forever`` (the same turn again and again), else a plain ``text`` answer that calls nothing.

``stats`` records every chat request body, the largest number of chat requests in flight at once, and the client's
TCP connections (``connections`` opened, ``open_connections`` not yet closed by the client: a client that keeps
its connections alive and never closes them leaves them open);
``GET /_stats`` returns the counters and ``POST /_stats/reset`` clears them (for a server in another process).

Standalone, in its own process (as ``vqa bench server`` runs it, or to try ``vqa chat`` without a GPU)::

    .venv/bin/python tests/fake_openai_server.py --port 8001 --delay 0.05   # prints its base URL
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any, Callable, Optional

import typer

TOKEN = re.compile(r"\s*[^\W_]+|\s*[^\w\s]+|\s+")
LETTER_TOKEN = re.compile(r"^\W*([a-eA-E])\W*$")


@dataclass
class Turn:
    """One scripted assistant turn for a request that offers tools: ``(name, arguments JSON string)`` calls."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""


@dataclass
class Script:
    models: list[str] = field(default_factory=lambda: ["fake-qwen"])
    text: str = "b"
    free_text: str = "A white cup of coffee on a saucer."
    reply: Callable[[dict], str] | None = None
    top: dict[str, float] = field(default_factory=lambda: {"b": -0.22, " a": -1.9, "(c": -3.2, "The": -4.0})
    logprobs: bool = True
    dialects: set[str] = field(default_factory=lambda: {"choice", "json_schema", "grammar"})
    reject_unsupported: bool = False
    fail: list[int] = field(default_factory=list)
    drop: int = 0
    delay: float = 0.0
    gather: int = 0  # hold each request until this many have been in flight at once (at most GATHER_TIMEOUT)
    api_key: str | None = None
    echo_key: bool = False  # injected failures echo the bearer key they were sent (a careless server's error body)
    turns: list[Turn] = field(default_factory=list)  # answers to requests with ``tools``, in order
    forever: Turn | None = None  # then this turn on every request with ``tools`` (a model that never stops)


GATHER_TIMEOUT = 30.0  # seconds; only a client that never sends that many at once waits this long


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: 16+ clients connect at once


@dataclass
class Stats:
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    answered: int = 0
    connections: int = 0
    open_connections: int = 0


def prompt_text(body: dict) -> str:
    """The text parts of the last user message."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def image_urls(body: dict) -> list[str]:
    content = body["messages"][-1]["content"]
    return [] if isinstance(content, str) else [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


def requested_dialect(body: dict) -> tuple[str | None, list[str]]:
    """Which constrained-decoding form the request uses, and the allowed letters."""
    if isinstance(body.get("structured_outputs"), dict) and "choice" in body["structured_outputs"]:
        return "choice", list(body["structured_outputs"]["choice"])
    if "guided_choice" in body:
        return "guided_choice", list(body["guided_choice"])
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return "json_schema", list(fmt["json_schema"]["schema"]["properties"]["answer"]["enum"])
    if "grammar" in body:
        return "grammar", re.findall(r'"([^"]+)"', body["grammar"])
    return None, []


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as srv: ... srv.url`` (``http://127.0.0.1:PORT/v1``); ``srv.script`` is live."""

    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script = script or Script()
        self.stats = Stats()
        self._lock = threading.Condition()  # guards stats; notified as requests arrive (Script.gather)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms Nagle + delayed-ACK stall between headers and body

            def log_message(self, *args: Any) -> None:  # no access log on the test's stderr
                pass

            def setup(self) -> None:
                super().setup()
                outer._count_connection(+1)

            def finish(self) -> None:  # the client closed the connection (or the server dropped it)
                try:
                    super().finish()
                finally:
                    outer._count_connection(-1)

            def do_GET(self) -> None:
                outer._get(self)

            def do_POST(self) -> None:
                outer._post(self)

        self._httpd = _Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-openai",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.stats = Stats(open_connections=self.stats.open_connections)  # those stay open

    # ------------------------------------------------------------------ handlers

    def _count_connection(self, delta: int) -> None:
        with self._lock:
            self.stats.open_connections += delta
            self.stats.connections += max(delta, 0)

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        key = self.script.api_key
        if key is None or h.headers.get("Authorization") == f"Bearer {key}":
            return True
        _send(h, 401, {"error": {"message": "Unauthorized: invalid API key", "type": "AuthenticationError",
                                 "code": 401}})
        return False

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        if not self._authorised(h):
            return
        if h.path == "/_stats":
            st = self.stats
            _send(h, 200, {"requests": len(st.requests), "answered": st.answered, "max_in_flight": st.max_in_flight})
            return
        if h.path.rstrip("/") != "/v1/models":
            _send(h, 404, {"detail": "Not Found"})
            return
        _send(h, 200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"}
                                                  for m in self.script.models]})

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))) or b"{}")
        if h.path == "/_stats/reset":
            self.stats = Stats(open_connections=self.stats.open_connections)
            _send(h, 200, {})
            return
        if h.path.rstrip("/") != "/v1/chat/completions":
            _send(h, 404, {"detail": "Not Found"})
            return
        if not self._authorised(h):
            return
        s = self.script
        with self._lock:
            self.stats.requests.append(body)
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            self._lock.notify_all()
            if s.gather:  # concurrency shown by behaviour, not by timing
                self._lock.wait_for(lambda: self.stats.max_in_flight >= s.gather, timeout=GATHER_TIMEOUT)
            drop = s.drop > 0
            s.drop -= drop
            status = s.fail.pop(0) if s.fail and not drop else None
        try:
            if s.delay:
                time.sleep(s.delay)
            if drop:  # the connection ends without a response, as when a server process dies mid-request
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            if status is not None:
                echoed = f" for key {h.headers.get('Authorization', '').removeprefix('Bearer ')}" if s.echo_key else ""
                _send(h, status, {"error": {"message": f"injected HTTP {status}{echoed}", "type": "ServerError",
                                            "code": status}})
                return
            if body.get("model") not in s.models:
                _send(h, 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                         "type": "NotFoundError", "code": 404}})
                return
            self._complete(h, body)
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    def _complete(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        s = self.script
        if body.get("tools") and (s.turns or s.forever):
            self._tool_turn(h, body, s.turns.pop(0) if s.turns else s.forever)
            return
        dialect, allowed = requested_dialect(body)
        if dialect is not None and dialect not in s.dialects and s.reject_unsupported:
            _send(h, 400, {"error": {"message": f"unsupported request field for {dialect}", "type": "BadRequestError",
                                     "code": 400}})
            return
        if dialect in s.dialects:
            ranked = sorted(((lp, m.group(1).lower()) for t, lp in s.top.items() if (m := LETTER_TOKEN.match(t))),
                            reverse=True)
            letter = next((x for _, x in ranked if x in allowed), allowed[0])
            text = json.dumps({"answer": letter}) if dialect == "json_schema" else letter
        elif s.reply is not None:
            text = s.reply(body)
        else:
            text = s.text if re.search(r"^(Options|선택지):", prompt_text(body), re.M) else s.free_text
        text = text[: body.get("max_tokens", 10_000) * 8]
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if body.get("logprobs") and s.logprobs:
            choice["logprobs"] = {"content": token_logprobs(text, s.top, int(body.get("top_logprobs") or 0))}
        with self._lock:
            self.stats.answered += 1
        _send(h, 200, {"id": f"chatcmpl-{self.stats.answered}", "object": "chat.completion", "created": 0,
                       "model": body["model"], "choices": [choice],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


    def _tool_turn(self, h: BaseHTTPRequestHandler, body: dict, turn: Turn) -> None:
        with self._lock:
            self.stats.answered += 1
            n = self.stats.answered
        calls = [{"id": f"call_{n}_{i}", "type": "function", "function": {"name": name, "arguments": args}}
                 for i, (name, args) in enumerate(turn.calls)]
        message = {"role": "assistant", "content": turn.text or None, **({"tool_calls": calls} if calls else {})}
        _send(h, 200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "message": message,
                                    "finish_reason": "tool_calls" if calls else "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def token_logprobs(text: str, top: dict[str, float], k: int) -> list[dict]:
    """OpenAI ``logprobs.content`` for ``text``: the first token's alternatives come from ``top``."""
    out = []
    for i, tok in enumerate(TOKEN.findall(text) or [""]):
        alts = dict(top) if i == 0 else {}
        lp = alts.setdefault(tok, max(alts.values(), default=-0.05))
        ranked = sorted(alts.items(), key=lambda kv: -kv[1])[:k]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in ranked]})
    return out


def _send(h: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): nothing to answer
        h.close_connection = True


def main(
    port: Annotated[int, typer.Option("--port")] = 0,
    delay: Annotated[float, typer.Option("--delay", help="Seconds before each chat answer.")] = 0.0,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Served model name (repeat the flag; default "
                                                       "fake-qwen).")] = None,
    gather: Annotated[int, typer.Option("--gather", help="Hold each request until this many have been in flight at "
                                        "once (tests of concurrency).")] = 0,
) -> None:
    """TEST DOUBLE of an OpenAI-compatible VLM server (scripted, no model); prints its base URL."""
    srv = FakeOpenAIServer(Script(delay=delay, gather=gather, models=model or ["fake-qwen"]), port=port)
    print(srv.url, flush=True)
    try:
        srv._httpd.serve_forever(0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    typer.run(main)
