"""``agent.data``: the competition CSV, row by row, and the submission writer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agent.core.errors import DataError
from agent.core.schema import Question
from agent.data import FIELD_LIMIT, RowError, fallback_letter, read_questions, spreadsheet_cell, write_submission

HEADER = "id,path,question,a,b,c,d"
ABCD = dict(zip("abcd", "xyzw", strict=True))
KO = {"a": "고양이", "b": "개", "c": "새", "d": "물고기"}
ROW = "Q1,img/1.jpg,무엇이 보이나요?,고양이,개,새,물고기"


def read(tmp_path: Path, content: str | bytes, encoding: str = "utf-8") -> list[Question | RowError]:
    path = tmp_path / "test.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return read_questions(path, tmp_path / "images")


# --- rows that become questions -------------------------------------------------------------------------------

GOOD = {
    "kaggle_4_options": (f"{HEADER}\n{ROW}\n", KO, None, None),
    "three_options": (f"{HEADER}\nQ1,img/1.jpg,q?,x,y,z,\n", {"a": "x", "b": "y", "c": "z"}, None, None),
    "two_options": (f"{HEADER}\nQ1,img/1.jpg,q?,x,y,,\n", {"a": "x", "b": "y"}, None, None),
    "five_options": (f"{HEADER},e\nQ1,img/1.jpg,q?,v,w,x,y,z\n", dict(zip("abcde", "vwxyz", strict=True)), None, None),
    "answer_upper_and_spaces": (f"{HEADER},answer\nQ1,img/1.jpg,q?,x,y,z,w, B \n", ABCD, "b", None),
    "answer_empty": (f"{HEADER},answer\nQ1,img/1.jpg,q?,x,y,z,w,\n", ABCD, None, None),
    "category": (f"{HEADER},answer,category\nQ1,img/1.jpg,q?,x,y,,,a, counting \n", {"a": "x", "b": "y"}, "a",
                 "counting"),
    "quoted_commas_and_newlines": (f'{HEADER}\nQ1,img/1.jpg,"how many, in\ntotal?","1,000","2\n000",3,4\n',
                                   {"a": "1,000", "b": "2\n000", "c": "3", "d": "4"}, None, None),
    "header_case_spaces_reordered": (" ID ,Question,A,B,C,D,Path\nQ1,q?,x,y,z,w,img/1.jpg\n",
                                     ABCD, None, None),
    "crlf_and_mixed_newlines": (f"{HEADER}\n{ROW}\r\n", KO, None, None),
    "trailing_empty_field": (f"{HEADER}\nQ1,img/1.jpg,q?,x,y,z,w,\n", ABCD, None, None),
    "trailing_comma_in_header": (f"{HEADER},\nQ1,img/1.jpg,q?,x,y,z,w\n", ABCD, None, None),
    "pandas_index_column": (f",{HEADER}\n0,Q1,img/1.jpg,q?,x,y,z,w\n", ABCD, None, None),
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_rows(tmp_path: Path, case: str) -> None:
    content, options, answer, category = GOOD[case]
    [q] = read(tmp_path, content)
    assert isinstance(q, Question), q
    assert q.id == "Q1" and q.options == options and q.answer == answer and q.category == category
    assert q.image == tmp_path / "images" / "img" / "1.jpg"


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("cp949", b""), ("euc-kr", b""), ("utf-16", b"")],
    ids=["utf8", "utf8_bom", "cp949", "euc_kr", "utf16_bom"],
)
def test_encodings(tmp_path: Path, encoding: str, prefix: bytes) -> None:
    text = f"{HEADER}\r\n{ROW}\rQ2,img/2.jpg,몇 개입니까?,하나,둘,셋,넷\n"  # CRLF, CR and LF in one file
    [q1, q2] = read(tmp_path, prefix + text.encode(encoding))
    assert isinstance(q1, Question) and q1.text == "무엇이 보이나요?" and q1.options["d"] == "물고기"
    assert q1.language == "ko" and isinstance(q2, Question) and q2.options["b"] == "둘"


def test_cp949_only_syllables(tmp_path: Path) -> None:
    # "똠" and "햏" are CP949 extension bytes (Excel's code page), not among KS X 1001's 2,350 EUC-KR syllables.
    [q] = read(tmp_path, f"{HEADER}\nQ1,img/1.jpg,똠방각하?,햏,둘,셋,넷\n", encoding="cp949")
    assert isinstance(q, Question) and q.text == "똠방각하?" and q.options["a"] == "햏"


def test_nfd_korean_is_normalised_to_nfc(tmp_path: Path) -> None:
    import unicodedata

    [q] = read(tmp_path, unicodedata.normalize("NFD", f"{HEADER}\n{ROW}\n"))
    assert isinstance(q, Question) and q.text == "무엇이 보이나요?" and q.options["a"] == "고양이"


# --- rows that become RowErrors -------------------------------------------------------------------------------

BAD = {
    "gap_in_options": (f"{HEADER}\nQ1,img/1.jpg,q?,x,,z,w\n", "Q1", "bad_options"),
    "one_option": (f"{HEADER}\nQ1,img/1.jpg,q?,x,,,\n", "Q1", "bad_options"),
    "no_options": (f"{HEADER}\nQ1,img/1.jpg,q?,,,,\n", "Q1", "bad_options"),
    "answer_outside_options": (f"{HEADER},answer\nQ1,img/1.jpg,q?,x,y,z,,d\n", "Q1", "bad_answer"),
    "answer_not_a_letter": (f"{HEADER},answer\nQ1,img/1.jpg,q?,x,y,z,w,2\n", "Q1", "bad_answer"),
    "too_few_fields": (f"{HEADER}\nQ1,img/1.jpg,q?,x,y\n", "Q1", "malformed_row"),
    "too_many_fields": (f"{HEADER}\nQ1,img/1.jpg,q?,x,y,z,w,extra\n", "Q1", "malformed_row"),
    "empty_id": (f"{HEADER}\n,img/1.jpg,q?,x,y,z,w\n", "", "malformed_row"),
    "empty_question": (f"{HEADER}\nQ1,img/1.jpg, ,x,y,z,w\n", "Q1", "malformed_row"),
    "empty_path": (f"{HEADER}\nQ1,,q?,x,y,z,w\n", "Q1", "bad_path"),
    "dotdot_path": (f"{HEADER}\nQ1,../secret.jpg,q?,x,y,z,w\n", "Q1", "bad_path"),
    "absolute_path": (f"{HEADER}\nQ1,/etc/passwd,q?,x,y,z,w\n", "Q1", "bad_path"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_rows_fail_alone(tmp_path: Path, case: str) -> None:
    content, qid, reason = BAD[case]
    first, second = read(tmp_path, content + "Q9,img/9.jpg,q?,x,y,z,w" + (",b" if "answer" in content else "") + "\n")
    assert isinstance(first, RowError), first
    assert (first.id, first.line, first.reason) == (qid, 2, reason)
    assert "line 2" in first.message
    assert isinstance(second, Question) and second.id == "Q9"


def test_duplicate_id_second_occurrence_fails_and_lines_count_physical_lines(tmp_path: Path) -> None:
    content = f'{HEADER}\nQ1,img/1.jpg,"two\nlines",x,y,z,w\n\nQ2,img/2.jpg,q?,x,y,z,w\nQ1,img/3.jpg,q?,x,y,z,w\n'
    out = read(tmp_path, content)
    assert [type(r).__name__ for r in out] == ["Question", "Question", "RowError"]
    assert isinstance(out[2], RowError) and (out[2].id, out[2].line, out[2].reason) == ("Q1", 6, "duplicate_id")


def test_unclosed_quote_is_a_file_error_naming_the_line_it_opened(tmp_path: Path) -> None:
    # Before: one malformed row and Q2 silently swallowed, so the submission lacked a row.
    with pytest.raises(DataError, match="quote opened on line 2 is never closed"):
        read(tmp_path, f'{HEADER}\nQ1,img/1.jpg,"unclosed,x,y,z,w\nQ2,img/2.jpg,q?,x,y,z,w\n')


def test_unclosed_quote_in_a_row_that_parses_names_its_line(tmp_path: Path) -> None:
    # Q2's option d opens a quote on line 4 (its question spans lines 3-4); Q3 would have become part of option d.
    content = f'{HEADER}\nQ1,img/1.jpg,q?,x,y,z,w\nQ2,img/2.jpg,"two\nlines",x,y,z,"w\nQ3,img/3.jpg,q?,x,y,z,w\n'
    with pytest.raises(DataError) as err:
        read(tmp_path, content)
    assert "quote opened on line 4" in str(err.value) and "row starting on line 3" in str(err.value)


def test_a_quote_closed_later_says_which_lines_it_swallowed(tmp_path: Path) -> None:
    [row] = read(tmp_path, f'{HEADER}\nQ1,img/1.jpg,"unclosed,x,y,z,w\nQ2,img/2.jpg,q?,x,y,z,"w\n')
    assert isinstance(row, RowError) and row.reason == "malformed_row" and "spans lines 2-3" in row.message


def test_a_one_megabyte_question_is_read_and_refused_as_its_row(tmp_path: Path) -> None:
    """The CSV parses it (no whole-file error); the row is too long to answer (``QUESTION_LIMIT``), named so."""
    long = "가" * 1_000_000
    [q, ok] = read(tmp_path, f"{HEADER}\nQ0,img/1.jpg,{long}?,x,y,z,w\n{ROW}\n")
    assert isinstance(q, RowError) and q.reason == "too_long" and "1,000,001 characters" in q.message
    assert isinstance(ok, Question)


def test_a_field_over_the_limit_names_its_row(tmp_path: Path) -> None:
    huge = "x" * (FIELD_LIMIT + 1)
    with pytest.raises(DataError) as err:
        read(tmp_path, f"{HEADER}\n{ROW}\nQ2,img/2.jpg,{huge},x,y,z,w\n")
    assert "row starting on line 3" in str(err.value) and f"{FIELD_LIMIT:,}" in str(err.value)


def test_blank_rows_are_skipped_and_header_only_is_empty(tmp_path: Path) -> None:
    assert read(tmp_path, f"\n{HEADER}\n,,,,,,\n\n") == []


# --- whole-file errors ----------------------------------------------------------------------------------------

FILE_ERRORS = {
    "empty_file": (b"", ["empty"]),
    "only_whitespace": (b" \n\r\n", ["empty"]),
    "missing_columns": (b"id,path,a,b,c\nQ1,x.jpg,1,2,3\n", ["['question', 'd']", "['id', 'path', 'a', 'b', 'c']"]),
    "no_header": (f"{ROW}\n".encode(), ["missing required columns", "found columns ['q1'"]),
    "submission_file": (b"id,answer\nQ1,a\n", ["submission file"]),
    "semicolons": (b"id;path;question;a;b;c;d\n", ["';' or tab"]),
    "binary_png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["binary"]),
    "undecodable": (b"id,path\n\xff\xfe\xfd\x80\x80\n", ["UTF-8 or CP949"]),
    "duplicate_header": (f"{HEADER},a\n".encode(), ["['a']", "more than once"]),
}


@pytest.mark.parametrize("case", list(FILE_ERRORS))
def test_whole_file_errors(tmp_path: Path, case: str) -> None:
    content, fragments = FILE_ERRORS[case]
    with pytest.raises(DataError) as err:
        read(tmp_path, content)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="found nothing"):
        read_questions(tmp_path / "nope.csv", tmp_path)


# --- submission -----------------------------------------------------------------------------------------------


def test_write_submission_round_trip_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    out.write_text("old\n")
    rows = [("TEST_000", "a"), ("TEST_001", "d"), ("한글,id", "e")]
    assert write_submission(out, rows) == 3
    assert out.read_bytes().startswith(b"id,answer\nTEST_000,a\n")
    with out.open(encoding="utf-8", newline="") as f:
        assert [tuple(r) for r in csv.reader(f)] == [("id", "answer"), *rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


def test_write_submission_leaves_out_empty_and_repeated_ids(tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    assert write_submission(out, [("Q1", "b"), ("", "a"), ("Q2", "c"), ("Q1", "a")]) == 2
    assert out.read_text(encoding="utf-8") == "id,answer\nQ1,b\nQ2,c\n"


@pytest.mark.parametrize("rows", [[("Q1", "f")], [("Q1", "ab")], [("Q1", "")], [("Q1", "a"), ("Q2", None)]])
def test_write_submission_refuses_bad_letters_and_keeps_the_old_file(tmp_path: Path, rows) -> None:
    out = tmp_path / "submission.csv"
    out.write_text("old\n")
    with pytest.raises(ValueError, match="expected one letter"):
        write_submission(out, rows)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


@pytest.mark.parametrize(("options", "letter"), [(["a", "b", "c", "d"], "a"), (["a", "b"], "a"), ([], "a")])
def test_fallback_letter(options: list[str], letter: str) -> None:
    assert fallback_letter(options) == letter


@pytest.mark.parametrize(("value", "cell"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1+cmd", "'+1+cmd"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("Q1", "Q1"), ("a=b", "a=b"), ("", ""),
    ("-0.0500", "-0.0500"), ("+3", "+3"), ("1e-3", "1e-3"), (7, 7), (None, None),
])
def test_spreadsheet_cell_defuses_formulas_and_keeps_numbers(value, cell) -> None:
    assert spreadsheet_cell(value) == cell


def test_submission_ids_are_written_exactly_even_when_they_look_like_formulas(tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    write_submission(out, [("=1+1", "a"), ("@x", "b")])
    assert list(csv.reader(open(out, encoding="utf-8"))) == [["id", "answer"], ["=1+1", "a"], ["@x", "b"]]
