"""``vqa chat`` driven as a person would: through a pseudo-terminal (pexpect), through a pipe, and resumed.

The reasoner is the OpenAI-compatible backend talking to the local test double of a server
(tests/fake_openai_server.py), so every turn runs the real graph (router, tools, reasoner) and the prompts the
"server" received show what the reasoner was given (history, tool evidence).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from fake_openai_server import FakeOpenAIServer, Script, prompt_text

from agent.chat import ChatSession, ChatStore, history

VQA = str(Path(sys.executable).parent / "vqa")
IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def reply(body: dict) -> str:
    """The scripted "model": a letter for multiple choice, an answer naming the question for open questions."""
    text = prompt_text(body)
    if re.search(r"^(Options|선택지):", text, re.M):
        return "b"
    return "About: " + re.findall(r"^(?:Question|질문): (.*)$", text, re.M)[-1]


@pytest.fixture()
def server():
    with FakeOpenAIServer(Script(reply=reply)) as srv:
        yield srv


def backend_args(srv: FakeOpenAIServer) -> list[str]:
    return ["--backend", "openai", "--base-url", srv.url, "--model", "fake-qwen"]


def spawn(args: list[str]) -> pexpect.spawn:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    return pexpect.spawn(VQA, args, env=env, encoding="utf-8", timeout=90, dimensions=(50, 160))


def say(child: pexpect.spawn, line: str, *expect: str) -> str:
    """Type ``line`` at the prompt; wait for each regex in ``expect`` and for the next prompt; return the output."""
    child.sendline(line)
    seen = ""
    for pattern in (*expect, r"you>"):
        child.expect(pattern)
        seen += child.before + child.after
    return ANSI.sub("", seen)


def test_chat_in_a_terminal_then_resume(server: FakeOpenAIServer, tmp_path: Path) -> None:
    args = ["--run-dir", str(tmp_path), "--tools", "none", *backend_args(server)]
    child = spawn(["chat", str(IMAGES / "coffee.jpg"), "--session", "cafe", *args])
    child.expect("session cafe")
    child.expect("you>")
    say(child, "What is on the table?", "About: What is on the table?", "tools: none")
    say(child, "컵은 무슨 색인가요? | 흰색 | 검은색", r"b\. 검은색")
    trace = say(child, "/trace", "path:logprobs")
    assert "route" in trace and "step reason" in trace and "질문: What is on the table?" in trace
    assert "unknown tool" in say(child, "/tools ocr,magic", "unknown tool")
    say(child, "/tools", r"none \(forced\)")
    say(child, "/image /nope/cat.jpg", "expected the path of an image file")
    say(child, f"/image {IMAGES / 'chelsea.jpg'}", "image: ")
    say(child, "What animal is this? | cat | dog", r"b\. dog")
    child.sendline("/quit")
    child.expect("vqa chat --resume cafe")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "질문: What is on the table?\n답: About: What is on the table?" in prompt_text(server.stats.requests[1])

    child = spawn(["chat", "--resume", "cafe", "--run-dir", str(tmp_path), "--base-url", server.url])
    child.expect("resuming cafe")
    child.expect(r"3 earlier turns, image \S*chelsea\.jpg")
    child.expect("What is on the table")  # the earlier turns come first, in order
    child.expect(r"b\. 검은색")
    child.expect(r"b\. dog")
    child.expect("you>")
    say(child, "And its colour?", "About: And its colour")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    last = prompt_text(server.stats.requests[-1])  # about the current image: only its turn is history
    assert "Q: What animal is this? (a. cat / b. dog)\nA: b. dog" in last and "What is on the table" not in last
    assert len(server.stats.requests) == 4  # the forced tool set ("none") was kept: no tool, one request a turn


def vqa(args: list, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "160"})


def test_chat_from_a_pipe_one_line_per_turn(server: FakeOpenAIServer, tmp_path: Path) -> None:
    stdin = "What is on the table?\n\n컵은 무슨 색인가요? | 흰색 | 검은색\nonly | one option\n/trace\nIs [red]it[/x] :cup:?\n"
    p = vqa(["chat", IMAGES / "coffee.jpg", "--session", "piped", "--run-dir", tmp_path, "--tools", "none",
             *backend_args(server)], stdin)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["About: What is on the table?", "b. 검은색  (84%)",  # answers only, on stdout
                                     "About: Is [red]it[/x] :cup:?"]  # text is data, never Rich markup
    assert "expected 2-5 options, found 1" in p.stderr and "path:logprobs" in p.stderr
    assert "vqa chat --resume piped" in p.stderr

    p = vqa(["chat", "--resume", "piped", "--run-dir", tmp_path, "--base-url", server.url], "Why?\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["About: Why?"]
    assert p.stderr.index("What is on the table?") < p.stderr.index("b. 검은색")


@pytest.mark.slow
def test_chat_turn_runs_the_routed_tool_and_its_evidence_reaches_the_reasoner(server, tmp_path: Path) -> None:
    config = tmp_path / "vqa.toml"  # Tesseract alone (no CRAFT line detector): seconds, not a minute, on a CPU
    config.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n')
    stdin = "What does the sign say? | NO PARKING | BUS STOP\n"
    p = vqa(["chat", IMAGES / "no_parking.jpg", "--run-dir", tmp_path, "--config", config, *backend_args(server)],
            stdin)
    assert p.returncode == 0, p.stderr
    prompt = prompt_text(server.stats.requests[-1])
    assert '<tool_output tool="ocr">' in prompt and "PARKIN" in prompt.upper()


@pytest.mark.parametrize(("args", "needle"), [
    (["chat", "--resume", "nope"], "no chat session 'nope'"),
    (["chat"], "give the photo"),
    (["chat", "/nope/x.jpg"], "does not exist"),
    (["chat", IMAGES / "coffee.jpg", "--resume", "x"], "not both"),
])
def test_chat_usage_errors_are_clear(args: list, needle: str, tmp_path: Path) -> None:
    p = vqa([*args, "--run-dir", tmp_path])
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_an_existing_session_name_is_not_overwritten(tmp_path: Path) -> None:
    args = ["chat", IMAGES / "coffee.jpg", "--session", "s", "--run-dir", tmp_path, "--reasoner", "evidence",
            "--tools", "none"]
    p = vqa(args, "What is it?\nWhat colour? | white | black\n")
    assert p.returncode == 0 and p.stdout.splitlines() == ["a. white  (50%)"]
    assert "multiple-choice questions only" in p.stderr
    p = vqa(args)
    assert p.returncode == 2 and "already exists" in p.stderr and "--resume s" in p.stderr


def test_history_keeps_answered_turns_about_the_image() -> None:
    turn = {"image": "a.jpg", "question": "Q", "options": {}, "answer": "", "text": "T", "failed": False, "record": {}}
    turns = [turn, {**turn, "question": "Q2", "failed": True}, {**turn, "image": "b.jpg", "question": "Q3"},
             {**turn, "question": "Q4", "options": {"a": "x", "b": "y"}, "answer": "b", "text": None}]
    assert history(turns, "a.jpg") == [("Q", "T"), ("Q4 (a. x / b. y)", "b. y")]
    assert history(turns, "a.jpg", limit=1) == [("Q4 (a. x / b. y)", "b. y")]


def test_session_state_survives_reopening_the_store(tmp_path: Path) -> None:
    from agent.chat import ChatRuntime
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.services import Services

    store = ChatStore(tmp_path / "chat.sqlite")
    chat = ChatSession(store, "s", ChatRuntime(Services(reasoner=EvidenceReasoner())))
    chat.start(IMAGES / "coffee.jpg", {"reasoner": "evidence"}, [])
    turn = chat.ask("What colour? ", {"a": "white", "b": "black"})
    assert turn["answer"] == "a" and turn["record"]["route"]["method"] == "forced"
    chat.update(tools=None)
    store.close()
    state = ChatStore(tmp_path / "chat.sqlite").state("s")
    assert state["tools"] is None and state["settings"] == {"reasoner": "evidence"}
    assert [t["question"] for t in state["turns"]] == ["What colour?"] and state.get("request") is None  # never stored


@pytest.mark.slow
def test_in_process_qwen_answers_open_questions_in_free_text_beside_scored_ones(tiny_dir: Path) -> None:
    """The transformers backend generates for open questions and still scores the multiple-choice ones."""
    from PIL import Image

    from agent.core.schema import Question
    from agent.reasoners.base import ReasonRequest
    from agent.reasoners.qwen import QwenBackend

    qwen = QwenBackend(str(tiny_dir / "vlm-qwen2.5-vl"), max_pixels=80_000)
    qwen.max_text_tokens = 8
    photo = Image.open(IMAGES / "coffee.jpg")
    open_q = Question(id="o", text="What is on the table?", options={})
    mc_q = Question(id="m", text="What is in the cup?", options={"a": "coffee", "b": "tea"})
    scored_alone = qwen.decide([ReasonRequest(mc_q, photo)])[0]
    free, scored = qwen.decide([ReasonRequest(open_q, photo, history=[("Q?", "A.")]), ReasonRequest(mc_q, photo)])
    assert free.method == "generate" and free.probs == {} and isinstance(free.text, str)
    assert "Answer briefly" in free.prompt and "Q: Q?" in free.prompt
    assert scored.method == "logits" and scored.probs == pytest.approx(scored_alone.probs, abs=1e-4)


def _truncated_store(path: Path) -> None:
    ChatStore(path).close()
    path.write_bytes(path.read_bytes()[:200])  # the header survives, the pages do not


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(b"not a database, just text\n" * 100), _truncated_store],
                         ids=["not_sqlite", "truncated"])
def test_a_damaged_chat_store_is_a_one_line_error(tmp_path: Path, damage) -> None:
    from agent.core.errors import DataError

    damage(tmp_path / "chat.sqlite")
    with pytest.raises(DataError, match="chat session store"):
        ChatStore(tmp_path / "chat.sqlite")
    p = vqa(["chat", IMAGES / "coffee.jpg", "--run-dir", tmp_path, "--reasoner", "evidence"], "Q? | x | y\n")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "chat session store" in p.stderr and "move it aside" in p.stderr
    assert len([line for line in p.stderr.splitlines() if line.strip()]) == 1


def test_chat_ranks_each_turn_over_the_candidates_file(tmp_path: Path) -> None:
    cands = tmp_path / "answers.txt"
    cands.write_text("a cup\n\nyes\na white cup of coffee\n")
    args = ["chat", IMAGES / "coffee.jpg", "--session", "r", "--run-dir", tmp_path, "--reasoner", "evidence",
            "--tools", "none", "--candidates", cands, "--top", "2"]
    p = vqa(args, "what is it?\n/trace\nIs it white? | yes | no\n")
    assert p.returncode == 0, p.stderr
    assert "3. yes  0" in p.stderr and "tools: none · evidence · by mean score · flags: no_evidence" in p.stderr
    # no evidence: every score ties at 0, broken by the stated rule (more words first, then the file's order)
    assert p.stdout.splitlines() == ["1. a white cup of coffee  0", "2. a cup  0", "a. yes  (50%)"]
    p = vqa(["chat", "--resume", "r", "--run-dir", tmp_path, "--candidates", cands], "/trace\n")
    assert p.returncode == 0, p.stderr
    assert "you> what is it?" in p.stderr and "3. yes  0" in p.stderr  # the ranked turn is replayed in full
    empty = tmp_path / "one.txt"
    empty.write_text("only one\n")
    p = vqa(["chat", IMAGES / "coffee.jpg", "--run-dir", tmp_path, "--candidates", empty])
    assert p.returncode == 2 and "at least 2 candidates" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_chat_ranking_uses_the_tools_and_the_earlier_turns(tmp_path: Path) -> None:
    """Real OCR (Tesseract): the written answer ranks first; asked again, the earlier turn is its history and the
    evidence scorer halves the support of a candidate that repeats an earlier answer."""
    config = tmp_path / "vqa.toml"
    config.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n')
    cands = tmp_path / "answers.txt"
    cands.write_text("bus stop\nyes\nno parking\ntow away zone\n")
    p = vqa(["chat", IMAGES / "no_parking.jpg", "--run-dir", tmp_path, "--config", config, "--reasoner", "evidence",
             "--tools", "ocr", "--candidates", cands, "--top", "1"],
            "what does the sign say?\nwhat does the sign say?\n")
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.splitlines()
    assert first.startswith("1. no parking ") and second.startswith("1. no parking ")
    score = [float(line.rsplit(" ", 1)[1]) for line in (first, second)]
    assert score[0] > 0 and score[1] == pytest.approx(score[0] / 2, abs=1e-3)
