"""Reading VisDial v1.0: the dialogs file and the dense annotations.

Dialogs file: ``{"data": {"questions": [...], "answers": [...], "dialogs": [{"image_id", "caption",
"dialog": [{"question", "answer", "answer_options", "gt_index"}, ...]}]}}``; ``question``/``answer`` index the
two string tables, ``answer_options`` holds 100 indices into ``answers`` and ``gt_index`` the position of the
ground truth among them. Every round with ``answer_options`` is ranked (the test split has them on the last round
only, with no ``answer`` and no ``gt_index``); the rounds before it are its history (question and ground-truth
answer, as the benchmark's protocol says).

Dense annotations: a list of ``{"image_id", "round_id", "gt_relevance"}`` (``round_id`` counted from 1;
``relevance`` is accepted for ``gt_relevance``), 100 values in option order.

Photos are found in ``--images DIR`` by image id: ``*_{id:012d}.jpg`` as VisDial names them, or ``{id}.jpg`` /
``.png``. A missing photo is not an error here: the round's ``image`` is ``None`` and the run records it as
failed. A file that cannot be used is a ``DataError`` naming the dialog and round.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import DataError

N_OPTIONS = 100
_IMAGE_NAME = re.compile(r"(?:^|_)(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class DialogRound:
    """One round to rank: its photo, caption, history, question and candidates (``gt_index``: the ground truth's
    position among ``options``, ``None`` on the test split)."""

    image_id: int
    round_id: int  # counted from 1, as in the dense annotations and the submission
    caption: str
    history: tuple[tuple[str, str], ...]
    question: str
    options: tuple[str, ...]
    gt_index: int | None
    image: Path | None
    dialog: int  # position of the dialog in the file (for messages)

    @property
    def id(self) -> str:
        return f"{self.image_id}_{self.round_id}"

    @property
    def answer(self) -> str | None:
        return None if self.gt_index is None else self.options[self.gt_index]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {path} is not readable JSON ({exc}); expected {_EXPECTED[what]}") from None


_EXPECTED = {
    "VisDial file": 'VisDial v1.0 JSON: {"data": {"questions", "answers", "dialogs"}}',
    "dense annotations": 'a JSON list of {"image_id", "round_id", "gt_relevance"}',
}


def image_index(images: Path) -> dict[int, Path]:
    """Image id -> photo under ``images`` (recursively), from the file names."""
    out: dict[int, Path] = {}
    for p in sorted(Path(images).rglob("*")):
        m = _IMAGE_NAME.search(p.name)
        if m and p.is_file():
            out.setdefault(int(m.group(1)), p)
    return out


def _table(data: dict, key: str, path: Path) -> list[str]:
    table = data.get(key)
    if not isinstance(table, list) or not all(isinstance(t, str) for t in table):
        raise DataError(f"{path}: data.{key} must be a list of strings, found {type(table).__name__}; "
                        f"expected {_EXPECTED['VisDial file']}")
    return table


def read_dialogs(path: Path, images: Path | None = None) -> list[DialogRound]:
    """Every round to rank, in file order. Raises ``DataError`` (naming the dialog and round) for a bad file."""
    doc = _read_json(path, "VisDial file")
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("dialogs"), list):
        raise DataError(f"{path}: no data.dialogs list; expected {_EXPECTED['VisDial file']}")
    questions, answers = _table(data, "questions", path), _table(data, "answers", path)
    photos = image_index(images) if images is not None else {}
    out: list[DialogRound] = []
    for d, dialog in enumerate(data["dialogs"]):
        where = f"{path}: dialog {d}"
        if not isinstance(dialog, dict) or not isinstance(dialog.get("image_id"), int) \
                or not isinstance(dialog.get("dialog"), list):
            raise DataError(f"{where}: expected an object with an integer image_id and a dialog list")
        image_id, history = dialog["image_id"], []
        where = f"{path}: dialog {d} (image_id {image_id})"
        for r, turn in enumerate(dialog["dialog"], 1):
            here = f"{where}, round {r}"
            if not isinstance(turn, dict):
                raise DataError(f"{here}: expected an object with question, answer, answer_options, gt_index")
            q = _index(turn.get("question"), questions, "question", here)
            a = _index(turn["answer"], answers, "answer", here) if turn.get("answer") is not None else None
            if "answer_options" in turn:
                opts = turn["answer_options"]
                if not isinstance(opts, list) or len(opts) != N_OPTIONS:
                    found = len(opts) if isinstance(opts, list) else type(opts).__name__
                    raise DataError(f"{here}: answer_options must list {N_OPTIONS} answer indices, found {found}")
                options = tuple(_index(o, answers, "answer_options", here) for o in opts)
                gt = turn.get("gt_index")
                if gt is not None and not (isinstance(gt, int) and 0 <= gt < N_OPTIONS):
                    raise DataError(f"{here}: gt_index must be an integer 0-{N_OPTIONS - 1}, found {gt!r}")
                out.append(DialogRound(image_id=image_id, round_id=r, caption=str(dialog.get("caption", "")),
                                       history=tuple(history), question=q, options=options, gt_index=gt,
                                       image=photos.get(image_id), dialog=d))
            if a is None and r < len(dialog["dialog"]):
                raise DataError(f"{here}: has no answer but later rounds follow; only the last round may lack one")
            history.append((q, a or ""))
    return out


def _index(value: Any, table: list[str], key: str, where: str) -> str:
    if not isinstance(value, int) or not 0 <= value < len(table):
        raise DataError(f"{where}: {key} must index data.{'questions' if key == 'question' else 'answers'} "
                        f"(0-{len(table) - 1}), found {value!r}")
    return table[value]


def read_dense(path: Path) -> dict[tuple[int, int], list[float]]:
    """``(image_id, round_id) -> relevance of each of the 100 options``. Raises ``DataError`` for a bad file."""
    doc = _read_json(path, "dense annotations")
    if not isinstance(doc, list):
        raise DataError(f"{path}: expected {_EXPECTED['dense annotations']}, found {type(doc).__name__}")
    out: dict[tuple[int, int], list[float]] = {}
    for i, entry in enumerate(doc):
        rel = entry.get("gt_relevance", entry.get("relevance")) if isinstance(entry, dict) else None
        key = (entry.get("image_id"), entry.get("round_id")) if isinstance(entry, dict) else (None, None)
        if not all(isinstance(k, int) for k in key) or not isinstance(rel, list) or len(rel) != N_OPTIONS \
                or not all(isinstance(v, (int, float)) for v in rel):
            raise DataError(f"{path}: entry {i} (image_id {key[0]}, round {key[1]}): expected integer image_id and "
                            f"round_id and {N_OPTIONS} numbers in gt_relevance")
        if key[1] < 1:
            raise DataError(f"{path}: entry {i} (image_id {key[0]}): round_id counts from 1, found {key[1]}")
        out[key] = [float(v) for v in rel]
    return out
