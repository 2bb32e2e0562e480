"""The third hostile-input pass (issue 24): each case a careful user expects, checked end to end where cheap.

Chat stores that name callables, foreign schemas and quadratic growth; files read whole over their caps; long
questions; tools raising ``BaseException``; option columns beyond ``e``; settings errors; terminal escapes;
secrets in URLs and server errors; Ray sized to the machine; skipped training rows named.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import ormsgpack
import pytest

from agent.chat import ChatRuntime, ChatSession, ChatStore
from agent.core.errors import DataError
from agent.data import read_questions

VQA = str(Path(sys.executable).parent / "vqa")
IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


def vqa(args: list, stdin: str | None = None, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run([VQA, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def labelled_rows(path: Path, n: int) -> Path:
    """The header and the first ``n`` rows of examples/train.csv (labelled)."""
    lines = (IMAGES.parent / "train.csv").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return path


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    return lines[0]


# ---------------------------------------------------------------- 1, 6, 10: the chat store


def _evidence_session(path: Path, name: str = "s") -> ChatSession:
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.services import Services

    chat = ChatSession(ChatStore(path), name, ChatRuntime(Services(reasoner=EvidenceReasoner())))
    chat.start(IMAGES / "coffee.jpg", {"reasoner": "evidence"}, [])
    return chat


def _plant_callable(path: Path, marker: Path) -> None:
    """Rewrite every stored checkpoint so that its ``image`` channel is an extension value that names
    ``os.system`` with a shell command (what LangGraph's default serializer would import and call)."""
    call = ormsgpack.Ext(1, ormsgpack.packb(["os", "system", [f"touch {marker}"]]))  # EXT_CONSTRUCTOR_POS_ARGS
    conn = sqlite3.connect(path)
    for rowid, blob in conn.execute("SELECT rowid, checkpoint FROM checkpoints").fetchall():
        data = ormsgpack.unpackb(blob, option=ormsgpack.OPT_NON_STR_KEYS)
        data["channel_values"]["image"] = call
        conn.execute("UPDATE checkpoints SET checkpoint = ? WHERE rowid = ?", (ormsgpack.packb(data), rowid))
    conn.commit()
    conn.close()


def test_a_chat_store_naming_a_callable_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    db, marker = tmp_path / "chat.sqlite", tmp_path / "pwned"
    _evidence_session(db).store.close()
    _plant_callable(db, marker)
    with pytest.raises(DataError, match="will not load.*os.system"):
        ChatStore(db).state("s")
    assert not marker.exists()
    p = vqa(["chat", "--resume", "s", "--run-dir", tmp_path, "--reasoner", "evidence"],
            "Q? | x | y\n")
    assert "os.system" in one_error_line(p) and not marker.exists()


def test_a_chat_store_of_another_schema_is_one_line(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "chat.sqlite")
    conn.execute("CREATE TABLE checkpoints (id INTEGER PRIMARY KEY, blob BLOB)")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="other columns"):
        ChatStore(tmp_path / "chat.sqlite")
    p = vqa(["chat", IMAGES / "coffee.jpg", "--run-dir", tmp_path, "--reasoner", "evidence"], "Q? | x | y\n")
    assert "other columns" in one_error_line(p)


@pytest.mark.slow
def test_a_chat_store_grows_linearly_with_the_turns(tmp_path: Path) -> None:
    """400 turns of a 1 KB question stay under 5 MB (each checkpoint used to hold every turn again)."""
    db = tmp_path / "chat.sqlite"
    chat = _evidence_session(db)
    sizes = {}
    for i in range(1, 401):
        chat.ask("x" * 1000 + f" {i}?", {"a": "white", "b": "black"})
        if i % 100 == 0:
            chat.store._conn.commit()
            sizes[i] = db.stat().st_size
    assert len(chat.turns) == 400 and chat.turns[-1]["question"].endswith(" 400?")
    chat.store.close()
    assert sizes[400] < 5 << 20, sizes
    assert sizes[400] - sizes[300] < 3 * sizes[100], sizes  # linear: the last 100 turns cost what the first did
    reopened = ChatStore(db).state("s")
    assert [t["question"].split()[-1] for t in reopened["turns"][:2]] == ["1?", "2?"] and len(reopened["turns"]) == 400


# ---------------------------------------------------------------- 12, 13: secrets


@pytest.mark.slow
def test_url_passwords_and_echoed_keys_are_written_nowhere(tmp_path: Path) -> None:
    """A password in --base-url and a server whose 401 body echoes the API key: neither reaches run.json,
    metrics.json, failed.csv, results, the trace or the terminal."""
    from fake_openai_server import FakeOpenAIServer, Script

    password, key = "hunter2-PASSWORD", "sk-SECRET-KEY-0123456789"
    basic = base64.b64encode(f"alice:{password}".encode()).decode()  # what the HTTP client sends for the URL's user
    with FakeOpenAIServer(Script(fail=[401] * 50, echo_key=True)) as srv:
        csv_path = labelled_rows(tmp_path / "train.csv", 2)
        common = ["--images", IMAGES.parent, "--backend", "openai", "--api-key", key, "--model", "fake-qwen"]
        url = srv.url.replace("://", f"://alice:{password}@")  # the client sends it as Basic auth instead of the key
        batch = vqa(["batch", csv_path, "--out", tmp_path / "sub.csv", "--run-dir", tmp_path / "b", "--tools", "none",
                     "--base-url", url, *common])
        evaluate = vqa(["eval", csv_path, "--run-dir", tmp_path / "e", "--base-url", srv.url, *common])
    assert srv.stats.requests  # the server was asked, and refused
    written = {p: p.read_text(errors="replace") for d in ("b", "e") for p in (tmp_path / d).rglob("*") if p.is_file()}
    assert {"run.json", "failed.csv", "trace.jsonl", "metrics.json"} <= {p.name for p in written}, list(written)
    assert "for key Basic ***" in written[tmp_path / "b" / "failed.csv"]  # the server's error is kept, not the key
    assert "for key ***" in written[tmp_path / "e" / "trace.jsonl"]
    for where, text in [*written.items(), ("batch output", batch.stdout + batch.stderr),
                        ("eval output", evaluate.stdout + evaluate.stderr)]:
        assert password not in text and key not in text and basic not in text, where
    assert "alice:***@" in written[tmp_path / "b" / "run.json"]


def test_redact_hides_url_passwords_bearer_tokens_and_remembered_keys() -> None:
    import logging

    from agent.core.redact import redact, remember

    remember("sk-remembered-123456")
    assert redact("GET http://u:pw%40x@h:1/v1 sent Bearer abc.DEF-123 and sk-remembered-123456") == \
        "GET http://u:***@h:1/v1 sent Bearer *** and ***"
    assert redact("http://h/v1 sk-short") == "http://h/v1 sk-short"  # no password, nothing remembered
    record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f", 1, "key %s", ("sk-remembered-123456",), None)
    assert record.getMessage() == "key ***"


# ---------------------------------------------------------------- 7, 8, 9: settings and outputs


@pytest.mark.parametrize(("setup", "needles"), [
    (lambda d: (d / "c.toml").write_bytes('model = "모델"\n'.encode("cp949")), ["not UTF-8", "c.toml"]),
    (lambda d: (d / "c.toml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n"), ["at most", "c.toml"]),
], ids=["cp949", "oversized"])
def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path: Path, setup, needles: list[str]) -> None:
    setup(tmp_path)
    line = one_error_line(vqa(["ask", IMAGES / "coffee.jpg", "Q?", "-c", "x", "-c", "y", "--reasoner", "evidence",
                               "--config", tmp_path / "c.toml"]))
    assert all(n in line for n in needles), line


@pytest.mark.parametrize(("var", "value"), [("VQA_OCR", "tesseract"), ("VQA_TOOLS", "garbage")])
def test_an_environment_value_that_is_not_json_names_the_variable(var: str, value: str) -> None:
    line = one_error_line(vqa(["ask", IMAGES / "coffee.jpg", "Q?", "-c", "x", "-c", "y", "--reasoner", "evidence"],
                              env={var: value}))
    assert var in line and "expected JSON" in line and repr(value) in line, line


def test_train_out_that_is_a_file_is_refused_before_any_loading(tmp_path: Path) -> None:
    (tmp_path / "adapter").write_text("not a folder")
    line = one_error_line(vqa(["train", labelled_rows(tmp_path / "t.csv", 4), "--images", IMAGES.parent, "--out",
                               tmp_path / "adapter", "--model", "/nope/model"]))
    assert "--out" in line and "is a file" in line, line


# ---------------------------------------------------------------- 5: option columns


def test_more_option_columns_than_the_parser_takes_are_refused_with_the_count(tmp_path: Path) -> None:
    letters = "abcdefghij"
    (tmp_path / "t.csv").write_text(f"id,path,question,{','.join(letters)},answer\n"
                                    f"Q1,images/coffee.jpg,Which?,{','.join(letters.upper())},i\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"found 10 option columns \(a-j\); expected at most 5"):
        read_questions(tmp_path / "t.csv", IMAGES.parent)
    line = one_error_line(vqa(["batch", tmp_path / "t.csv", "--images", IMAGES.parent, "--out", tmp_path / "s.csv",
                               "--reasoner", "evidence"]))
    assert "10 option columns" in line and not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------- 4: a tool raising BaseException

QUITTER = '''
from typing import Literal

from agent.core.evidence import GenericEvidence
from tools.base import Tool


class QuitEvidence(GenericEvidence):
    tool: Literal["quitter"] = "quitter"


class QuitterTool(Tool):
    name = "quitter"
    evidence = QuitEvidence
    description = "Ends the process instead of answering."
    limitations = "All of them."

    def load(self):
        pass

    def apply(self, image, question, workdir, peers):
        raise {exc}
'''


@pytest.mark.parametrize("exc", ["SystemExit(0)", "KeyboardInterrupt()"])
def test_a_tool_raising_base_exception_is_a_recorded_tool_failure(tmp_path: Path, exc: str) -> None:
    (tmp_path / "quitter_tool.py").write_text(QUITTER.replace("{exc}", exc), encoding="utf-8")
    (tmp_path / "c.toml").write_text('[tools.register]\nquitter = "quitter_tool:QuitterTool"\n', encoding="utf-8")
    csv_path = labelled_rows(tmp_path / "t.csv", 3)
    p = vqa(["batch", csv_path, "--images", IMAGES.parent, "--out", tmp_path / "s.csv", "--run-dir", tmp_path / "r",
             "--config", tmp_path / "c.toml", "--tools", "quitter", "--reasoner", "evidence"],
            env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 4  # the header and every row
    failures = (tmp_path / "r" / "tool_failures.csv").read_text()
    assert failures.count("quitter") == 3 and type(eval(exc)).__name__ in failures, failures  # noqa: S307


# ---------------------------------------------------------------- 11: terminal escapes


def test_terminal_escapes_in_questions_reach_no_terminal_but_stay_in_the_files(tmp_path: Path) -> None:
    import json

    question = "\x1b]2;owned\x07Which\x1b[2J cup\u202e? \x9b31m"
    p = vqa(["ask", IMAGES / "coffee.jpg", question, "-c", "white\x1b[5m", "-c", "black\u2066", "--reasoner",
             "evidence", "--tools", "none", "--run-dir", tmp_path], env={"COLUMNS": "200"})
    shown = vqa(["trace", "show", tmp_path], env={"COLUMNS": "200"})
    for out in (p.stdout + p.stderr, shown.stdout + shown.stderr):
        assert "Which cup?" in out and "white" in out, out
        assert not any(c in out for c in "\x1b\x07\x9b\u202e\u2066"), repr(out)
    record = json.loads((tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    event = json.loads((tmp_path / "trace.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert record["question"] == event["inputs"]["text"] == question  # the files keep the text byte for byte


# ---------------------------------------------------------------- 14: a local Ray cluster


def test_a_local_ray_cluster_is_sized_to_the_machine_and_refuses_more_workers() -> None:
    from agent.core.errors import ConfigError
    from agent.distributed import Cluster

    assert Cluster("local", workers=2).local_cpus(cpus=8) == 8  # the machine's CPUs, not the workers'
    with pytest.raises(ConfigError, match=r"--workers 64 needs 64 CPUs.*has 2; ask for at most 2.*--oversubscribe"):
        Cluster("local", workers=64).local_cpus(cpus=2)
    with pytest.raises(ConfigError, match=r"needs 2 GPUs.*has 1"):
        Cluster("local", workers=2, gpus_per_worker=1).local_cpus(cpus=8, gpus=1)
    assert Cluster("local", workers=64, oversubscribe=True).local_cpus(cpus=2) == 64


def test_vqa_batch_with_more_local_workers_than_cpus_is_one_line(tmp_path: Path) -> None:
    n = (os.cpu_count() or 1) + 1
    line = one_error_line(vqa(["batch", labelled_rows(tmp_path / "t.csv", 2), "--images", IMAGES.parent, "--out",
                               tmp_path / "s.csv", "--reasoner", "evidence", "--ray", "local", "--workers", n],
                              env={"RAY_TMPDIR": "/tmp"}))
    assert f"--workers {n} needs {n} CPUs" in line and "--oversubscribe" in line, line


# ---------------------------------------------------------------- 15: skipped training rows


@pytest.mark.slow
def test_skipped_training_rows_are_named_with_reasons_and_counted(tmp_path: Path, tiny_dir: Path) -> None:
    rows = labelled_rows(tmp_path / "t.csv", 4).read_text(encoding="utf-8")
    rows += ("BAD_1,images/coffee.jpg,Which?,x,y,z,w,e\n"  # the answer is not among the options
             "BAD_2,images/coffee.jpg,Which?,x,y,,,c\n"
             "NOGOLD,images/coffee.jpg,Which?,x,y,z,w,\n")
    (tmp_path / "t.csv").write_text(rows, encoding="utf-8")
    out = tmp_path / "adapter"
    p = vqa(["train", tmp_path / "t.csv", "--images", IMAGES.parent, "--out", out, "--model",
             tiny_dir / "vlm-qwen2.5-vl", "--tools", "none", "--max-steps", 1, "--val-frac", 0, "--max-pixels", 50000],
            env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    for qid, reason in (("BAD_1", "bad_answer"), ("BAD_2", "bad_answer"), ("NOGOLD", "unlabelled")):
        assert any(qid in line and reason in line for line in p.stderr.splitlines()), (qid, p.stderr)
    listed = (out / "skipped_rows.csv").read_text(encoding="utf-8").splitlines()
    assert len(listed) == 4 and all(any(q in line for line in listed) for q in ("BAD_1", "BAD_2", "NOGOLD"))
    assert "skipped 3" in p.stdout, p.stdout


# ---------------------------------------------------------------- 2: files read whole have caps


def test_a_huge_caption_file_skips_its_image_unread_and_a_huge_source_is_refused(tmp_path: Path) -> None:
    import shutil

    from agent.kb.build import CAPTION_LIMIT, SOURCE_LIMIT, build_kb

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cup", "cat"):
        shutil.copy(IMAGES / "coffee.jpg", folder / f"{name}.jpg")
    (folder / "cup.txt").write_text("a white cup of coffee", encoding="utf-8")
    with open(folder / "cat.txt", "wb") as f:  # sparse: 1 GB on paper, nothing on disk
        f.truncate(1 << 30)
    summary = build_kb(folder, tmp_path / "kb", clip="e5")
    assert summary.added == 1
    assert any(s.where == "cat.jpg" and "cat.txt" in s.reason and f"{CAPTION_LIMIT:,}" in s.reason
               for s in summary.skipped), summary.skipped
    with open(tmp_path / "big.jsonl", "wb") as f:
        f.truncate(SOURCE_LIMIT + 1)
    with pytest.raises(DataError, match=r"big.jsonl is .* bytes; expected at most"):
        build_kb(tmp_path / "big.jsonl", tmp_path / "kb2", clip="e5")


# ---------------------------------------------------------------- 3: long questions


def test_a_long_question_is_embedded_up_to_e5s_token_limit() -> None:
    import numpy as np

    from agent.core.e5 import MAX_TOKENS, shared_e5

    e5 = shared_e5()
    long = "간판에 적힌 가게 이름은 무엇인가요? what is written on the sign " * 4000  # ~200 KB
    fitted = e5.fit_query(long)
    assert long.startswith(fitted) and e5._tokens(fitted) <= MAX_TOKENS < e5._tokens(long[: len(fitted) + 8])
    assert np.array_equal(e5.query(long), e5._model.query(fitted))  # one 512-token pass, not 100 windows
    short = "간판에 적힌 가게 이름은?"
    assert e5.fit_query(short) == short and np.array_equal(e5.query([short])[0], e5._model.query(short))


def test_questions_beyond_the_stated_length_go_to_failed_csv_with_the_reason(tmp_path: Path) -> None:
    from agent.core.schema import QUESTION_LIMIT

    rows = labelled_rows(tmp_path / "t.csv", 2).read_text(encoding="utf-8").splitlines()
    rows.append("HUGE,images/coffee.jpg," + "왜" * 200_000 + ",x,y,z,w,a")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    p = vqa(["batch", tmp_path / "t.csv", "--images", IMAGES.parent, "--out", tmp_path / "s.csv", "--run-dir",
             tmp_path / "r", "--reasoner", "evidence", "--tools", "none"])
    assert p.returncode == 0, p.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 4
    failed = (tmp_path / "r" / "failed.csv").read_text(encoding="utf-8")
    assert "HUGE" in failed and "too_long" in failed and f"{QUESTION_LIMIT:,}" in failed, failed
