"""The OpenAI-compatible server backend against a local test double of such a server (tests/fake_openai_server.py).

Scoring paths (logprobs, constrained decoding in each dialect, parsing), retries, timeouts, bounded concurrency,
clear errors, settings, and ``vqa ask``/``vqa batch --backend openai`` end to end.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, image_urls, prompt_text
from PIL import Image

from agent.config import load_settings
from agent.core.errors import ConfigError, ModelLoadError
from agent.core.images import fit_pixels
from agent.core.schema import Question
from agent.reasoners import load_reasoner
from agent.reasoners.base import ReasonRequest
from agent.reasoners.letter_forms import conforming_letter, constraint_fields, logprob_probs, token_letter
from agent.reasoners.openai import OpenAIBackend, ServerError
from agent.reasoners.retry import RetryTransport

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO = Image.open(EXAMPLES / "images" / "coffee.jpg").convert("RGB")
VQA = str(Path(sys.executable).parent / "vqa")
Q3 = Question(id="q3", text="What is in the cup?", options={"a": "tea", "b": "coffee", "c": "milk"})


def softmax(scores: dict[str, float]) -> dict[str, float]:
    z = sum(math.exp(v) for v in scores.values())
    return {k: math.exp(v) / z for k, v in scores.items()}


@pytest.fixture()
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def backend(srv: FakeOpenAIServer, **kw) -> OpenAIBackend:
    b = OpenAIBackend("fake-qwen", srv.url, backoff=kw.pop("backoff", 0.01), **kw)
    b.load()
    return b


def one(b: OpenAIBackend, q: Question = Q3, **kw):
    return b.decide([ReasonRequest(q, PHOTO, **kw)])[0]


# ---------------------------------------------------------------- pure helpers on recorded values


@pytest.mark.parametrize(("token", "letter"), [
    ("b", "b"), (" B", "b"), ("(c", "c"), ("**A", "a"), ("e.", "e"), ("d)", "d"), ("\"a\"", "a"),
    ("f", None), ("The", None), ("Bananas", None), ("(", None), ("정답", None), ("ab", None),
])
def test_token_letter(token: str, letter: str | None) -> None:
    assert token_letter(token) == letter


def test_logprob_probs_pools_spellings_of_a_letter_and_ignores_other_letters() -> None:
    content = [{"token": "B", "logprob": -0.5, "top_logprobs": [
        {"token": "B", "logprob": -0.5}, {"token": " b", "logprob": -1.2}, {"token": "A", "logprob": -1.0},
        {"token": "D", "logprob": -2.0}, {"token": "The", "logprob": -3.0}]}]
    b = math.log(math.exp(-0.5) + math.exp(-1.2))
    want = softmax({"a": -1.0, "b": b})
    assert logprob_probs(content, ["a", "b", "c"]) == pytest.approx({**want, "c": 0.0})


@pytest.mark.parametrize(("tokens", "found"), [
    (["(", "b", ")"], True),          # leading punctuation is skipped
    (["**", "B", "**"], True),
    (["The", " answer", " is", " b"], False),  # the first word is not a letter: no logprob scoring
    (["정답은", " b"], False),
    (["d"], False),                   # a letter, but not one of this question's
])
def test_logprob_probs_finds_the_answer_token(tokens: list[str], found: bool) -> None:
    content = [{"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}]} for t in tokens]
    assert (logprob_probs(content, ["a", "b", "c"]) is not None) is found


@pytest.mark.parametrize(("dialect", "text", "letter"), [
    ("choice", "b", "b"), ("choice", " c\n", "c"), ("choice", "The answer is b", None), ("choice", "d", None),
    ("json_schema", '{"answer": "a"}', "a"), ("json_schema", "a", None), ("json_schema", '{"answer": "z"}', None),
    ("grammar", "c", "c"),
])
def test_conforming_letter(dialect: str, text: str, letter: str | None) -> None:
    assert conforming_letter(text, dialect, ["a", "b", "c"]) == letter


def test_constraint_fields_per_dialect() -> None:
    assert constraint_fields("choice", "ab") == {"structured_outputs": {"choice": ["a", "b"]}}
    assert constraint_fields("guided_choice", "ab") == {"guided_choice": ["a", "b"]}
    assert constraint_fields("grammar", "abc") == {"grammar": 'root ::= "a" | "b" | "c"'}
    schema = constraint_fields("json_schema", "ab")["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == ["a", "b"] and schema["required"] == ["answer"]


@pytest.mark.parametrize(("size", "budget", "want"), [
    ((4000, 3000), 1_200_000, (1264, 948)), ((640, 480), 1_003_520, (640, 480)), ((100, 100), None, (100, 100)),
])
def test_fit_pixels(size, budget, want) -> None:
    got = fit_pixels(size, budget)
    assert got == want and (budget is None or got[0] * got[1] <= budget)


# ---------------------------------------------------------------- scoring paths against the server


def test_logprobs_scoring_from_the_first_answer_token(server: FakeOpenAIServer) -> None:
    b = backend(server)
    d = one(b)
    top = server.script.top  # {"b": -0.22, " a": -1.9, "(c": -3.2, "The": -4.0}
    assert d.method == "logits" and d.flags == ["path:logprobs"] and d.raw == "b"
    assert d.template == "answer.en@3" and d.reasoner == b.fingerprint  # the prompt version and the model
    assert d.probs == pytest.approx(softmax({"a": top[" a"], "b": top["b"], "c": top["(c"]}))
    body = server.stats.requests[-1]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0.0
    assert "What is in the cup?" in prompt_text(body) and len(image_urls(body)) == 1
    assert image_urls(body)[0].startswith("data:image/jpeg;base64,")


def test_without_logprobs_it_constrains_to_the_letters_and_remembers(server: FakeOpenAIServer) -> None:
    server.script.logprobs = False
    b = backend(server)
    d = one(b)
    assert d.method == "generate" and d.flags == ["path:choice"] and d.probs == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert server.stats.requests[-1]["structured_outputs"] == {"choice": ["a", "b", "c"]}
    n = len(server.stats.requests)
    assert one(b).flags == ["path:choice"]
    assert len(server.stats.requests) == n + 1 and "logprobs" not in server.stats.requests[-1]


def test_a_reply_that_does_not_start_with_a_letter_falls_back_to_constrained_decoding(server) -> None:
    server.script.text = "The answer is (C)."
    d = one(backend(server))
    assert d.flags == ["path:choice"] and d.raw == "b"  # the constrained reply, not the chatty one


def test_rejected_dialects_are_skipped_until_one_works(server: FakeOpenAIServer) -> None:
    server.script.logprobs, server.script.dialects, server.script.reject_unsupported = False, {"json_schema"}, True
    b = backend(server)
    d = one(b)
    assert d.flags == ["path:json_schema"] and d.raw == '{"answer": "b"}' and d.probs["b"] == 1.0
    tried = [next(k for k in ("structured_outputs", "guided_choice", "response_format") if k in r)
             for r in server.stats.requests[1:]]
    assert tried == ["structured_outputs", "guided_choice", "response_format"]
    n = len(server.stats.requests)
    assert one(b).flags == ["path:json_schema"] and len(server.stats.requests) == n + 1


def test_ignored_dialects_are_ruled_out_one_question_at_a_time(server: FakeOpenAIServer) -> None:
    """A server that ignores a field answers normally: that reply is parsed, and the next question probes on."""
    server.script.logprobs, server.script.dialects, server.script.text = False, {"grammar"}, "(b)"
    b = backend(server)
    flags = [one(b).flags for _ in range(5)]
    assert flags == [["path:parsed", "parsed:bare"]] * 3 + [["path:grammar"]] * 2
    assert server.stats.requests[-1]["grammar"] == 'root ::= "a" | "b" | "c"'
    assert b._caps.ruled_out == {"choice", "guided_choice", "json_schema"}


@pytest.mark.parametrize(("text", "letter", "rule"), [
    ("b", "b", "bare"), ("(b)", "b", "bare"), ("정답은 b", "b", "declaration"), ("answer: B", "b", "declaration"),
    ("**C**", "c", "bare"), ("The answer is (a).", "a", "declaration"), ("It is milk.", "c", "option_exact"),
    ("정답: coffee", "b", "declaration"), ("<answer>C</answer>", "c", "tag"), ("I'd go with A.", "a", "verb"),
])
def test_generate_and_parse_when_the_server_offers_nothing_else(server, text: str, letter: str, rule: str) -> None:
    server.script.text = text
    d = one(backend(server, generate=True, constrain="none"))
    assert d.flags == ["path:parsed", f"parsed:{rule}"] and d.raw == text
    assert d.probs == {k: float(k == letter) for k in "abc"}
    assert all("logprobs" not in r for r in server.stats.requests)


def test_an_unparsable_reply_is_flagged_with_uniform_probabilities(server: FakeOpenAIServer) -> None:
    server.script.text = "I cannot tell from this photo."
    d = one(backend(server, generate=True, constrain="none"))
    assert d.flags == ["path:parsed", "unparsed"] and d.probs == pytest.approx({k: 1 / 3 for k in "abc"})


def test_open_question_gets_free_text(server: FakeOpenAIServer) -> None:
    d = one(backend(server), Question(id="o", text="What is on the table?", options={}))
    assert d.text == server.script.free_text and d.probs == {} and d.flags == ["path:free_text"]
    assert server.stats.requests[-1]["max_tokens"] == OpenAIBackend.max_text_tokens


def test_images_are_downscaled_to_the_pixel_budget_and_marked_image_included(server: FakeOpenAIServer) -> None:
    big = Image.new("RGB", (4000, 3000), (200, 30, 30))
    marked = Image.new("RGB", (800, 600), (0, 0, 255))  # what the graph passes from som's "marked" artifact
    b = backend(server, max_pixels=100_000)
    b.decide([ReasonRequest(Q3, big, images=[marked])])
    urls = image_urls(server.stats.requests[-1])
    sizes = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in urls]
    assert len(sizes) == 2 and all(w * h <= 100_000 for w, h in sizes)
    assert sizes[0][0] / sizes[0][1] == pytest.approx(4 / 3, abs=0.01)


# ---------------------------------------------------------------- retries, timeouts, concurrency, errors


def test_5xx_and_dropped_connections_are_retried_with_backoff(server: FakeOpenAIServer, monkeypatch) -> None:
    server.script.fail, server.script.drop = [503, 502], 0
    waits: list[float] = []
    delay = RetryTransport.delay
    monkeypatch.setattr(RetryTransport, "delay", lambda self, attempt, after: waits.append(delay(self, attempt, after))
                        or waits[-1])
    b = backend(server, backoff=0.05)
    assert one(b).flags == ["path:logprobs"]
    assert len(waits) == 2 and 0.05 <= waits[0] <= 0.055 and 0.1 <= waits[1] <= 0.11  # backoff, then twice it
    assert len(server.stats.requests) == 3
    server.script.drop = 2
    assert one(b).flags == ["path:logprobs"] and len(server.stats.requests) == 6


def test_retries_give_up_with_a_clear_error(server: FakeOpenAIServer) -> None:
    server.script.fail = [500] * 10
    with pytest.raises(ServerError, match=r"failed after 3 attempts: HTTP 500: injected HTTP 500"):
        one(backend(server, retries=2))
    assert len(server.stats.requests) == 3


@pytest.mark.parametrize(("status", "requests"), [(408, 2), (429, 2), (503, 2), (409, 1), (418, 1)])
def test_only_408_429_and_5xx_are_retried(server: FakeOpenAIServer, status: int, requests: int) -> None:
    """The SDK on its own also retries 409; this backend retries no 4xx but 408 and 429."""
    server.script.fail = [status]
    b = backend(server)
    if requests == 2:
        assert one(b).flags == ["path:logprobs"]
    else:
        with pytest.raises(ServerError, match=f"answered HTTP {status}: injected HTTP {status}"):
            one(b)
    assert len(server.stats.requests) == requests


def test_4xx_is_not_retried_and_a_model_gone_missing_is_named(server: FakeOpenAIServer) -> None:
    b = backend(server)
    server.script.models = ["other-model"]
    with pytest.raises(ConfigError, match=r"does not serve model 'fake-qwen'.*does not exist"):
        one(b)
    assert len(server.stats.requests) == 1


def test_timeout_is_per_request_and_retried(server: FakeOpenAIServer) -> None:
    server.script.delay = 2.0
    b = backend(server, timeout=0.2, retries=1)
    with pytest.raises(ServerError, match=r"no answer within 0.2s"):  # each request given up on, then retried
        one(b)
    assert len(server.stats.requests) == 2


@pytest.mark.parametrize("limit", [1, 4])
def test_at_most_max_concurrency_requests_in_flight(server: FakeOpenAIServer, limit: int) -> None:
    server.script.gather = limit  # the server holds requests until `limit` are in flight: reached, never passed
    b = backend(server, max_concurrency=limit)
    out = b.decide([ReasonRequest(Q3, PHOTO) for _ in range(8)])
    assert len(out) == 8 and all(d.flags == ["path:logprobs"] for d in out)
    assert server.stats.max_in_flight == limit


def test_max_concurrency_bounds_requests_from_every_calling_thread(server: FakeOpenAIServer) -> None:
    """Batches of one are answered in the caller's thread (as the batcher sends them to a server): still at most
    ``max_concurrency`` in flight over all callers."""
    server.script.gather, server.script.delay = 2, 0.05
    b = backend(server, max_concurrency=2)
    with ThreadPoolExecutor(6) as pool:
        out = list(pool.map(lambda _: one(b), range(6)))
    assert [d.flags for d in out] == [["path:logprobs"]] * 6
    assert server.stats.max_in_flight == 2


def test_one_failed_request_fails_the_batch(server: FakeOpenAIServer) -> None:
    b = backend(server, retries=0, max_concurrency=2)
    server.script.fail = [503]
    with pytest.raises(ServerError, match="HTTP 503"):
        b.decide([ReasonRequest(Q3, PHOTO) for _ in range(4)])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_load_errors_say_what_to_do(server: FakeOpenAIServer) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot reach .* Is it running"):
        OpenAIBackend("fake-qwen", f"http://127.0.0.1:{_closed_port()}/v1", retries=1, backoff=0.01).load()
    with pytest.raises(ConfigError, match=r"model 'qwen-wrong' is not served .* serves \['fake-qwen'\]"):
        OpenAIBackend("qwen-wrong", server.url).load()
    with pytest.raises(ConfigError, match="ends in /v1"):
        OpenAIBackend("fake-qwen", server.url.removesuffix("/v1")).load()
    with pytest.raises(ConfigError, match="base_url must be an http"):
        OpenAIBackend("fake-qwen", "127.0.0.1:8000")
    server.script.api_key = "secret"
    with pytest.raises(ConfigError, match="refused the API key"):
        OpenAIBackend("fake-qwen", server.url).load()
    assert one(backend(server, api_key="secret")).flags == ["path:logprobs"]


def test_ollama_style_latest_tag_matches(server: FakeOpenAIServer) -> None:
    """Ollama lists ``name:latest``; ``--model name`` loads and its requests name the served model (else 404)."""
    server.script.models = ["qwen2.5vl:latest"]
    b = OpenAIBackend("qwen2.5vl", server.url, backoff=0.01)
    b.load()
    assert one(b).flags == ["path:logprobs"]
    assert [r["model"] for r in server.stats.requests] == ["qwen2.5vl:latest"]


# ---------------------------------------------------------------- settings and the command line


def test_settings_pick_the_openai_backend_from_flags_file_or_environment(tmp_path: Path, monkeypatch) -> None:
    for var in ("VQA_BACKEND", "VQA_BASE_URL", "VQA_MODEL", "VQA_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(None, {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert s.reasoner == "openai" and s.reasoner_kwargs()["base_url"] == "http://127.0.0.1:9/v1"
    assert isinstance(load_reasoner(s.reasoner, **s.reasoner_kwargs()), OpenAIBackend)
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('backend = "openai"\nbase_url = "http://file/v1"\nmax_concurrency = 3\n')
    monkeypatch.setenv("VQA_BASE_URL", "http://env/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    s = load_settings(cfg, {})
    assert (s.reasoner, s.base_url, s.max_concurrency) == ("openai", "http://file/v1", 3)
    assert s.reasoner_kwargs()["api_key"] == "sk-env" and "sk-env" not in repr(s)
    monkeypatch.setenv("VQA_BACKEND", "openai")
    assert load_settings(None, {}).base_url == "http://env/v1"
    monkeypatch.delenv("VQA_BASE_URL")
    with pytest.raises(ConfigError, match="--base-url"):
        load_settings(None, {})
    assert load_settings(None, {"reasoner": "evidence"}).reasoner == "evidence"


def vqa(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_vqa_ask_against_the_server(server: FakeOpenAIServer) -> None:
    p = vqa("ask", EXAMPLES / "images" / "coffee.jpg", "What is in the cup?", "-c", "tea", "-c", "coffee",
            "--tools", "none", "--backend", "openai", "--base-url", server.url, "--model", "fake-qwen", "--json")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["answer"] == "b" and rec["method"] == "logits" and rec["flags"] == ["path:logprobs"]


def test_vqa_ask_with_the_server_down_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "vqa.toml").write_text("retries = 0\n")
    p = vqa("ask", EXAMPLES / "images" / "coffee.jpg", "Q?", "-c", "x", "-c", "y", "--backend", "openai",
            "--base-url", f"http://127.0.0.1:{_closed_port()}/v1", "--config", tmp_path / "vqa.toml", "--tools", "none")
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    assert "cannot reach" in p.stderr and "Is it running" in p.stderr


@pytest.mark.slow
def test_vqa_batch_sends_batches_concurrently(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.script.gather = 2  # the first request waits for a second one: only concurrent sending gets past it
    p = vqa("batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir",
            tmp_path / "run", "--tools", "none", "--batch-size", "4", "--backend", "openai", "--base-url", server.url,
            "--model", "fake-qwen")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(tmp_path / "sub.csv", encoding="utf-8")))
    assert len(rows) == 12 and {r["answer"] for r in rows} == {"b"}
    assert 2 <= server.stats.max_in_flight <= 8  # max_concurrency (default 8) bounds requests in flight


@pytest.mark.slow
def test_a_server_backend_gets_several_batches_in_flight(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """Batches of one question each still overlap: the batcher does not wait for a batch to come back before
    sending the next one to a server (the in-process model takes one batch at a time)."""
    server.script.gather = 2  # the first request is held until a second one is in flight (shown, not timed)
    p = vqa("batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir",
            tmp_path / "run", "--tools", "none", "--batch-size", "1", "--backend", "openai", "--base-url", server.url,
            "--model", "fake-qwen")
    assert p.returncode == 0, p.stderr
    assert server.stats.answered >= 12 and server.stats.max_in_flight >= 2


def labelled_csv(path: Path, ids: tuple[str, ...] = ("TRAIN_008", "TRAIN_010")) -> Path:
    """examples/train.csv rows (with the gold answer) that the router sends to no tool."""
    with open(EXAMPLES / "train.csv", encoding="utf-8") as f:
        lines = f.read().splitlines()
    path.write_text("\n".join([lines[0], *(ln for ln in lines if ln.split(",")[0] in ids)]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_vqa_eval_against_the_server(server: FakeOpenAIServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    p = vqa("eval", labelled_csv(tmp_path / "train.csv"), "--images", EXAMPLES, "--run-dir", run, "--backend",
            "openai", "--base-url", server.url, "--model", "fake-qwen", "--json")
    assert p.returncode == 0, p.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads(p.stdout) == metrics
    assert metrics["reasoner"] == "openai" and metrics["n"] == 2 and metrics["failed"] == 0
    assert metrics["accuracy"] == 0.5  # the server always says b: TRAIN_008's gold is b, TRAIN_010's a
    assert server.stats.answered == 2 and all(r.get("logprobs") for r in server.stats.requests)


# ---------------------------------------------------------------- the backend is closed at exit


def closed(srv: FakeOpenAIServer, within: float = 120.0) -> bool:
    """Whether the client has closed every connection it opened to ``srv`` (waiting up to ``within`` seconds)."""
    deadline = time.monotonic() + within
    while srv.stats.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    return srv.stats.connections > 0 and srv.stats.open_connections == 0


def test_close_ends_the_connections_and_a_later_decide_opens_them_again(server: FakeOpenAIServer) -> None:
    b = backend(server)
    one(b)
    assert server.stats.open_connections >= 1  # kept alive between requests
    b.close()
    assert closed(server)
    assert one(b).flags == ["path:logprobs"]
    b.close()
    assert closed(server)


@pytest.fixture()
def kept(monkeypatch) -> list:
    """The backends the commands build, kept alive here: their connections close only if the command closes them,
    not because the object was freed."""
    import agent.reasoners

    made: list = []
    real = agent.reasoners.load_reasoner
    monkeypatch.setattr(agent.reasoners, "load_reasoner", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    return made


def cli(srv: FakeOpenAIServer, *args: object, stdin: str | None = None):
    """``vqa ARGS --backend openai ...`` in this process, so the server sees what the command itself closed."""
    from typer.testing import CliRunner

    from agent.cli import app

    return CliRunner().invoke(app, [*map(str, args), "--backend", "openai", "--base-url", srv.url, "--model",
                                    "fake-qwen"], input=stdin)


@pytest.mark.parametrize("command", ["ask", "batch", "eval", "chat"])
def test_every_command_closes_its_backend(server: FakeOpenAIServer, tmp_path: Path, kept: list,
                                          command: str) -> None:
    args = {
        "ask": ["ask", EXAMPLES / "images" / "coffee.jpg", "Q?", "-c", "tea", "-c", "coffee", "--tools", "none"],
        "batch": ["batch", labelled_csv(tmp_path / "t.csv"), "--images", EXAMPLES, "--out", tmp_path / "sub.csv",
                  "--run-dir", tmp_path / "run", "--tools", "none"],
        "eval": ["eval", labelled_csv(tmp_path / "t.csv"), "--images", EXAMPLES, "--run-dir", tmp_path / "run"],
        "chat": ["chat", EXAMPLES / "images" / "coffee.jpg", "--run-dir", tmp_path, "--tools", "none"],
    }[command]
    r = cli(server, *args, stdin="What is in the cup? | tea | coffee\n" if command == "chat" else None)
    assert r.exit_code == 0, r.output
    assert len(kept) == 1 and server.stats.answered >= 1
    assert closed(server)


def test_ctrl_c_in_the_middle_of_a_batch_still_closes_the_backend(server: FakeOpenAIServer, tmp_path: Path,
                                                                  kept: list) -> None:
    main, pressed = threading.main_thread().ident, threading.Event()

    def reply(body: dict) -> str:
        if not pressed.is_set():  # Ctrl-C while the first question waits for its answer
            pressed.set()
            signal.pthread_kill(main, signal.SIGINT)
        return "b"

    server.script.reply = reply
    server.script.delay = 0.2
    r = cli(server, "batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir",
            tmp_path / "run", "--tools", "none", "--batch-size", "1")
    assert pressed.is_set() and r.exit_code == 130 and len(kept) == 1, r.output
    assert not (tmp_path / "sub.csv").exists()  # interrupted before the submission
    assert server.stats.answered < 12
    assert closed(server)
