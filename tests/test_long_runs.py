"""Long runs: tool calls queue for the machine instead of competing (the timeout counts run time only), rows whose
tool timed out are answered again on resume, Ctrl-C stops cleanly with a resume line, progress tells the truth.
The promises of docs/long-runs.md."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from PIL import Image

from agent.toolpool import ToolCancelled, ToolPool, ToolTimeout

ROOT = Path(__file__).resolve().parents[1]


def _in_thread(fn):
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _until(cond, ceiling: float = 30.0) -> None:
    ev = threading.Event()
    for _ in range(int(ceiling / 0.02)):
        if cond():
            return
        ev.wait(0.02)
    raise AssertionError("the event did not happen within the ceiling")


# ---------------------------------------------------------------- 1. concurrency that fits the machine


def test_a_queued_call_waits_for_its_slot_and_its_timeout_counts_only_its_own_run() -> None:
    pool, release = ToolPool(per_tool=1, cpu=0), threading.Event()
    first, _ = _in_thread(lambda: pool.call("ocr", release.wait, timeout=60))
    _until(lambda: pool.running("ocr") == 1)
    second, box = _in_thread(lambda: pool.call("ocr", lambda: "read", timeout=0.3))
    _until(lambda: pool.waiting("ocr") == 1)
    second.join(1.5)  # five times its timeout in the queue: it must still be waiting, not timed out
    assert second.is_alive() and box == {}
    release.set()
    second.join(30)
    assert box == {"value": "read"} and pool.running("ocr") == 0


def test_cpu_tools_share_one_budget_of_slots() -> None:
    pool, release = ToolPool(per_tool=2, cpu=1), threading.Event()
    _in_thread(lambda: pool.call("ocr", release.wait, timeout=60))
    _until(lambda: pool.running("ocr") == 1)
    t, box = _in_thread(lambda: pool.call("detect", lambda: "boxes", timeout=60))
    _until(lambda: pool.waiting("detect") == 1)  # another tool, but the one CPU slot is taken
    assert pool.running("detect") == 0
    release.set()
    t.join(30)
    assert box == {"value": "boxes"}


def test_a_call_that_runs_too_long_still_times_out() -> None:
    pool, release = ToolPool(per_tool=1, cpu=0), threading.Event()
    with pytest.raises(ToolTimeout, match="timed out after"):
        pool.call("ocr", release.wait, timeout=0.2)
    release.set()


def test_a_cpu_call_is_timed_on_the_cpu_it_gets_so_a_call_that_gets_none_waits_for_its_ceiling() -> None:
    pool, release = ToolPool(per_tool=1, cpu=1, ceiling=1000), threading.Event()
    t, box = _in_thread(lambda: pool.call("ocr", lambda: release.wait() and "woke", timeout=0.2))
    _until(lambda: pool.running("ocr") == 1)
    t.join(1.0)  # five timeouts of wall time without CPU: the machine was busy elsewhere, not the tool
    assert t.is_alive() and box == {}
    release.set()
    t.join(30)
    assert box == {"value": "woke"}


def test_a_cpu_call_that_keeps_the_cores_busy_times_out() -> None:
    pool, stop = ToolPool(per_tool=1, cpu=1, ceiling=1000), threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t, box = _in_thread(lambda: pool.call("ocr", spin, timeout=0.2))
    t.join(300)
    stop.set()
    assert isinstance(box.get("error"), ToolTimeout)


def test_cancel_stops_waiting_and_running_calls() -> None:
    pool, release = ToolPool(per_tool=1, cpu=0), threading.Event()
    running, rbox = _in_thread(lambda: pool.call("ocr", release.wait, timeout=600))
    _until(lambda: pool.running("ocr") == 1)
    waiting, wbox = _in_thread(lambda: pool.call("ocr", lambda: 1, timeout=600))
    _until(lambda: pool.waiting("ocr") == 1)
    pool.cancel()
    running.join(30)
    waiting.join(30)
    assert isinstance(rbox["error"], ToolCancelled) and isinstance(wbox["error"], ToolCancelled)
    with pytest.raises(ToolCancelled):
        pool.call("detect", lambda: 1, timeout=600)
    release.set()


def test_configure_sizes_torch_and_openmp_threads_to_the_slots() -> None:
    script = textwrap.dedent("""
        import os
        os.environ.pop("OMP_NUM_THREADS", None); os.environ.pop("OMP_THREAD_LIMIT", None)
        import torch
        from agent.toolpool import ToolPool, configure, cpu_count
        slots = configure(1, "cpu")
        print(slots, ToolPool().per_tool, ToolPool().cpu, torch.get_num_threads(), os.environ["OMP_THREAD_LIMIT"],
              cpu_count())
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    slots, per_tool, cpu, torch_threads, omp, cores = map(int, p.stdout.split())
    assert (slots, per_tool, cpu) == (1, 1, 1)
    assert torch_threads == omp == cores  # one call at a time gets every core, and no more


def test_machine_slots_follow_the_cores() -> None:
    from agent.toolpool import machine_slots

    assert [machine_slots("cpu", cores=c) for c in (1, 2, 4, 8, 16)] == [1, 1, 1, 2, 4]


# ---------------------------------------------------------------- 2. honest resume

GATE = '''
import threading
from typing import Literal

from agent.core.evidence import Evidence
from tools.base import Tool, ToolError

OPEN = threading.Event()  # the test opens it: until then every call hangs (and times out)
BROKEN = []  # a message here makes load() fail: the tool is unavailable for the process


class GateEvidence(Evidence):
    tool: Literal["gate"] = "gate"
    seen: str

    def prompt_lines(self):
        return [f"seen={self.seen}"]

    def summary(self, limit=6):
        return self.seen


class GateTool(Tool):
    name = "gate"
    evidence = GateEvidence
    description = "Waits for the test to open the gate."
    limitations = "A test tool."

    def load(self):
        if BROKEN:
            raise ToolError(BROKEN[0])

    def apply(self, image, question, workdir, peers):
        OPEN.wait()
        return GateEvidence(seen="open"), {}
'''


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A plug-in tool whose calls hang until ``gate.OPEN`` is set (a module of its own, registered as ``gate``)."""
    import importlib

    from tools import register

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "gate_tool.py").write_text(GATE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "gate_tool", raising=False)
    module = importlib.import_module("gate_tool")
    register("gate", "gate_tool:GateTool")
    yield module
    module.OPEN.set()  # let abandoned calls end


def _rows(tmp_path: Path, n: int = 3):
    from agent.core.schema import Question

    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    return [Question(id=f"q{i}", image=img, text="What is it?", options={"a": "x", "b": "y"}) for i in range(n)]


def test_rows_whose_tool_timed_out_are_recorded_incomplete_and_answered_again_on_resume(tmp_path, gate) -> None:
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import ResultsLog, run_batch
    from agent.services import Services

    rows, run = _rows(tmp_path), tmp_path / "run"
    first = run_batch(rows, Services(reasoner=EvidenceReasoner(), tool_timeout=0.2), run, forced_tools=["gate"])
    assert (first.incomplete, first.answered, first.failed) == (3, 3, 0)
    kept = ResultsLog(run / "results.jsonl").load()
    assert all(a.incomplete and "timed out" in a.evidence[0].error for a in kept.values())
    gate.OPEN.set()
    again: list[str] = []
    second = run_batch(rows, Services(reasoner=EvidenceReasoner(), tool_timeout=30), run, forced_tools=["gate"],
                       on_done=lambda a: again.append(a.id))
    assert (second.skipped, second.retried, second.new, second.incomplete) == (0, 3, 3, 0)
    assert sorted(again) == ["q0", "q1", "q2"]
    assert all(a.evidence[0].ok for a in second.answers)
    third = run_batch(rows, Services(reasoner=EvidenceReasoner(), tool_timeout=30), run, forced_tools=["gate"])
    assert (third.skipped, third.new) == (3, 0)  # complete now: kept


def test_an_unavailable_tool_is_not_a_reason_to_answer_again(tmp_path, gate) -> None:
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import run_batch
    from agent.services import Services

    gate.BROKEN.append("the gate's weights are missing: put them in ~/gate")
    rows, run = _rows(tmp_path, 2), tmp_path / "run"
    first = run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=["gate"])
    assert first.incomplete == 0 and first.tool_failures == {"gate": 2}
    second = run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=["gate"])
    assert (second.skipped, second.new) == (2, 0)


# ---------------------------------------------------------------- 3. Ctrl-C

HANG = '''
import os
import threading
from typing import Literal

from agent.core.evidence import Evidence
from tools.base import Tool


class HangEvidence(Evidence):
    tool: Literal["hang"] = "hang"
    seen: str

    def prompt_lines(self):
        return [f"seen={self.seen}"]

    def summary(self, limit=6):
        return self.seen


class HangTool(Tool):
    """Hangs on questions that say 'slow' while HANG_CLOSED is set in the environment (a stuck model)."""

    name = "hang"
    evidence = HangEvidence
    description = "Hangs on slow questions."
    limitations = "A test tool."

    def load(self):
        pass

    def apply(self, image, question, workdir, peers):
        if os.environ.get("HANG_CLOSED") and "slow" in question.text:
            if os.environ.get("HANG_STARTED"):  # a folder: one file per call now hanging (the tests wait for them)
                open(os.path.join(os.environ["HANG_STARTED"], question.id), "w").close()
            threading.Event().wait()
        return HangEvidence(seen="done"), {}
'''


def _vqa_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "hang_tool.py").write_text(HANG, encoding="utf-8")
    return {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)]), **extra}


def _csv(tmp_path: Path, texts: list[str]) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (10, 200, 10)).save(images / "g.png")
    csv = tmp_path / "q.csv"
    csv.write_text("id,path,question,a,b,c,d\n" + "".join(f"Q{i},g.png,{t},x,y,z,w\n" for i, t in enumerate(texts)),
                   encoding="utf-8")
    return csv, images


def _batch_args(tmp_path: Path, csv: Path, images: Path) -> list[str]:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\n[tools.register]\nhang = "hang_tool:HangTool"\n', encoding="utf-8")
    return [str(Path(sys.executable).parent / "vqa"), "batch", str(csv), "--images", str(images), "--out",
            str(tmp_path / "sub.csv"), "--run-dir", str(tmp_path / "run"), "--config", str(cfg), "--tools", "hang",
            "--batch-size", "2", "--tool-timeout", "600", "--tool-concurrency", "2"]


@pytest.mark.slow
def test_ctrl_c_stops_taking_rows_keeps_what_is_done_says_how_to_resume_and_the_resume_finishes(tmp_path) -> None:
    import signal

    csv, images = _csv(tmp_path, ["fast one", "slow one", "slow two", "slow three"])
    args = _batch_args(tmp_path, csv, images)
    hanging = tmp_path / "hanging"
    hanging.mkdir()
    p = subprocess.Popen(args, env=_vqa_env(tmp_path, HANG_CLOSED="1", HANG_STARTED=str(hanging)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = tmp_path / "run" / "results.jsonl"
    _until(lambda: results.is_file() and results.read_text().count("\n") >= 1 and len(list(hanging.iterdir())) >= 2
           or p.poll() is not None, 300)  # the fast row written, two slow ones running
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted: 1 of 4 rows done" in err and "2 cut short" in err and "resume with:" in err
    resume = err.split("resume with:", 1)[1].strip().splitlines()[0]
    assert resume.startswith("vqa batch") and "--run-dir" in resume
    assert not (tmp_path / "sub.csv").exists()  # no submission of guesses for the rows not done
    again = subprocess.run(args, env=_vqa_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed 1" in again.stdout
    assert len((tmp_path / "sub.csv").read_text().splitlines()) == 5


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path) -> None:
    import signal

    csv, images = _csv(tmp_path, ["slow one", "slow two"])
    p = subprocess.Popen(_batch_args(tmp_path, csv, images), env=_vqa_env(tmp_path, HANG_CLOSED="1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    trace = tmp_path / "run" / "trace.jsonl"
    _until(lambda: (tmp_path / "run" / "run.json").is_file() or p.poll() is not None, 300)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    del trace


@pytest.mark.slow
def test_ctrl_c_in_vqa_eval_stops_taking_rows_says_how_far_it_got_and_how_to_resume(tmp_path) -> None:
    import signal

    from agent.core.schema import Answer

    csv, images = _csv(tmp_path, ["fast one", "slow one", "slow two", "slow three"])
    labelled = tmp_path / "l.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    labelled.write_text("\n".join([lines[0] + ",answer", *(line + ",a" for line in lines[1:])]) + "\n",
                        encoding="utf-8")
    batch = _batch_args(tmp_path, labelled, images)
    args = [batch[0], "eval", *batch[2:5], *batch[7:]]  # no --out: eval writes metrics into --run-dir
    hanging = tmp_path / "hanging"
    hanging.mkdir()
    p = subprocess.Popen(args, env=_vqa_env(tmp_path, HANG_CLOSED="1", HANG_STARTED=str(hanging)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = tmp_path / "run" / "arms" / "router" / "results.jsonl"
    _until(lambda: results.is_file() and results.read_text().count("\n") >= 1 and len(list(hanging.iterdir())) >= 2
           or p.poll() is not None, 300)  # the fast row written, two slow ones running
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted: 1 of 4 rows of arm router done, 2 cut short" in err and "resume with:" in err, err
    resume = err.split("resume with:", 1)[1].strip().splitlines()[0]
    assert resume.startswith("vqa eval") and "--run-dir" in resume
    kept = [Answer.model_validate_json(line) for line in results.read_text().splitlines()]
    assert [a.id for a in kept if not a.incomplete] == ["Q0"]  # the row done is kept
    assert not (tmp_path / "run" / "metrics.json").exists()  # no metrics over the rows not done
    again = subprocess.run(args, env=_vqa_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_second_ctrl_c_in_vqa_eval_exits_at_once(tmp_path) -> None:
    import signal

    csv, images = _csv(tmp_path, ["slow one", "slow two"])
    labelled = tmp_path / "l.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    labelled.write_text("\n".join([lines[0] + ",answer", *(line + ",a" for line in lines[1:])]) + "\n",
                        encoding="utf-8")
    batch = _batch_args(tmp_path, labelled, images)
    p = subprocess.Popen([batch[0], "eval", *batch[2:5], *batch[7:]], env=_vqa_env(tmp_path, HANG_CLOSED="1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    trace = tmp_path / "run" / "trace.jsonl"
    _until(lambda: trace.is_file() and "hang" in trace.read_text() or p.poll() is not None, 300)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------- 4. progress


def test_without_a_terminal_a_plain_line_comes_from_the_start_before_any_row(capsys) -> None:
    from agent.cli.progress import row_progress

    with row_progress("answering", lines_every=0.05) as bar:
        _until(lambda: "starting" in capsys.readouterr().err)  # the model is still loading: a line anyway
        bar.start(2)
        _until(lambda: "answering: 0/2 rows" in capsys.readouterr().err)


@pytest.mark.slow
def test_results_are_written_per_row_while_a_slow_row_of_the_same_batch_still_runs(tmp_path) -> None:
    """A finished row is in results.jsonl although the other question of its batch is still stuck in a tool."""
    import signal

    csv, images = _csv(tmp_path, ["fast one", "slow one"])
    p = subprocess.Popen(_batch_args(tmp_path, csv, images), env=_vqa_env(tmp_path, HANG_CLOSED="1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = tmp_path / "run" / "results.jsonl"
    try:
        _until(lambda: results.is_file() and '"Q0"' in results.read_text() or p.poll() is not None, 300)
        assert p.poll() is None and '"Q1"' not in results.read_text()
    finally:
        p.kill()
        p.communicate()


def test_vqa_ask_prints_a_status_line_per_graph_step(tmp_path) -> None:
    img = tmp_path / "g.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(img)
    p = subprocess.run([str(Path(sys.executable).parent / "vqa"), "ask", str(img), "What is it?", "-c", "x", "-c", "y",
                        "--reasoner", "evidence", "--tools", "none"], env=_vqa_env(tmp_path), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    steps = [line for line in p.stderr.splitlines() if line.startswith("… ")]
    assert steps == ["… image loaded", "… route (forced): no tools", "… reasoned (round 1, rules): a"], p.stderr


# ---------------------------------------------------------------- 5. ablation that says what ran


def test_ran_counts_successful_calls_only_and_an_arm_with_an_unavailable_tool_is_not_compared() -> None:
    from agent.core.schema import Answer, ToolResult
    from eval.ablation import ArmRun, count_tool_runs, table_rows

    def ans(qid: str, letter: str, results: list[ToolResult]) -> Answer:
        return Answer(id=qid, answer=letter, probs={"a": 0.5, "b": 0.5}, method="evidence", tools=[], evidence=results,
                      timings={}, question="?", options={"a": "x", "b": "y"})

    from agent.core.schema import Question

    qs = [Question(id=f"q{i}", text="?", options={"a": "x", "b": "y"}, answer="a") for i in range(2)]
    failed = ToolResult(tool="retrieve", ok=False, error="no knowledge base: run vqa kb build")
    answers = {q.id: ans(q.id, "a", [failed]) for q in qs}
    runs = count_tool_runs(list(answers.values()))
    assert runs == {"retrieve": {"called": 2, "ran": 0, "cached": 0, "failed": 2}}
    router = ArmRun("router", None, answers, 1.0, tool_runs=runs)
    only = ArmRun("only:retrieve", ["retrieve"], answers, 1.0, tool_runs=runs, unavailable=["retrieve"])
    rows = {r["arm"]: r for r in table_rows([only, router], qs, ["retrieve"])}
    assert rows["router"]["ran:retrieve"] == 0.0  # every call failed: it never ran
    assert rows["only:retrieve"]["unavailable"] == "retrieve"
    assert rows["only:retrieve"]["delta_vs_router"] is None and rows["only:retrieve"]["mcnemar_p"] is None


# ---------------------------------------------------------------- 6. one short line per unavailable tool


def test_an_unavailable_tool_is_one_short_line_per_question_and_its_full_reason_once(tmp_path, gate) -> None:
    import csv

    from agent.core.schema import brief_error
    from agent.reasoners.evidence import EvidenceReasoner
    from agent.runner import run_batch
    from agent.services import Services

    reason = "the gate's weights are missing from ~/gate " + "(a long explanation of where to get them) " * 5
    gate.BROKEN.append(reason)
    rows, run = _rows(tmp_path, 4), tmp_path / "run"
    summary = run_batch(rows, Services(reasoner=EvidenceReasoner()), run, forced_tools=["gate"])
    assert summary.tool_failures == {"gate": 4} and reason.strip() in summary.tool_errors["gate"]
    with (run / "tool_failures.csv").open(encoding="utf-8") as f:
        errors = [r["error"] for r in csv.DictReader(f)]
    assert reason.strip() in errors[0] and len(errors) == 4
    assert all(len(e) <= 100 and e.startswith("unavailable: the gate") for e in errors[1:])
    for a in summary.answers:  # what --show, the UI and the Runs table print per question
        shown = [r.summary() for r in a.evidence] + [brief_error(w) for w in a.route.skipped.values()]
        assert all(len(s) <= 110 for s in shown), shown


# ---------------------------------------------------------------- 8. exit codes and help


def _vqa(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "vqa"), *args], env=_vqa_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


def test_a_batch_where_no_row_could_be_answered_exits_1_and_says_why(tmp_path) -> None:
    csv, _ = _csv(tmp_path, ["what?", "what now?"])
    empty = tmp_path / "wrong"
    empty.mkdir()
    p = _vqa(tmp_path, "batch", str(csv), "--images", str(empty), "--reasoner", "evidence", "--tools", "none",
             "--out", str(tmp_path / "sub.csv"), "--run-dir", str(tmp_path / "run"))
    assert p.returncode == 1 and "none of the 2 rows could be answered" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "terminate called" not in p.stderr


def test_enumerated_flags_list_their_choices_and_trace_html_is_a_command(tmp_path) -> None:
    p = _vqa(tmp_path, "batch", "--help")
    assert "[qwen|evidence|openai]" in p.stdout and "[rules|escalate|vlm]" in p.stdout
    csv, images = _csv(tmp_path, ["what?"])
    assert _vqa(tmp_path, "batch", str(csv), "--images", str(images), "--reasoner", "evidence", "--tools", "none",
                "--out", str(tmp_path / "sub.csv"), "--run-dir", str(tmp_path / "run")).returncode == 0
    p = _vqa(tmp_path, "trace", "html", str(tmp_path / "run"))
    assert p.returncode == 0 and (tmp_path / "run" / "trace.html").read_text(encoding="utf-8").startswith("<!")


@pytest.mark.slow
def test_third_party_progress_bars_print_only_with_verbose(tiny_dir: Path, tmp_path: Path) -> None:
    """transformers' "Loading weights" bar (stderr) on every model load: off unless ``--verbose``."""
    Image.new("RGB", (32, 32), (10, 200, 10)).save(tmp_path / "g.png")
    env = {k: v for k, v in _vqa_env(tmp_path).items()
           if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    err = {}
    for flag in ([], ["--verbose"]):
        p = subprocess.run([str(Path(sys.executable).parent / "vqa"), *flag, "ask", str(tmp_path / "g.png"), "Q?",
                            "-c", "x", "-c", "y", "--tools", "none", "--model", str(tiny_dir / "vlm-qwen3-vl"),
                            "--run-dir", str(tmp_path / f"run{len(flag)}")],
                           capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr
        err[bool(flag)] = p.stderr
    assert "Loading weights" not in err[False] and "it/s]" not in err[False], err[False]
    assert "Loading weights" in err[True], err[True]


# ---------------------------------------------------------------- 7. front-end gaps


def test_vqa_eval_takes_tools_and_refuses_ablate_tools_without_the_ablation(tmp_path) -> None:
    import json

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(images / "g.png")
    csv = tmp_path / "l.csv"
    csv.write_text("id,path,question,a,b,c,d,answer\nQ0,g.png,What is it?,x,y,z,w,a\nQ1,g.png,Colour?,x,y,z,w,b\n",
                   encoding="utf-8")
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\n[tools.register]\nhang = "hang_tool:HangTool"\n', encoding="utf-8")
    base = ["eval", str(csv), "--images", str(images), "--config", str(cfg)]
    p = _vqa(tmp_path, *base, "--run-dir", str(tmp_path / "run"), "--tools", "hang", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tool_runs"] == {"hang": {"called": 2, "ran": 2, "cached": 0, "failed": 0}}
    p = _vqa(tmp_path, *base, "--run-dir", str(tmp_path / "run2"), "--ablate-tools", "none")
    assert p.returncode == 2 and "add --ablate" in p.stderr and "Traceback" not in p.stderr


def test_vqa_ask_shows_the_planner_and_its_rounds(tmp_path) -> None:
    img = tmp_path / "g.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(img)
    p = _vqa(tmp_path, "ask", str(img), "What is it?", "-c", "x", "-c", "y", "--reasoner", "evidence",
             "--planner", "escalate", "--max-rounds", "1", "--tools", "none")
    assert p.returncode == 0, p.stderr
    assert "planner: escalate" in p.stdout and "round 1 (" in p.stdout, p.stdout
