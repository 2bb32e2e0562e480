"""The third hostile-input pass (issue 24): each case a careful user expects, checked end to end where cheap.

Chat stores that name callables, foreign schemas and quadratic growth; files read whole over their caps; long
questions; tools raising ``BaseException``; option columns beyond ``e``; settings errors; terminal escapes;
secrets in URLs and server errors; Ray sized to the machine; skipped training rows named.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import ormsgpack
import pytest

from agent.chat import ChatRuntime, ChatSession, ChatStore
from agent.errors import DataError

VQA = str(Path(sys.executable).parent / "vqa")
IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


def vqa(args: list, stdin: str | None = None, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run([VQA, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=cwd)


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
    assert [t["question"][-5:] for t in reopened["turns"][:2]] == [" 1?", " 2?"] and len(reopened["turns"]) == 400
