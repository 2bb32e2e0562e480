"""The installed ``vqa`` command as a user runs it: outputs, bad input, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import tools

VQA = str(Path(sys.executable).parent / "vqa")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTO = EXAMPLES / "images" / "coffee.jpg"


def vqa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def assert_clean_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    for n in needles:
        assert n in p.stderr, p.stderr


@pytest.mark.parametrize(("question", "tools"), [
    ("사진 속 사람은 몇 명인가요?", ["detect"]),
    ("What does the sign say?", ["ocr"]),
    ("사진 속 고양이는 무슨 색인가요?", []),
])
def test_route_json(question: str, tools: list[str]) -> None:
    p = vqa("route", question, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tools"] == tools


def test_route_explains_each_tools_score() -> None:
    p = vqa("route", "이 커피 한 잔은 얼마예요?", "-c", "3,000원", "-c", "3,500원", "-c", "4,000원", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["tools"] == ["ocr"] and r["method"] == "e5"
    assert set(r["scores"]) == set(r["thresholds"]) == set(tools.tool_names())
    assert "options look like text to read" in r["reasons"]["ocr"] and r["features"]["text"] == ["3,000원", "3,500원",
                                                                                             "4,000원"]
    assert len(r["nearest"]) == 3 and {"question", "tools", "cos"} <= set(r["nearest"][0])
    p = vqa("route", "이 커피 한 잔은 얼마예요?", "-c", "3,000원", "-c", "3,500원")
    assert p.returncode == 0 and "tools: ocr (by e5)" in p.stdout and "scores: som" in p.stdout, p.stdout


def small_bank_file(path: Path, n: int = 6) -> Path:
    """The first ``n`` questions of the shipped held-out set, as a bank file of their own."""
    from agent.routing.bank import default_heldout, load_bank

    path.write_text("".join(it.model_dump_json() + "\n" for it in load_bank(default_heldout())[:n]), encoding="utf-8")
    return path


def test_eval_router_prints_metrics_with_intervals_and_timing(tmp_path: Path) -> None:
    bank = small_bank_file(tmp_path / "bank.jsonl")
    p = vqa("dev", "eval-router", "--bank", bank, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["split"] == "test" and r["n"] == 6 and set(r["per_tool"]) == set(tools.tool_names())
    lo, hi = r["exact"]["ci"]
    assert 0.0 <= lo <= r["exact"]["value"] <= hi <= 1.0 and r["exact"]["n"] == 6
    assert r["timing"]["median_ms"] > 0 and r["timing"]["p95_ms"] >= r["timing"]["median_ms"]
    assert len(r["errors"]) == 6 - r["exact"]["k"]
    p = vqa("dev", "eval-router", "--bank", bank)
    assert p.returncode == 0 and "exact-set accuracy" in p.stdout and "micro-F1" in p.stdout, p.stdout
    assert "recall [95% CI]" in p.stdout and "routing time after load" in p.stdout


@pytest.mark.parametrize(("args", "needles"), [
    (["dev", "eval-router", "--split", "dev"], ["--split", "dev"]),
    (["dev", "eval-router", "--bank", "/nope/bank.jsonl"], ["/nope/bank.jsonl", "does not exist"]),
    (["dev", "eval-router", "--model", "/nope/router.npz"], ["/nope/router.npz", "train-router"]),
    (["dev", "train-router", "--bank", "/nope/bank.jsonl"], ["/nope/bank.jsonl"]),
])
def test_router_commands_bad_input_is_a_clear_error(args: list, needles: list[str]) -> None:
    assert_clean_error(vqa(*args), *needles)


def test_train_router_without_val_questions_is_a_clear_error(tmp_path: Path) -> None:
    bank = small_bank_file(tmp_path / "bank.jsonl")  # only test questions
    assert_clean_error(vqa("dev", "train-router", "--bank", bank, "--out", tmp_path / "m.npz"), "train and val")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize(("args", "needles"), [
    (["ask", PHOTO, "Q?", "-c", "only one"], ["2-5 options"]),
    (["ask", PHOTO, "Q?", "-c", "x", "-c", "y", "--tools", "ocr,magic"], ["unknown tool", "magic"]),
    (["ask", "/nope/missing.jpg", "Q?", "-c", "x", "-c", "y"], ["does not exist"]),
    (["ask", PHOTO, "Q?", "-c", "x", "-c", "y", "--model", "/nope/model"], ["/nope/model"]),
    (["ask", PHOTO, "Q?", "-c", "x", "-c", "y", "--quant", "3bit"], ["quant"]),
    (["batch", "/nope/test.csv", "--images", EXAMPLES, "--out", "OUT", "--reasoner", "evidence"],
     ["/nope/test.csv"]),
    (["batch", EXAMPLES / "test.csv", "--images", "/nope", "--out", "OUT"], ["--images"]),
])
def test_bad_input_is_a_clear_error(args: list, needles: list[str], tmp_path: Path) -> None:
    assert_clean_error(vqa(*[tmp_path / "x.csv" if a == "OUT" else a for a in args]), *needles)


@pytest.mark.parametrize(("toml", "needles"), [
    ("[ocr]\nbogus_key = 3\n", ["bad settings for tool 'ocr'", "bogus_key"]),
    ("tool_timeout = -1\n", ["tool_timeout"]),
    ("image_max_pixels = 0\n", ["image_max_pixels"]),
    ("batch_size = 0\n", ["batch_size"]),
])
def test_bad_settings_are_refused_before_any_work(toml: str, needles: list[str], tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(toml, encoding="utf-8")
    assert_clean_error(vqa("batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", tmp_path / "s.csv",
                           "--run-dir", tmp_path / "run", "--reasoner", "evidence", "--config", cfg), *needles)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "run" / "results.jsonl").exists()


def test_csv_missing_columns_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("id,question,a,b\n1,q,x,y\n", encoding="utf-8")
    assert_clean_error(vqa("batch", f, "--images", tmp_path, "--out", tmp_path / "s.csv", "--reasoner", "evidence"),
                       "path")


# Every command that runs the reasoner takes these, with the same defaults (those of the Settings model).
SHARED_FLAGS = {"--reasoner": "reasoner", "--backend": "backend", "--base-url": "base_url", "--api-key": "api_key",
                "--model": "model", "--quant": "quant", "--dtype": "dtype", "--adapter": "adapter",
                "--min-pixels": "min_pixels", "--max-pixels": "max_pixels", "--generate": "generate",
                "--device": "device", "--ocr-engine": "ocr_engine", "--tool-timeout": "tool_timeout",
                "--detector": "detector", "--segmenter": "segmenter", "--kb": "kb"}
RUN_FLAGS = {"--batch-size": "batch_size", "--debias": "debias", "--temperature": "temperature", "--cache": "cache"}


def help_rows(command: str) -> dict[str, str]:
    """``vqa COMMAND --help`` as ``{flag: its row}`` (a row's wrapped lines joined), flags from every panel."""
    p = subprocess.run([VQA, command, "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "220", "TERMINAL_WIDTH": "220"})
    assert p.returncode == 0, p.stderr
    rows: dict[str, str] = {}
    flag = None
    for line in p.stdout.splitlines():
        first = re.match(r"\s*│\s{1,5}(?:\*\s+)?(--[\w-]+)", line)  # a row starts near the panel's left edge
        if first:
            flag = first.group(1)
            rows[flag] = line
        elif flag and line.lstrip().startswith("│"):
            rows[flag] += " " + line
        else:
            flag = None
    return {f: " ".join(r.replace("│", " ").split()) for f, r in rows.items()}


def shown_default(row: str) -> str | None:
    m = re.search(r"\[default: ([^\]]+)\]", row)
    return m.group(1) if m else None


def test_every_reasoner_command_takes_the_same_settings_flags_with_the_real_defaults() -> None:
    from agent.config import Settings

    helps = {c: help_rows(c) for c in ("ask", "batch", "eval", "chat")}
    for command, rows in helps.items():
        assert set(SHARED_FLAGS) | {"--config"} <= set(rows), (command, set(SHARED_FLAGS) - set(rows))
        for flag, setting in SHARED_FLAGS.items():
            assert rows[flag] == helps["ask"][flag], (command, flag)  # same help text and default everywhere
            default = Settings.model_fields[setting].default
            if isinstance(default, bool):
                want = flag.removeprefix("--") if default else {"--generate": "logits", "--debias": "no-debias"}[flag]
            else:
                want = None if default is None else str(default)
            assert shown_default(rows[flag]) == want, (command, flag, rows[flag])
    for flag, setting in RUN_FLAGS.items():  # the commands that answer a whole CSV
        assert helps["batch"][flag] == helps["eval"][flag]
        default = Settings.model_fields[setting].default
        want = "no-debias" if default is False else None if default is None else str(default)
        assert shown_default(helps["batch"][flag]) == want, flag
    assert shown_default(helps["ask"]["--max-pixels"]) == "1003520" and "--model" in helps["chat"]


def test_flags_left_at_their_default_leave_the_choice_to_the_file_and_the_environment(tmp_path: Path) -> None:
    def method(*args: object, **env: str) -> str:
        p = subprocess.run([VQA, "ask", PHOTO, "What is in the cup?", "-c", "tea", "-c", "coffee", "--tools", "none",
                            "--json", *map(str, args)], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)["method"]

    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\n')
    missing = {"VQA_REASONER": "qwen", "VQA_MODEL": str(tmp_path / "no-model")}  # would fail if it were used
    assert method("--config", cfg, **missing) == "evidence"  # file > environment; --reasoner's default is no flag
    cfg.write_text(f'reasoner = "qwen"\nmodel = "{tmp_path / "no-model"}"\n')
    assert method("--config", cfg, "--reasoner", "evidence") == "evidence"  # flag > file
    assert method(VQA_REASONER="evidence") == "evidence"  # environment > default


@pytest.mark.slow
def test_ask_json_record_with_tiny_model(tiny_dir: Path, tmp_path: Path) -> None:
    p = vqa("ask", PHOTO, "컵은 무슨 색인가요?", "-c", "흰색", "-c", "검은색", "-c", "빨간색", "--tools", "none",
            "--model", tiny_dir / "vlm-qwen3-vl", "--json", "--run-dir", tmp_path)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert {"answer", "probs", "tools", "evidence"} <= set(rec)
    assert rec["answer"] in ("a", "b", "c") and set(rec["probs"]) == {"a", "b", "c"}
    assert rec["method"] == "logits" and rec["tools"] == []
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 1


def _big_jpeg(path: Path) -> None:
    Image.new("RGB", (160, 120), (40, 90, 200)).resize((12800, 9600)).save(path, quality=40)


@pytest.fixture(scope="module")
def bad_rows_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    (root / "img").mkdir()
    for name in ("coffee.jpg", "chelsea.jpg", "rocket.jpg"):
        (root / "img" / name).write_bytes((EXAMPLES / "images" / name).read_bytes())
    (root / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _big_jpeg(root / "img" / "huge.jpg")
    outside = root.parent / "outside.jpg"
    outside.write_bytes((EXAMPLES / "images" / "coffee.jpg").read_bytes())
    (root / "img" / "link.jpg").symlink_to(outside)
    rows = [
        ["id", "path", "question", "a", "b", "c", "d"],
        ["ok4", "img/coffee.jpg", "컵은 무슨 색인가요?", "흰색", "검은색", "빨간색", "파란색"],
        ["ok3", "img/chelsea.jpg", "동물은 무엇인가요?", "고양이", "개", "토끼", ""],
        ["ok2", "img/rocket.jpg", "Is it a rocket?", "yes", "no", "", ""],
        ["huge", "img/huge.jpg", "하늘은 무슨 색인가요?", "파란색", "빨간색", "초록색", ""],
        ["missing", "img/nope.jpg", "무엇인가요?", "가", "나", "다", "라"],
        ["corrupt", "img/corrupt.jpg", "무엇인가요?", "가", "나", "다", "라"],
        ["escape", "../outside.jpg", "무엇인가요?", "가", "나", "다", "라"],
        ["symlink", "img/link.jpg", "무엇인가요?", "가", "나", "다", "라"],
        ["gap", "img/coffee.jpg", "무엇인가요?", "가", "", "다", "라"],
        ["short", "img/coffee.jpg"],
    ]
    csv_path = root / "test.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return csv_path, root


@pytest.mark.slow
def test_batch_answers_good_rows_and_falls_back_on_every_bad_one(tiny_dir: Path, bad_rows_dataset, tmp_path: Path):
    csv_path, root = bad_rows_dataset
    sub, run = tmp_path / "submission.csv", tmp_path / "run"
    p = vqa("batch", csv_path, "--images", root, "--out", sub, "--run-dir", run, "--tools", "none",
            "--model", tiny_dir / "vlm-qwen2.5-vl", "--batch-size", "4")
    assert p.returncode == 0, p.stderr
    got = list(csv.DictReader(open(sub, encoding="utf-8")))
    assert [r["id"] for r in got] == ["ok4", "ok3", "ok2", "huge", "missing", "corrupt", "escape", "symlink", "gap",
                                      "short"]
    allowed = {"ok4": "abcd", "ok3": "abc", "ok2": "ab", "huge": "abc"}
    for r in got:
        assert r["answer"] in allowed.get(r["id"], "abcd")
    failed = {r["id"]: r["reason"] for r in csv.DictReader(open(run / "failed.csv", encoding="utf-8"))}
    assert set(failed) == {"missing", "corrupt", "escape", "symlink", "gap", "short"}
    assert "missing" in failed["missing"] and "corrupt" in failed["corrupt"]
    assert "escapes_root" in failed["symlink"] and "bad_path" in failed["escape"]
    assert "rows 10" in p.stdout and "answered 4" in p.stdout and "failed 6" in p.stdout
    huge = [json.loads(x) for x in open(run / "results.jsonl") if '"id":"huge"' in x]
    assert huge and huge[0]["steps"][0]["detail"]["original_size"] == [12800, 9600]


@pytest.mark.slow
def test_killed_batch_loses_no_finished_row_and_rerun_duplicates_none(tiny_dir: Path, tmp_path: Path) -> None:
    n = 40
    csv_path = tmp_path / "test.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "question", "a", "b", "c", "d"])
        for i in range(n):
            w.writerow([f"q{i:02d}", "images/coffee.jpg", f"질문 {i}: 컵은 무슨 색인가요?", "흰색", "검은색", "빨간색", ""])
    run, sub = tmp_path / "run", tmp_path / "sub.csv"
    args = [VQA, "batch", csv_path, "--images", EXAMPLES, "--out", sub, "--run-dir", run, "--tools", "none",
            "--model", tiny_dir / "vlm-qwen2.5-vl", "--batch-size", "1"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = run / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x)["id"] for x in results.read_text().splitlines() if x.strip()]
    assert 3 <= len(before) < n, "the kill should land mid-run"
    assert not sub.exists()
    p = vqa(*args[1:])
    assert p.returncode == 0, p.stderr
    after = [json.loads(x)["id"] for x in results.read_text().splitlines() if x.strip()]
    assert after[: len(before)] == before and len(after) == len(set(after)) == n
    assert f"resumed {len(before)}" in p.stdout
    assert [r["id"] for r in csv.DictReader(open(sub, encoding="utf-8"))] == [f"q{i:02d}" for i in range(n)]


def test_batch_show_prints_markup_like_ids_and_options_as_written(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["id", "path", "question", "a", "b", "c", "d"],
                                 ["[/]R1[bold", "images/coffee.jpg", "[red]What is it?", "[/]cup", "[b]mug", "", ""]])
    p = vqa("batch", csv_path, "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir", tmp_path / "run",
            "--reasoner", "evidence", "--tools", "none", "--show")
    assert p.returncode == 0 and "Traceback" not in p.stderr + p.stdout, p.stderr
    assert "[/]R1[bold" in p.stdout
    assert list(csv.reader(open(tmp_path / "sub.csv", encoding="utf-8")))[1][0] == "[/]R1[bold"


def test_an_error_message_with_markup_is_printed_as_written(tmp_path: Path) -> None:
    missing = tmp_path / "[/]nope[bold.csv"
    assert_clean_error(vqa("batch", missing, "--images", EXAMPLES, "--out", tmp_path / "sub.csv",
                           "--reasoner", "evidence"), "[/]nope[bold.csv")


def test_progress_bar_counts_bad_rows_and_failed_csv_has_their_lines(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,path,question,a,b,c,d\nok1,images/coffee.jpg,q?,x,y,z,w\nok2,images/coffee.jpg,q?,x,y,z,w\n"
                        "gone,images/missing.jpg,q?,x,y,z,w\ngap,images/coffee.jpg,q?,x,,z,w\n"
                        "short,images/coffee.jpg\n", encoding="utf-8")
    p = vqa("batch", csv_path, "--images", EXAMPLES, "--out", tmp_path / "sub.csv", "--run-dir", tmp_path / "run",
            "--reasoner", "evidence", "--tools", "none")
    assert p.returncode == 0, p.stderr
    assert "5/5" in p.stderr  # bad rows count (it ended at 3/5)
    failed = {r["id"]: r["line"] for r in csv.DictReader(open(tmp_path / "run" / "failed.csv", encoding="utf-8"))}
    assert failed == {"gone": "4", "gap": "5", "short": "6"}
def test_train_router_writes_a_model_that_eval_router_scores(tmp_path: Path) -> None:
    from agent.routing.bank import TOOL_NAMES, load_bank, split

    items = load_bank()
    picked = [it for name, n in (("train", 40), ("val", 16)) for it in split(items, name)[::8][:n]]
    for tool in TOOL_NAMES:  # every tool has training questions with it (tools added late sit at the bank's end)
        picked += [it for it in split(items, "train") if tool in it.tools and it not in picked][:2]
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(it.model_dump_json() + "\n" for it in picked), encoding="utf-8")
    p = vqa("dev", "train-router", "--bank", bank, "--out", tmp_path / "m.npz", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["out"] == str(tmp_path / "m.npz") and (tmp_path / "m.npz").is_file()
    assert set(report["thresholds"]) == set(TOOL_NAMES) and "log_loss" in report["val"]
    p = vqa("dev", "eval-router", "--bank", bank, "--split", "val", "--model", tmp_path / "m.npz", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n"] == sum(it.split == "val" for it in picked)


# ---------------------------------------------------------------- polish: version, help, limit, quiet, provenance

HEAVY = ("torch", "transformers", "langgraph", "cv2", "easyocr", "faiss")


@pytest.mark.parametrize("args", [["--help"], ["route", "간판에 적힌 글자는?", "-c", "x", "-c", "y", "--json"],
                                  ["batch", "--help"], ["--version"]])
def test_help_version_and_route_import_no_model_library(args: list[str]) -> None:
    code = ("import sys\nfrom agent.cli import main\nsys.argv = ['vqa', *sys.argv[1:]]\ntry:\n    main()\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "HEAVY []", p.stdout[-500:]


def test_version_prints_the_package_version() -> None:
    p = vqa("--version")
    assert p.returncode == 0 and re.fullmatch(r"vqa-orchestrator 0\.1\.0( \(git [0-9a-f]{40}(\+dirty)?\))?\n",
                                              p.stdout), p.stdout


@pytest.mark.parametrize("command", ["batch", "eval"])
def test_help_shows_on_off_flags_as_flags(command: str) -> None:
    rows = help_rows(command)
    for flag in ("--quiet", "--debias", "--generate", "--help", "--json" if command == "eval" else "--show"):
        assert "<bool>" not in rows[flag], rows[flag]
    assert "<int" in rows["--limit"] and "<int>" in rows["--seed"]  # options with a value still show its type
    p = subprocess.run([VQA, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0 and "--version" in p.stdout and "<bool>" not in p.stdout


def test_batch_limit_quiet_and_what_produced_the_run(tmp_path: Path) -> None:
    run, sub = tmp_path / "run", tmp_path / "sub.csv"
    p = vqa("batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", sub, "--run-dir", run, "--reasoner",
            "evidence", "--tools", "none", "--limit", "3", "--seed", "4", "--quiet", "--api-key", "s3cret")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and "answering" not in p.stderr  # no summary, no progress bar
    assert [r["id"] for r in csv.DictReader(open(sub, encoding="utf-8"))] == ["TEST_000", "TEST_001", "TEST_002"]
    text = (run / "run.json").read_text(encoding="utf-8")
    made = json.loads(text)["provenance"]
    assert made["seed"] == 4 and made["limit"] == 3 and "s3cret" not in text
    assert made["command"].startswith("vqa batch ") and "--api-key '***'" in made["command"]
    p = vqa("batch", EXAMPLES / "test.csv", "--images", EXAMPLES, "--out", sub, "--run-dir", run, "--reasoner",
            "evidence", "--tools", "none", "--limit", "0")
    assert p.returncode == 2 and "--limit" in p.stderr and "Traceback" not in p.stderr


def test_progress_rate_counts_only_rows_answered_now_and_resumed_rows_apart() -> None:
    import io
    import threading

    from rich.console import Console
    from rich.progress import Progress

    from agent.cli.progress import RateColumn, RowProgress

    now = [0.0]  # Rich's clock, moved by hand
    progress = Progress(RateColumn(), console=Console(file=io.StringIO()), get_time=lambda: now[0])
    bar = RowProgress(progress, "answering", clock=lambda: now[0])
    bar.start(10)
    for _ in range(3):  # bad rows and rows resumed from an earlier run: reported at once, on the calling thread
        now[0] += 0.25
        bar.done()
    task = progress.tasks[0]
    assert task.completed == 3 and (bar.resumed, bar.answered) == (3, 0)
    assert str(RateColumn().render(task)) == "- rows/s"  # no rate from resumed rows
    worker = threading.Thread(target=bar.done)
    worker.start()
    worker.join()
    assert task.completed == 4 and (bar.resumed, bar.answered) == (3, 1)
    for _ in range(2):  # answered rows, two a second after the first: the rate counts only this run's rows
        now[0] += 0.5
        bar.done()
    assert task.completed == 6 and bar.rate() == 3.0  # 3 answered rows in the 1 s since answering began
    assert str(RateColumn().render(task)) == "3.00 rows/s"
    assert bar.clock_text() == "2s elapsed, about 1s left"  # from the command's start (1.75 s); 4 rows at 3/s


def test_eval_tables_never_cut_arm_or_category_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import agent.cli.eval as cli_eval
    from eval.report import Calibration, Metrics, Summary

    arms = ["router", "-ocr+detect+som+retrieve", "plugin:mean_color_and_friends"]
    s = Summary(n=4, correct=2, accuracy=0.5, ci_low=0.15, ci_high=0.85)
    row = {"n": 4, "accuracy": 0.5, "ci_low": 0.15, "ci_high": 0.85, "delta_vs_router": 0.0, "mcnemar_p": 1.0,
           "s_per_q": 0.07, "calls_per_q": 1.0, "tool_s_per_q": 0.5}
    m = Metrics(csv=None, run="r", created="now", reasoner="evidence", n=4, correct=2, accuracy=0.5, ci_low=0.15,
                ci_high=0.85, row_errors=0, unlabelled=0, failed=0, s_per_q=0.1, debias=False, category_source="router",
                per_category={"detect+som+retrieve+ocr": s}, tool_runs={},
                calibration=Calibration(n=4, bins=10, ece=0.1, nll=1.0, temperature_fit=1.0, ece_at_fit=0.1,
                                        nll_at_fit=1.0, temperature=None), circular=None,
                ablation={"table": "ablation.csv", "plot": "ablation.png", "tools": [], "same_as": {}, "tool_runs": {},
                          "rows": [{"arm": a, **row} for a in arms]})
    console = Console(width=60, record=True)
    monkeypatch.setattr(cli_eval, "out", console)
    cli_eval.print_metrics(m)
    shown = console.export_text()
    assert all(a in shown for a in arms) and "detect+som+retrieve+ocr" in shown and "…" not in shown


def test_dev_schema_writes_the_answer_schema_and_check_fails_when_it_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "answer.schema.json"
    assert vqa("dev", "schema", "--out", path).returncode == 0
    assert json.loads(path.read_text(encoding="utf-8"))["title"] == "Answer"
    assert vqa("dev", "schema", "--out", path, "--check").returncode == 0
    path.write_text("{}", encoding="utf-8")
    p = vqa("dev", "schema", "--out", path, "--check")
    assert p.returncode == 1 and "out of date" in p.stderr and "vqa dev schema --out" in p.stderr


def test_piped_output_keeps_a_wide_table_row_on_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A log file or a notebook's ``!vqa eval`` is not a terminal: Rich's 80 columns folded the 13-column ablation
    table into one-character cells; ``COLUMNS`` still wins."""
    from rich.table import Table

    from agent.cli.common import _stdout_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = _stdout_console()
    table = Table("arm", *(f"column {i}" for i in range(12)))
    table.add_row("without:retrieve", *(f"{i}.00%" for i in range(12)))
    console.print(table)
    lines = capsys.readouterr().out.splitlines()
    assert any("without:retrieve" in line and "11.00%" in line for line in lines), lines
    monkeypatch.setenv("COLUMNS", "100")
    assert _stdout_console().width == 100


def test_progress_without_a_terminal_prints_plain_lines(capsys) -> None:
    """A log file or a notebook cell gets a line when a pass ends (and every 30 s from the start, see
    tests/test_long_runs.py), never a bar drawn only at exit."""
    import threading

    from rich.progress import Progress

    from agent.cli.progress import RowProgress

    bar = RowProgress(Progress(disable=True), "answering", lines_every=3600)
    bar.start(4)
    bar.done()  # resumed
    for _ in range(3):
        worker = threading.Thread(target=bar.done)
        worker.start()
        worker.join()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("answering: 4/4 rows, 1 resumed, ") and "elapsed" in lines[0], lines
