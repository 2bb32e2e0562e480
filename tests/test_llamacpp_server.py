"""The server backend against a REAL OpenAI-compatible server: llama.cpp (llama-cpp-python's ``llama_cpp.server``)
serving the tiny random-weight Qwen2.5-VL that ``vqa dev serve-tiny`` builds with favoured letters
(``make-tiny --favour-letters``: its next token is one of ``a``-``d``/``A``-``D``, which one depending on the input)
and converts with llama.cpp's own converter.

Random weights: the answers are noise, so these tests check the protocol (models list, logprobs, the photo read by
the server's vision projector, tool offers) and that the commands end cleanly, never an answer's quality.
Needs the ``llamacpp`` extra (``make install`` installs it).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from agent.core.schema import Question
from agent.dev.llamacpp import SERVED_ROLE
from agent.reasoners.base import ReasonRequest
from agent.reasoners.openai import OpenAIBackend, data_url

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VQA = str(Path(sys.executable).parent / "vqa")
READY_WITHIN = 600.0  # seconds: a ceiling for conversion and start on a loaded machine, not an expected time
# The letter path reads the answer's first tokens only (at most four: a leading "(" or "**" is skipped), and
# llama-cpp-python computes every generated token's top logprobs in Python (a sort of the 151,936-token
# vocabulary, most of a second a token on a busy 2-core machine): the asks generate 4 tokens, not the default 16.
ENV = {"COLUMNS": "200", "VQA_MAX_NEW_TOKENS": "4"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """``vqa dev serve-tiny`` in its own process (it builds its model in a fresh folder); its base URL once
    ``GET /v1/models`` answers."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("llama")
    log = folder / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([VQA, "dev", "serve-tiny", str(folder), "--port", str(port)], stdout=sink,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + READY_WITHIN
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vqa dev serve-tiny exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp did not answer within {READY_WITHIN:g}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)  # polling for the event (the server answering), not a timing assumption
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def vqa(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **ENV})


def first_token(url: str, image: Image.Image) -> list[dict]:
    client = openai.OpenAI(base_url=url, api_key="EMPTY")
    reply = client.chat.completions.create(
        model=SERVED_ROLE, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image, 200_000)}},
                                               {"type": "text", "text": "What is in the picture? Answer a or b."}]}])
    return [t.model_dump() for t in reply.choices[0].logprobs.content[0].top_logprobs]


def test_llama_cpp_returns_logprobs_that_depend_on_the_photo(llama_server: str) -> None:
    models = httpx.get(f"{llama_server}/models").json()
    assert [m["id"] for m in models["data"]] == [SERVED_ROLE]
    coffee = first_token(llama_server, Image.open(EXAMPLES / "images" / "coffee.jpg"))
    black = first_token(llama_server, Image.new("RGB", (320, 240), "black"))
    for top in (coffee, black):
        assert len(top) == 5 and all(isinstance(t["token"], str) and t["logprob"] <= 0 for t in top)
        assert all(math.isfinite(t["logprob"]) for t in top)
        assert {t["token"] for t in top} <= set("abcdABCD")  # the favoured letters lead
    assert coffee != black  # the server's vision projector read the photo: another photo, other scores


def ask_openai(server: str, photo: Path) -> dict:
    p = vqa("ask", photo, "What is in the cup?", "-c", "tea", "-c", "coffee", "-c", "milk", "-c", "water",
            "--tools", "none", "--backend", "openai", "--base-url", server, "--model", SERVED_ROLE, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_vqa_ask_backend_openai_gets_its_probabilities_from_llama_cpp_logprobs(llama_server: str,
                                                                               tmp_path: Path) -> None:
    black = tmp_path / "black.png"
    Image.new("RGB", (320, 240), "black").save(black)
    recs = [ask_openai(llama_server, photo) for photo in (EXAMPLES / "images" / "coffee.jpg", black)]
    for rec in recs:
        probs = rec["probs"]
        assert set(probs) == {"a", "b", "c", "d"} and math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
        # the answer's first token is a letter and the other three are in the top logprobs: four scores, none 0
        assert rec["flags"] == ["path:logprobs"] and rec["method"] == "logits" and rec["errors"] == []
        assert all(0.0 < v < 1.0 for v in probs.values()) and rec["answer"] == max(probs, key=probs.get)
    assert recs[0]["probs"] != recs[1]["probs"]  # a real forward pass over the photo, not constant scores


def test_constraint_forms_against_llama_cpp_end_at_its_grammar(llama_server: str) -> None:
    """Without logprobs (``generate``), the backend probes the constraint forms on the real server: it ignores
    vLLM's ``structured_outputs``/``guided_choice`` (the reply is a run of letters, no parseable answer), refuses
    the ``json_schema`` response_format (HTTP 500 "validation error"), and honours its GBNF grammar."""
    backend = OpenAIBackend(SERVED_ROLE, llama_server, generate=True, backoff=0.01)  # its refusal is a 500: retried
    q = Question(id="q", text="What is in the cup?", options={"a": "tea", "b": "coffee", "c": "milk", "d": "water"})
    try:
        decision = backend.decide([ReasonRequest(q, Image.open(EXAMPLES / "images" / "coffee.jpg"))])[0]
    finally:
        backend.close()
    assert decision.flags == ["path:grammar"] and decision.method == "generate"
    assert decision.probs[decision.raw] == 1.0 and sum(decision.probs.values()) == 1.0


def test_vqa_ask_planner_vlm_against_llama_cpp_ends_cleanly(llama_server: str, tmp_path: Path) -> None:
    """A random model calls no tool (or a malformed one): the loop ends, its rounds are recorded, exit 0."""
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\ngpu = false\n')
    p = vqa("ask", EXAMPLES / "images" / "coffee.jpg", "What is in the cup?", "-c", "tea", "-c", "coffee",
            "-c", "milk", "-c", "water", "--planner", "vlm", "--max-steps", "2", "--config", cfg, "--backend",
            "openai", "--base-url", llama_server, "--model", SERVED_ROLE, "--json")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    rounds = [(r["planner"], r["calls"]) for r in rec["rounds"]]  # its text called no tool: no calls, no tools
    assert 1 <= len(rounds) <= 3 and all(r == ("vlm", []) for r in rounds)
    assert rec["errors"] == [] and rec["tools"] == [] and rec["flags"] == ["path:logprobs"]
