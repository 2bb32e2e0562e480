"""Reading the competition CSV and writing the submission.

Layout (Kaggle): ``id,path,question,a,b,c,d`` plus optional ``e``, ``answer`` and ``category``; header names
are matched after stripping and lower-casing. Encodings: UTF-8 (with or without BOM), UTF-16 with BOM, and
CP949 (a superset of EUC-KR, what Korean Excel writes); any newline style; quoted commas and newlines. A field
may hold up to ``FIELD_LIMIT`` characters (a long question is fine; more names the row); a quote that is never
closed (it would swallow every later row into one field) is a ``DataError`` naming the line where it opened.

A problem with the whole file is a ``DataError``. A problem with one row is a ``RowError`` in that row's place,
so the caller still writes one submission row per input row (``RowError.id`` is the row's id when it has one,
else ``""``; ``line`` is the 1-based line where the row starts, the header being line 1). Fully blank rows
(``,,,,``) are not data rows and are skipped. Extra trailing fields are accepted only when empty.

Paths: ``images.safe_relpath`` (no absolute paths, drives or ``..``) is applied here so a bad path fails its
own row with its line number and ``Question.image`` is always lexically inside ``images_root``. The file is
not opened here: symlinks and existence are checked per question by ``images.resolve_image_path``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.core.errors import DataError, ImageError
from agent.core.fileio import atomic_open
from agent.core.images import safe_relpath
from agent.core.schema import LETTERS, MIN_OPTIONS, OPTION_LIMIT, QUESTION_LIMIT, Question

CSV_LIMIT = 1 << 30  # bytes: a larger CSV is refused before it is read
FIELD_LIMIT = 16 << 20  # characters per CSV field (the csv module's default is 128 KiB)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
REQUIRED: tuple[str, ...] = ("id", "path", "question", "a", "b", "c", "d")
OPTIONAL: tuple[str, ...] = ("e", "answer", "category")
_EXPECTED = "id,path,question,a,b,c,d[,e][,answer][,category]"


@dataclass
class RowError:
    """A row that cannot become a ``Question``.

    reason: malformed_row, duplicate_id, bad_path, bad_options, bad_answer or too_long; ``id`` is ``""`` when the row has none.
    """

    id: str
    line: int
    reason: str
    message: str


def read_questions(csv_path: Path, images_root: Path) -> list[Question | RowError]:
    """One entry per data row, in file order."""
    lines = io.StringIO(_decode(Path(csv_path)), newline="").readlines()  # the reader's own line splitting
    rows = csv.reader(lines)
    if csv.field_size_limit() < FIELD_LIMIT:  # process-wide; only ever raised
        csv.field_size_limit(FIELD_LIMIT)
    line = 1
    try:
        header: list[str] = []
        while not any(header) and (first := next(rows, None)) is not None:  # skip blank lines before the header
            header = [h.strip().lower() for h in first]
        columns = _check_header(header, csv_path)
        width = max(i for i, h in enumerate(header) if h) + 1  # unnamed trailing header columns are optional
        out: list[Question | RowError] = []
        seen: set[str] = set()
        line, last = rows.line_num + 1, (0, [])
        for row in rows:
            if any(field.strip() for field in row):
                parsed = _parse_row(row, line, columns, width, seen, Path(images_root))
                if isinstance(parsed, RowError) and parsed.reason == "malformed_row" and rows.line_num > line:
                    parsed.message += f" It spans lines {line}-{rows.line_num}: an unclosed quote may hide rows."
                out.append(parsed)
            last, line = (line, row), rows.line_num + 1
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(f"{csv_path}: the row starting on line {line} has a field longer than {FIELD_LIMIT:,} "
                            "characters; expected a question or an option, so check for a quote left open before "
                            "it, or shorten that field.") from None
        raise DataError(f"{csv_path}: CSV syntax error near line {rows.line_num}: {e}; fix the quoting there.") from e
    _check_quotes_closed(csv_path, lines, *last)
    return out


def _check_quotes_closed(csv_path: Path, lines: list[str], start: int, row: list[str]) -> None:
    """The last row runs to the end of the file; if it does so inside a quoted field, name where the quote opened.

    The lenient reader (like Excel) takes an unclosed quote as a field to the end of the file; the strict reader
    says so (``unexpected end of data``) when it re-reads just that row.
    """
    if not start:
        return
    try:
        for _ in csv.reader(lines[start - 1:], strict=True):
            pass
    except csv.Error as e:
        if "unexpected end of data" not in str(e):
            return  # some other irregularity the lenient reader has already accepted
        opened = start + sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row[:-1])
        raise DataError(f"{csv_path}: the quote opened on line {opened} is never closed, so every line after it "
                        f"was read as one field of the row starting on line {start}; expected a closing \" in "
                        "that field: add it, or remove the opening one.") from None


def _decode(path: Path) -> str:
    try:
        if path.is_file() and (size := path.stat().st_size) > CSV_LIMIT:
            raise DataError(f"{path} is {size:,} bytes; expected a questions CSV of at most {CSV_LIMIT:,} bytes: "
                            "split it into several files")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"expected a CSV file at {path}, found nothing; check the path.") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}.") from e
    if raw.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    elif b"\x00" in raw:
        raise DataError(f"expected a text CSV in {path}, found binary data (NUL bytes); pass the test.csv file.")
    else:
        encodings = ["utf-8", "cp949"]
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise DataError(f"expected UTF-8 or CP949/EUC-KR text in {path}, but it decodes as neither; save it as UTF-8.")
    if "\x00" in text or not text.strip():
        raise DataError(f"expected a CSV with a header ({_EXPECTED}) in {path}, found "
                        f"{'binary data' if text.strip() else 'an empty file'}.")
    return text


def _check_header(header: list[str], csv_path: Path) -> dict[str, int]:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t"):
            hint = " The header looks ';' or tab separated; save it comma separated."
        elif set(header) <= {"id", "answer"}:
            hint = " This looks like a submission file, not the questions file."
        raise DataError(f"{csv_path}: missing required columns {missing}; found columns {header}. "
                        f"Expected a header like {_EXPECTED}.{hint}")
    duplicated = sorted({h for h in header if h and header.count(h) > 1})
    if duplicated:
        raise DataError(f"{csv_path}: columns {duplicated} appear more than once in the header {header}; keep one.")
    nxt = chr(ord(LETTERS[-1]) + 1)  # "f": an option column this parser does not take
    if nxt in header:
        n = len(LETTERS)
        while chr(ord("a") + n) in header:
            n += 1
        raise DataError(f"{csv_path}: found {n} option columns (a-{chr(ord('a') + n - 1)}); expected at most "
                        f"{len(LETTERS)} (a-{LETTERS[-1]}), so options would be lost. Keep at most "
                        f"{len(LETTERS)} options per question.")
    return {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}


def _parse_row(
    row: list[str], line: int, columns: dict[str, int], width: int, seen: set[str], root: Path
) -> Question | RowError:
    def get(name: str) -> str:
        return row[columns[name]].strip() if name in columns and columns[name] < len(row) else ""

    qid = get("id")

    def error(reason: str, message: str) -> RowError:
        return RowError(qid, line, reason, f"line {line} (id {qid!r}): {message}")

    if len(row) < width or any(field.strip() for field in row[width:]):
        return error("malformed_row", f"expected {width} fields like the header, found {len(row)}; check for "
                     "unquoted commas or a missing field.")
    if not qid:
        return error("malformed_row", "the id field is empty; every row needs an id.")
    if qid in seen:
        return error("duplicate_id", "this id already appeared on an earlier row; ids must be unique.")
    seen.add(qid)
    try:
        image = root / safe_relpath(get("path"))
    except ImageError as e:
        return error("bad_path", str(e))
    texts = [unicodedata.normalize("NFC", get(letter)) for letter in LETTERS]
    n = max((i + 1 for i, t in enumerate(texts) if t), default=0)
    if "" in texts[:n] or n < MIN_OPTIONS:
        found = ",".join(letter if t else "_" for letter, t in zip(LETTERS, texts, strict=True))
        return error("bad_options", f"expected {MIN_OPTIONS}-{len(LETTERS)} options filled from 'a' with no gaps, "
                     f"found {found} (_ = empty).")
    options = dict(zip(LETTERS, texts[:n], strict=False))
    too_long = [f"the question ({len(get('question')):,} characters, at most {QUESTION_LIMIT:,})"] * (
        len(get("question")) > QUESTION_LIMIT) + [f"option {k} ({len(t):,} characters, at most {OPTION_LIMIT:,})"
                                                for k, t in options.items() if len(t) > OPTION_LIMIT]
    if too_long:
        return error("too_long", f"{' and '.join(too_long)} is too long to answer; shorten it.")
    answer = get("answer").lower() or None
    if answer is not None and answer not in options:
        return error("bad_answer", f"expected the answer to be one of {list(options)}, found {get('answer')!r}.")
    try:
        return Question(id=qid, image=image, text=unicodedata.normalize("NFC", get("question")), options=options,
                        answer=answer, category=get("category") or None, line=line)
    except ValidationError as e:
        return error("malformed_row", "; ".join(err["msg"] for err in e.errors()))


def fallback_letter(options: Sequence[str]) -> str:
    """The answer for a row nothing could answer: its first letter (``"a"`` when even the options are unknown).

    Deterministic, so reruns and caches agree; every valid row has an ``a``. A prior (e.g. the train answer
    distribution) can replace this later without changing callers.
    """
    return options[0] if options else LETTERS[0]


def spreadsheet_cell(value: object) -> object:
    """A cell for a CSV that people open (``failed.csv``, ``ablation.csv``): text starting with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so a spreadsheet shows it instead of running it as
    a formula; numbers (``-0.05``) and non-text values are left as they are.

    Not for ``submission.csv``: its ids must equal the input ids character for character (Kaggle matches them)
    and a program reads it, not a spreadsheet, so ``write_submission`` writes ids exactly as read.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_submission(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    """Write ``id,answer`` (UTF-8, ``\\n``) atomically: a temp file beside ``path``, fsynced, then ``os.replace``.
    Ids are written exactly as read, never through ``spreadsheet_cell`` (Kaggle matches them).

    Kaggle needs unique, non-empty ids, so a row with an empty id (a ``RowError`` without one) or a repeated id
    (``duplicate_id``) is left out, the first occurrence winning; the caller's failure log says why. An answer
    that is not one letter a-e is a bug upstream: ``ValueError``, and any existing file stays untouched.
    Returns the number of rows written.
    """
    seen: set[str] = set()
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "answer"])
        for qid, answer in rows:
            if not isinstance(answer, str) or len(answer) != 1 or answer not in LETTERS:
                raise ValueError(f"submission row {qid!r}: expected one letter of {LETTERS!r}, found {answer!r}.")
            if qid and qid not in seen:
                seen.add(qid)
                writer.writerow([qid, answer])
    return len(seen)
