"""A LangGraph checkpoint store that holds only data: nothing in a store can make this process run code.

LangGraph's default ``JsonPlusSerializer`` rebuilds any object a msgpack extension value names (module, name,
arguments) by importing and calling it, so a crafted ``chat.sqlite`` handed over with a run folder would run
its callable on ``vqa chat --resume``. ``SafeSerializer`` writes as LangGraph does but reads only msgpack whose
extension values are LangGraph's own safe types (``SAFE_MSGPACK_TYPES``: datetimes, UUIDs, ``Send`` ...), with
every nested value checked before anything is built; any other value, and every ``json`` or ``pickle`` blob, is
refused with ``UnsafeCheckpoint`` before it is built. This project's chat state is plain JSON-like data, so
nothing it writes is refused.

``open_saver`` opens a ``SqliteSaver`` with it, after checking that the file is no larger than
``STORE_LIMIT`` and that its tables, when present, have the columns this LangGraph version writes (a store of
another schema is one ``DataError`` line, not an ``OperationalError`` at the first question).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde import _msgpack as lg_msgpack, jsonplus
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.core.errors import DataError, brief

STORE_LIMIT = 1 << 30  # bytes: a chat store larger than this is refused, not opened
_CONSTRUCTORS = (jsonplus.EXT_CONSTRUCTOR_SINGLE_ARG, jsonplus.EXT_CONSTRUCTOR_POS_ARGS,
                 jsonplus.EXT_CONSTRUCTOR_KW_ARGS, jsonplus.EXT_PYDANTIC_V1, jsonplus.EXT_PYDANTIC_V2)
_DATA_ONLY = ("null", "bytes", "bytearray")
_TABLES = {"checkpoints": {"thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "type",
                           "checkpoint", "metadata"},
           "writes": {"thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "type", "value"}}


class UnsafeCheckpoint(DataError):
    """A stored checkpoint names something other than plain data (a callable, a class, a pickle)."""


class SafeSerializer(jsonplus.JsonPlusSerializer):
    """``JsonPlusSerializer`` in strict msgpack mode that refuses, instead of skipping, any value outside the
    allowlist, and never reads ``json`` or ``pickle`` blobs."""

    def __init__(self) -> None:
        super().__init__(allowed_msgpack_modules=None)  # strict: only SAFE_MSGPACK_TYPES are rebuilt
        self._build = self._unpack_ext_hook

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind, raw = data
        if kind in _DATA_ONLY:
            return super().loads_typed(data)
        if kind != "msgpack":
            raise UnsafeCheckpoint(f"a value stored as {kind!r} (only msgpack data is read)")
        refused: list[str] = []

        def guard(code: int, payload: bytes) -> Any:
            what = _refusal(code, payload, guard)
            if what is not None:
                refused.append(what)
                raise ValueError(what)
            return self._build(code, payload)

        try:
            return ormsgpack.unpackb(raw, ext_hook=guard, option=ormsgpack.OPT_NON_STR_KEYS)
        except ValueError:
            if refused:
                raise UnsafeCheckpoint(refused[0]) from None
            raise


def _refusal(code: int, payload: bytes, guard: Any) -> str | None:
    """Why an extension value may not be built (``None``: it may); its nested values are checked too."""
    if code not in (*_CONSTRUCTORS, jsonplus.EXT_METHOD_SINGLE_ARG, jsonplus.EXT_DELTA_SNAPSHOT):
        return f"a msgpack extension value of type {code}"
    inner = ormsgpack.unpackb(payload, ext_hook=guard, option=ormsgpack.OPT_NON_STR_KEYS)  # nested first
    if code == jsonplus.EXT_DELTA_SNAPSHOT:
        return None
    if not isinstance(inner, (list, tuple)) or len(inner) < 3:
        return "a malformed msgpack extension value"
    if code == jsonplus.EXT_METHOD_SINGLE_ARG:
        key = (str(inner[0]), str(inner[1]), str(inner[3]) if len(inner) > 3 else "")
        return None if key in lg_msgpack.SAFE_MSGPACK_METHODS else f"a call of {'.'.join(key)}"
    key2 = (str(inner[0]), str(inner[1]))
    return None if key2 in lg_msgpack.SAFE_MSGPACK_TYPES else f"an object of {'.'.join(key2)}"


def open_saver(path: Path, conn: sqlite3.Connection) -> SqliteSaver:
    """A ``SqliteSaver`` on ``conn`` (the file ``path``) reading with ``SafeSerializer``; a file over
    ``STORE_LIMIT`` or a foreign schema is a ``DataError`` naming the file."""
    size = path.stat().st_size if path.exists() else 0
    if size > STORE_LIMIT:
        raise DataError(f"expected a chat session store of at most {STORE_LIMIT >> 20} MiB at {path}, found "
                        f"{size / (1 << 20):,.0f} MiB; move it aside to start afresh, or pass another --run-dir")
    for table, need in _TABLES.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if have and not need <= have:
            raise DataError(f"expected a chat session store at {path}, found a SQLite file whose {table!r} table "
                            f"has other columns (missing {', '.join(sorted(need - have))}); it belongs to something "
                            "else: move it aside, or pass another --run-dir")
    saver = SqliteSaver(conn, serde=SafeSerializer())
    saver.setup()
    return saver


def refused(path: Path, exc: Exception) -> DataError:
    """The one line for a store that cannot be read: an unsafe value, or SQLite's error."""
    what = "holds data this program will not load" if isinstance(exc, UnsafeCheckpoint) else "cannot be read"
    return DataError(f"the chat session store {path} {what} ({brief(exc)}); nothing from it was run. Move it "
                     "aside to start afresh, or pass another --run-dir")
