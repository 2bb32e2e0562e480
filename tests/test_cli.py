"""The installed ``vqa`` command as a user runs it: outputs, bad input, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

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
    assert set(r["scores"]) == set(r["thresholds"]) == {"som", "detect", "ocr", "retrieve"}
    assert "options look like text to read" in r["reasons"]["ocr"] and r["features"]["text"] == ["3,000원", "3,500원",
                                                                                             "4,000원"]
    assert len(r["nearest"]) == 3 and {"question", "tools", "cos"} <= set(r["nearest"][0])
    p = vqa("route", "이 커피 한 잔은 얼마예요?", "-c", "3,000원", "-c", "3,500원")
    assert p.returncode == 0 and "tools: ocr (by e5)" in p.stdout and "scores: som" in p.stdout, p.stdout


def small_bank_file(path: Path, n: int = 6) -> Path:
    """The first ``n`` held-out questions of the shipped bank, as a bank file of their own."""
    from agent.routing.bank import load_bank, split

    path.write_text("".join(it.model_dump_json() + "\n" for it in split(load_bank(), "test")[:n]), encoding="utf-8")
    return path


def test_eval_router_prints_metrics_with_intervals_and_timing(tmp_path: Path) -> None:
    bank = small_bank_file(tmp_path / "bank.jsonl")
    p = vqa("dev", "eval-router", "--bank", bank, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["split"] == "test" and r["n"] == 6 and set(r["per_tool"]) == {"som", "detect", "ocr", "retrieve"}
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
    (["batch", "/nope/test.csv", "--images", EXAMPLES, "--out", "/tmp/x.csv", "--reasoner", "evidence"],
     ["/nope/test.csv"]),
    (["batch", EXAMPLES / "test.csv", "--images", "/nope", "--out", "/tmp/x.csv"], ["--images"]),
])
def test_bad_input_is_a_clear_error(args: list, needles: list[str]) -> None:
    assert_clean_error(vqa(*args), *needles)


def test_csv_missing_columns_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("id,question,a,b\n1,q,x,y\n", encoding="utf-8")
    assert_clean_error(vqa("batch", f, "--images", tmp_path, "--out", tmp_path / "s.csv", "--reasoner", "evidence"),
                       "path")


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


def test_train_router_writes_a_model_that_eval_router_scores(tmp_path: Path) -> None:
    from agent.routing.bank import load_bank, split

    items = load_bank()
    picked = [it for name, n in (("train", 40), ("val", 16)) for it in split(items, name)[::8][:n]]
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(it.model_dump_json() + "\n" for it in picked), encoding="utf-8")
    p = vqa("dev", "train-router", "--bank", bank, "--out", tmp_path / "m.npz", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["out"] == str(tmp_path / "m.npz") and (tmp_path / "m.npz").is_file()
    assert set(report["thresholds"]) == {"som", "detect", "ocr", "retrieve"} and "log_loss" in report["val"]
    p = vqa("dev", "eval-router", "--bank", bank, "--split", "val", "--model", tmp_path / "m.npz", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n"] == sum(it.split == "val" for it in picked)
