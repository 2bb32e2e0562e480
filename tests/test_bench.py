"""``vqa bench``: one command per benchmark (and the spelling from before they had names); ``mc``: generation held
to a fixed answer length, and a report with every arm's median and minimum; ``server`` against the test double.
No timing is asserted: only what was run and that the numbers are there and consistent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from agent.reasoners.base import ReasonRequest
from agent.reasoners.qwen import QwenBackend
from eval.bench.mc import run_bench
from eval.bench.overhead import make_questions

SMALL = 64 * 28 * 28
VQA = str(Path(sys.executable).parent / "vqa")
BENCHMARKS = ("mc", "visdial", "tools", "kb", "server", "train", "overhead")


def vqa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_bench_lists_every_benchmark() -> None:
    for args in (["bench", "--help"], ["bench"]):
        p = vqa(*args)
        assert p.returncode in (0, 2) and "Traceback" not in p.stderr, p.stderr
        listed = {line.split()[1] for line in p.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
        assert set(BENCHMARKS) <= listed, p.stdout
    assert "Usage: vqa bench kb" in vqa("bench", "kb", "--help").stdout


@pytest.mark.parametrize(("old", "new"), [
    (["--model", "m"], ["mc", "--model", "m"]),
    (["--model", "m", "--task", "visdial", "--json"], ["visdial", "--model", "m", "--json"]),
    (["--task=visdial", "--model=m", "--repeats", "1"], ["visdial", "--model=m", "--repeats", "1"]),
    (["--json", "--task", "mc", "--model", "m"], ["mc", "--json", "--model", "m"]),
    (["mc", "--model", "m"], ["mc", "--model", "m"]),  # the new spelling is left alone
    (["--help"], ["--help"]),
    ([], []),
])
def test_the_old_spelling_becomes_the_new(old: list[str], new: list[str]) -> None:
    from agent.cli.bench import new_spelling

    assert new_spelling(old) == new


def test_the_old_spelling_runs_the_named_benchmark_and_says_the_new_one() -> None:
    p = vqa("bench", "--task", "visdial", "--model", "m", "--help")
    assert p.returncode == 0 and "Usage: vqa bench visdial" in p.stdout, p.stdout + p.stderr
    assert "`vqa bench --task visdial --model m --help` is now spelled `vqa bench visdial --model m --help`" in p.stderr
    p = vqa("bench", "--model", "/nope", "--questions", "0")  # mc's own check answers: the command ran
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.splitlines() == [
        "note: `vqa bench --model /nope --questions 0` is now spelled `vqa bench mc --model /nope --questions 0`",
        "error: --questions and --batch-size must be at least 1, found 0 and 8"]


@pytest.mark.parametrize(("args", "needle"), [
    (["bench", "--task", "nope", "--model", "m"], "--task: expected mc or visdial, found 'nope'"),
    (["bench", "tools"], "give --tiny DIR, or both --detector and --segmenter"),
    (["bench", "tools", "--tiny", "/nope/tiny"], "vqa dev make-tiny /nope/tiny"),
    (["bench", "tools", "--detector", "d", "--segmenter", "s", "--images", "/nope.jpg"], "no such file: /nope.jpg"),
    (["bench", "kb", "--sizes", "10,x"], "--sizes: expected a comma list"),
    (["bench", "server", "--concurrency", "0"], "every --concurrency >= 1"),
    (["bench", "train", "--checkpointing", "maybe"], "--checkpointing: expected auto, on or off, found 'maybe'"),
])
def test_bad_input_is_one_line(args: list[str], needle: str) -> None:
    p = vqa(*args)
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


def test_the_old_module_paths_name_the_new_commands() -> None:
    for module, new in (("eval.router", "vqa dev eval-router"), ("agent.visdial.signs", "vqa dev make-signs")):
        p = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
        assert p.returncode == 1 and len(p.stderr.splitlines()) == 1 and new in p.stderr, p.stderr


def test_bench_kb_reports_every_index_type() -> None:
    p = vqa("bench", "kb", "--sizes", "2000", "--dim", "64", "--queries", "20", "--singles", "5", "-k", "5")
    assert p.returncode == 0, p.stderr
    (res,) = json.loads(p.stdout)["results"]
    assert (res["n"], res["dim"], res["queries"], res["auto_picks"]) == (2000, 64, 20, "flat")
    for kind in ("ivf", "hnsw"):
        assert 0 <= res[kind]["recall@5"] <= 1 and res[kind]["sweep"], res[kind]
        assert all(row["single_query_ms"] > 0 for row in res[kind]["sweep"])


@pytest.mark.slow
def test_generation_held_to_a_fixed_length_runs_exactly_that_many_steps(tiny_dir: Path, tmp_path: Path) -> None:
    """The model is made to want to stop at once (its first greedy token becomes the end-of-answer token): free
    generation then runs one forward pass, a fixed length of 6 runs six (one prefill, five decoding steps)."""
    scorer = QwenBackend(str(tiny_dir / "vlm-qwen2.5-vl"), max_pixels=SMALL, device="cpu")
    scorer.load()
    model = scorer._model
    first: list[int] = []
    hook = model.register_forward_hook(lambda _m, _a, out: first.append(int(out.logits[0, -1].argmax())))
    q = make_questions(tmp_path, 1)[0]
    with Image.open(q.image) as im:
        req = ReasonRequest(question=q, image=im.convert("RGB"), results=[])
    try:
        scorer.with_decoding(generate=True, max_new_tokens=1).decide([req])
        model.generation_config.eos_token_id = first[0]
        counts = {}
        for name, b in (("free", scorer.with_decoding(generate=True, max_new_tokens=6)),
                        ("fixed", scorer.with_decoding(generate=True, max_new_tokens=6, min_new_tokens=6))):
            first.clear()
            (d,) = b.decide([req])
            counts[name] = len(first)
            assert d.method == "generate"
    finally:
        hook.remove()
    assert counts == {"free": 1, "fixed": 6}
    assert not scorer.generate and scorer.min_new_tokens == 0  # the scorer it was made from is unchanged
    assert scorer.with_decoding(generate=True, max_new_tokens=6, min_new_tokens=6).fingerprint != \
        scorer.with_decoding(generate=True, max_new_tokens=6).fingerprint


@pytest.mark.slow
def test_the_report_has_every_arm_with_median_and_minimum(tiny_dir: Path) -> None:
    res = run_bench(str(tiny_dir / "vlm-qwen2.5-vl"), n=2, batch_size=2, device="cpu", repeats=2, new_tokens=3)
    assert (res["questions"], res["repeats"], res["new_tokens"], res["device"]) == (2, 2, 3, "cpu")
    for arm in ("logits_s_per_q", "generate_s_per_q", "overhead_ms_per_q", "overhead_fresh_ms_per_q"):
        assert 0 < res[f"{arm}_min"] <= res[arm], arm
    assert res["e5_ms_per_q"] == round(res["overhead_fresh_ms_per_q"] - res["overhead_ms_per_q"], 3)
    assert set(res["overhead_nodes_ms_per_q"]) == {"load_image", "route", "reason", "finish"}
    tokens = res["prompt_tokens_per_q"]  # question 0 is Korean, 1 English; no tools run in the logits arm
    assert set(tokens) == {"none/ko", "none/en"} and all(t["questions"] == 1 for t in tokens.values())
    assert all(t["image"] == 16 * 12 for t in tokens.values())  # 448 x 336 px in 28 px merged patches
    assert all(t["text"] > 20 for t in tokens.values())


@pytest.mark.slow
def test_bench_server_reports_every_arm_against_the_test_double(monkeypatch: pytest.MonkeyPatch) -> None:
    """``vqa bench server --ray-workers 2`` on a tiny run: every arm answers every question, each keeps
    more than one request in flight (the server holds a request until a second one arrives: shown, not timed),
    and the shares are the ratios of the reported rates within their rounding (no timing asserted)."""
    from eval.bench.server import bench

    ray_dir = tempfile.mkdtemp(prefix="vqa-ray-", dir="/tmp")  # Ray's socket paths must stay short
    for k, v in {"RAY_TMPDIR": ray_dir, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)  # before Ray starts: its workers inherit them
    try:
        out = bench(n=8, latency=0.01, concurrency=[4], max_pixels=64 * 64, repeats=1, ray_workers=2, gather=2)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    run = out["runs"][0]
    arms = ("batch", "batch_ray", "backend", "backend_loading")
    assert run["concurrency"] == 4 and set(run["max_in_flight"]) == set(arms)
    assert all(n >= 2 for n in run["max_in_flight"].values()) and run["max_in_flight"]["batch_ray"] <= 4
    for arm in arms:
        assert run[f"{arm}_q_per_s"] > 0 and len(run[f"{arm}_q_per_s_runs"]) == 1
    for arm, ref in (("batch", "backend"), ("batch", "backend_loading"), ("batch_ray", "backend")):
        # one repeat: the share is the ratio of the rates, which are rounded to 0.1 q/s (the share to 0.1 %)
        rate, ref_rate = run[f"{arm}_q_per_s"], run[f"{ref}_q_per_s"]
        low, high = 100 * (rate - 0.05) / (ref_rate + 0.05), 100 * (rate + 0.05) / (ref_rate - 0.05)
        assert low - 0.05 <= run[f"{arm}_vs_{ref}_pct"] <= high + 0.05, (arm, ref, run)


def test_no_argparse_in_the_project() -> None:
    """Every command line is Typer's: the benchmarks, the test double's server and the developer utilities."""
    root = Path(__file__).resolve().parents[1]
    found = [str(p.relative_to(root)) for pkg in ("agent", "tools", "eval", "prompts", "tests", "examples")
             for p in sorted((root / pkg).rglob("*.py")) if "import " + "argparse" in p.read_text(encoding="utf-8")]
    assert not found, found
