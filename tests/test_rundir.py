"""Run-directory guards: a lock, remembered settings, outputs that never replace inputs or run files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.core.errors import ConfigError
from agent.rundir import RunDirBusy, check_output, locked, remember


def test_a_second_process_is_refused_and_told_who_holds_the_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    other = textwrap.dedent(f"""
        from pathlib import Path
        from agent.rundir import RunDirBusy, locked
        try:
            with locked(Path({str(run)!r}), "vqa batch"):
                print("got it")
        except RunDirBusy as exc:
            print("busy:", exc)
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with locked(run, "vqa eval"):
        p = subprocess.run([sys.executable, "-c", other], env=env, capture_output=True, text=True, timeout=60)
        assert p.stdout.startswith("busy:") and "vqa eval" in p.stdout and "another --run-dir" in p.stdout
        with pytest.raises(RunDirBusy):  # a second holder in the same process too
            with locked(run):
                pass
    p = subprocess.run([sys.executable, "-c", other], env=env, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "got it"  # released when the holder is done


def test_other_settings_are_refused_unless_forced_and_then_earlier_answers_are_set_aside(tmp_path: Path) -> None:
    remember(tmp_path, {"reasoner": "evidence", "tools": None})
    (tmp_path / "results.jsonl").write_text('{"id": "q1"}\n')
    remember(tmp_path, {"reasoner": "evidence", "tools": None})  # same settings: resumes
    with pytest.raises(ConfigError, match=r"tools: None -> \['ocr'\].*new --run-dir, or --force"):
        remember(tmp_path, {"reasoner": "evidence", "tools": ["ocr"]})
    assert (tmp_path / "results.jsonl").exists()
    remember(tmp_path, {"reasoner": "evidence", "tools": ["ocr"]}, force=True)
    assert not (tmp_path / "results.jsonl").exists()
    kept = list(tmp_path.glob("results.*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"id": "q1"}\n'
    assert json.loads((tmp_path / "run.json").read_text())["tools"] == ["ocr"]


def test_new_settings_with_no_answers_yet_are_simply_recorded(tmp_path: Path) -> None:
    remember(tmp_path, {"model": "a"})
    remember(tmp_path, {"model": "b"})
    assert json.loads((tmp_path / "run.json").read_text()) == {"model": "b"}


@pytest.mark.parametrize("case", ["input", "results", "trace", "no_folder", "folder"])
def test_outputs_that_would_destroy_something_or_cannot_be_written_are_refused(tmp_path: Path, case: str) -> None:
    csv, run = tmp_path / "q.csv", tmp_path / "run"
    csv.write_text("id\n")
    out = {"input": csv, "results": run / "results.jsonl", "trace": run / "trace.jsonl",
           "no_folder": tmp_path / "missing" / "s.csv", "folder": tmp_path}[case]
    with pytest.raises(ConfigError, match="--out"):
        check_output(out, inputs=[csv], run_dir=run)


def test_a_submission_inside_the_run_directory_is_accepted_before_the_directory_exists(tmp_path: Path) -> None:
    check_output(tmp_path / "run" / "submission.csv", inputs=[tmp_path / "q.csv"], run_dir=tmp_path / "run")


def test_a_damaged_record_in_the_middle_of_the_results_is_skipped_and_its_row_answered_again(tmp_path: Path) -> None:
    from agent.core.schema import Question
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import ResultsLog, run_batch
    from agent.services import Services

    rows = [Question(id=f"q{i}", text="무슨 색?", options={"a": "x", "b": "y"}) for i in range(3)]
    run = tmp_path / "run"
    run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=[])
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    (run / "results.jsonl").write_bytes(lines[0] + b'{"id": "q1", "answer": \xff garbage\n' + lines[2])
    again: list[str] = []
    summary = run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=[],
                        on_done=lambda a: again.append(a.id))
    assert summary.damaged_lines == [2] and summary.new == 1 and summary.answered == 3
    assert set(ResultsLog(run / "results.jsonl").load()) == {"q0", "q1", "q2"}
