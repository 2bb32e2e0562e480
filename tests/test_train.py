"""``vqa train``: LoRA fine-tuning of the tiny Qwen-VLs trained as they infer, resume after a kill, the adapter
manifest and its refusals, and the pure parts (answer labels, LoRA targets, split, log, fingerprint)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import prompts
from agent.core.adapter import MANIFEST, base_fingerprint, check_adapter
from agent.core.errors import ConfigError, ModelLoadError
from agent.core.schema import Question
from agent.train import logbook
from agent.train.examples import IGNORE, answer_token_ids, split_rows, with_answers
from agent.train.manifest import template_versions
from agent.train.options import TrainOptions, train_options

VQA = str(Path(sys.executable).parent / "vqa")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VLMS = ["vlm-qwen2.5-vl", "vlm-qwen3-vl"]
SMALL = "50000"  # pixel budget that keeps the tiny forward passes fast (the default is 1,003,520)
# One BLAS thread: on a small shared CI box two threads per process oversubscribe the cores and run ~10x slower.
ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
# Gold letters of four examples/test.csv rows, read off the photos (examples/README.md lists the text in each).
TEST_GOLD = {"TEST_000": "a", "TEST_001": "d", "TEST_002": "b", "TEST_003": "c"}


def rows16(path: Path, limit: int = 16) -> Path:
    """16 labelled rows: examples/train.csv's 12 and 4 of examples/test.csv with their answers (the first
    ``limit``)."""
    with open(EXAMPLES / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(EXAMPLES / "test.csv", encoding="utf-8") as f:
        rows += [{**r, "answer": TEST_GOLD[r["id"]]} for r in csv.DictReader(f) if r["id"] in TEST_GOLD]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "question", "a", "b", "c", "d", "answer"])
        w.writeheader()
        w.writerows(rows[:limit])
    return path


def cli(*args: object) -> int:
    """``vqa ARGS`` in this process, offline and on one thread (its output goes to pytest's capture); the exit
    code. Offline: the som and detect tools, given no model, would otherwise try the hub for their defaults."""
    import huggingface_hub.constants

    from agent.cli import main

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(sys, "argv", ["vqa", *map(str, args)])
        mp.setenv("OMP_NUM_THREADS", "1")  # for the processes a tool starts (tesseract)
        torch.set_num_threads(1)
        try:
            with pytest.raises(SystemExit) as exc:
                main()
        finally:
            torch.set_num_threads(threads)
    return exc.value.code or 0


def ok(*args: object) -> None:
    assert cli(*args) == 0, args


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def run_main(monkeypatch, capsys, *args: object) -> tuple[int, str]:
    """``vqa ARGS`` in this process (its error exit included); returns the exit code and stderr."""
    import huggingface_hub.constants

    from agent.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(sys, "argv", ["vqa", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


# ---- pure parts ------------------------------------------------------------------------------------------------

def test_answer_token_is_appended_and_is_the_only_label():
    inputs = {"input_ids": torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]]),
              "attention_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
              "mm_token_type_ids": torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0]]),
              "position_ids": torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3]]),
              "image_grid_thw": torch.tensor([[1, 2, 2]])}
    out = with_answers(inputs, [33, 44])
    assert out["input_ids"].tolist() == [[0, 0, 5, 6, 33], [7, 8, 9, 10, 44]]
    assert out["attention_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert out["mm_token_type_ids"].tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert out["position_ids"].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert out["image_grid_thw"] is inputs["image_grid_thw"]
    # logits of the last two positions: the letter (last) is predicted from the prompt's end (before it)
    assert out["logits_to_keep"] == 2 and out["labels"].tolist() == [[IGNORE, 33], [IGNORE, 44]]


def test_loss_on_the_letter_equals_the_cross_entropy_at_the_scored_position(tiny_dir):
    """The model's loss with these labels is exactly -log softmax(next-token logits at the prompt's end)[letter]."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir / "vlm-qwen3-vl").eval()
    ids = torch.tensor([[3, 4, 5, 6], [0, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    batch = with_answers({"input_ids": ids, "attention_mask": mask, "position_ids": pos}, [33, 65])
    with torch.no_grad():
        loss = model(**batch).loss
        last = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, :].float()
    expected = -torch.log_softmax(last, -1)[[0, 1], [33, 65]].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_answer_letters_are_single_tokens(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / "vlm-qwen2.5-vl")
    ids = answer_token_ids(tok, "abcde")
    assert [tok.decode([ids[k]]) for k in "abcde"] == list("abcde")


def test_lora_targets_the_language_model_unless_vision_is_asked(tiny_dir):
    import re

    from transformers import AutoModelForImageTextToText

    for role in VLMS:
        model = AutoModelForImageTextToText.from_pretrained(tiny_dir / role)
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        default = [n for n in linear if re.fullmatch(TrainOptions().lora_targets(), n)]
        assert default == [n for n in linear if ".language_model." in n]  # 7 projections x 2 layers
        assert len(default) == 14
        vision = [n for n in linear if re.fullmatch(TrainOptions(train_vision=True).lora_targets(), n)]
        assert set(vision) - set(default) == {n for n in linear if ".visual.blocks." in n}
        assert not any("lm_head" in n or "merger" in n for n in vision)
        only_q = [n for n in linear if re.fullmatch(TrainOptions(target_modules=["q_proj"]).lora_targets(), n)]
        assert only_q == [n for n in default if n.endswith("q_proj")]


@pytest.mark.parametrize(("flags", "match"), [
    ({"lr": 0}, "--lr: Input should be greater than 0"),
    ({"rank": 0}, "--rank"),
    ({"dropout": 1.5}, "--dropout"),
    ({"target_modules": ["q_proj;rm"]}, "expected module names"),
    ({"val_frac": 1.0}, "--val-frac"),
])
def test_bad_training_settings_are_one_line_config_errors(flags, match):
    with pytest.raises(ConfigError, match=match) as exc:
        train_options(**flags)
    assert "\n" not in str(exc.value)


def test_split_is_seeded_and_disjoint():
    qs = [Question(id=f"q{i}", text="t?", options={"a": "1", "b": "2"}, answer="a") for i in range(20)]
    train, val = split_rows(qs, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15 and not {q.id for q in train} & {q.id for q in val}
    assert split_rows(qs, 0.25, seed=3) == (train, val)
    assert split_rows(qs, 0.25, seed=4)[1] != val
    assert split_rows(qs, 0.0, seed=3) == (qs, [])


def test_chosen_letter_breaks_ties_like_finish():
    from agent.train.trainer import chosen

    assert chosen({"a": 0.4, "b": 0.4, "c": 0.2}, ["a", "b", "c"]) == "a"
    assert chosen({"a": 0.1, "b": 0.3, "c": 0.6}, ["a", "b", "c"]) == "c"


def test_logbook_reads_losses_and_accuracies_and_plots(tmp_path):
    history = [{"loss": 6.0, "step": 1, "epoch": 0.5}, {"loss": 4.0, "step": 2, "epoch": 1.0},
               {"val_accuracy": 0.5, "val_nll": 1.0, "step": 2, "epoch": 1.0}, {"loss": 2.0, "step": 3, "epoch": 1.5}]
    assert logbook.losses(history) == [(1, 6.0), (2, 4.0), (3, 2.0)]
    assert logbook.accuracies(history) == {"val": [(1.0, 0.5)]}
    logbook.rewrite(tmp_path / logbook.LOG, history[:2])
    logbook.append(tmp_path / logbook.LOG, history[2])
    assert logbook.read(tmp_path / logbook.LOG) == history[:3]
    png = logbook.plot(history, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fingerprint_follows_the_weights_not_the_folder(tiny_dir, tmp_path):
    a, b = tiny_dir / "vlm-qwen2.5-vl", tiny_dir / "vlm-qwen3-vl"
    copy = shutil.copytree(a, tmp_path / "moved")
    assert base_fingerprint(str(a)) == base_fingerprint(str(copy)) != base_fingerprint(str(b))
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last weight changed (the fingerprint samples blocks, the last one included)
    weights.write_bytes(bytes(data))
    assert base_fingerprint(str(copy)) != base_fingerprint(str(a))
    assert base_fingerprint(str(tmp_path / "nowhere")) is None
    assert template_versions(["answer.ko@2", "answer.en@3"]) == {"answer.ko": "2", "answer.en": "3"}


# ---- command-line errors ---------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_qlora_on_cpu_is_refused_in_one_line(tmp_path, tiny_dir, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "train", rows16(tmp_path / "t.csv"), "--images", EXAMPLES,
                         "--model", tiny_dir / "vlm-qwen2.5-vl", "--out", tmp_path / "a", "--quant", "4bit")
    assert code == 2
    assert err.strip().count("\n") == 0 and "--quant 4bit (QLoRA) trains on a CUDA GPU" in err
    assert "use --quant none" in err and not (tmp_path / "a").exists()


def test_bad_invocations_are_one_line_errors(tmp_path, tiny_dir, monkeypatch, capsys):
    data, model = rows16(tmp_path / "t.csv"), tiny_dir / "vlm-qwen2.5-vl"
    base = ["train", data, "--images", EXAMPLES, "--model", model, "--out", tmp_path / "a"]
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text((EXAMPLES / "test.csv").read_text(encoding="utf-8"), encoding="utf-8")
    guard_off = tmp_path / "off.toml"
    guard_off.write_text('[retrieve]\nleakage_guard = "off"\n', encoding="utf-8")
    cases = [
        (["train", unlabelled, "--images", EXAMPLES, "--model", model, "--out", tmp_path / "a"], "answer"),
        ([*base, "--resume"], "--resume: no checkpoint"),
        ([*base, "--val", data, "--val-frac", "0.2"], "not both"),
        ([*base, "--lr", "-1"], "--lr"),
        ([*base, "--config", guard_off, "--tools", "none"], "leakage_guard 'off'"),
        ([*base, "--quant", "8bit"], "--quant none (bf16/fp32 LoRA) or 4bit"),
    ]
    for args, needle in cases:
        code, err = run_main(monkeypatch, capsys, *args)
        assert code == 2, (args, err)
        assert needle in err and err.strip().count("\n") == 0, (args, err)


# ---- training the tiny models (slow) ----------------------------------------------------------------------------

EPOCHS = "40"  # enough for the tiny models to learn all 16 rows with a margin (30 left 14-15 of 16)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """The 16 labelled rows and one tool cache for every run here, so each tool output is computed once."""
    root = tmp_path_factory.mktemp("train")
    return {"root": root, "csv": rows16(root / "rows16.csv"), "cache": root / "tool-cache"}


@pytest.fixture(scope="module", params=VLMS)
def trained(request, tiny_dir, shared) -> dict:
    """``vqa train`` with the documented defaults (the router's tools included) plus --epochs 40; the pixel budget
    is small to keep the tiny forward passes fast, and the tool cache is shared with the evaluations."""
    role = request.param
    out = shared["root"] / f"adapter-{role}"
    ok("train", shared["csv"], "--images", EXAMPLES, "--model", tiny_dir / role, "--out", out, "--epochs", EPOCHS,
       "--max-pixels", SMALL, "--cache", shared["cache"])
    return {**shared, "role": role, "model": tiny_dir / role, "out": out}


def evaluate(t: dict, name: str, *extra: object) -> tuple[float, Path]:
    run = t["root"] / f"eval-{t['role']}-{name}"
    ok("eval", t["csv"], "--images", EXAMPLES, "--run-dir", run, "--model", t["model"], "--max-pixels", SMALL,
       "--cache", t["cache"], *extra)
    return metrics(run)["accuracy"], run


@pytest.mark.slow
def test_training_learns_the_rows_the_base_model_does_not_know(trained):
    history = logbook.read(trained["out"] / logbook.LOG)
    losses = logbook.losses(history)
    per_epoch = math.ceil(16 / (TrainOptions().batch_size * TrainOptions().grad_accum))
    assert [s for s, _ in losses] == list(range(1, int(EPOCHS) * per_epoch + 1))  # each step logged once
    assert losses[-1][1] < losses[0][1] / 2
    assert (trained["out"] / "adapter_model.safetensors").is_file() and (trained["out"] / logbook.PLOT).is_file()
    base, _ = evaluate(trained, "base")
    tuned, run = evaluate(trained, "tuned", "--adapter", trained["out"])
    assert base <= 0.5  # about chance: the rows have 2-4 options (a uniform guess scores 0.28)
    assert tuned >= 0.9
    # Trained as it infers: every row's training prompt is, byte for byte, the prompt vqa eval sent the model,
    # tool evidence included.
    from agent.runner import ResultsLog

    evidence = {r["id"]: r for r in map(json.loads, (trained["out"] / "evidence.jsonl").read_text().splitlines())}
    answers = ResultsLog(run / "arms" / "router" / "results.jsonl").load()
    assert set(evidence) == set(answers) and len(answers) == 16
    assert all(evidence[qid]["prompt"] == a.prompt for qid, a in answers.items())
    assert sum('<tool_output tool="ocr">' in r["prompt"] for r in evidence.values()) >= 3


@pytest.mark.slow
def test_the_adapter_manifest_and_what_it_refuses(trained, tiny_dir, tmp_path, monkeypatch, capsys):
    from agent.reasoners.qwen import QwenBackend
    from prompts import template_version

    out, model = trained["out"], str(trained["model"])
    m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert m["base_model"]["name"] == model and m["base_model"]["fingerprint"] == base_fingerprint(model)
    assert m["prompt"]["templates"] == {"answer.ko": template_version("answer.ko.j2"),
                                        "answer.en": template_version("answer.en.j2")}
    assert m["tools"]["mode"] == "router" and m["tools"]["ran"]["ocr"]["ok"] >= 3
    assert m["pixels"]["max_pixels"] == int(SMALL) and m["training"]["epochs"] == int(EPOCHS)
    assert (m["lora"]["rank"], m["lora"]["alpha"]) == (TrainOptions().rank, TrainOptions().alpha)
    assert check_adapter(out, model, prompts.template_versions()) == m
    assert check_adapter(out, str(shutil.copytree(model, tmp_path / "moved")), prompts.template_versions()) == m  # same weights elsewhere: fine

    other = tiny_dir / next(r for r in VLMS if r != trained["role"])
    code, err = run_main(monkeypatch, capsys, "eval", trained["csv"], "--images", EXAMPLES, "--run-dir",
                         tmp_path / "run", "--model", other, "--adapter", out, "--max-pixels", SMALL)
    assert code == 2 and "Loading weights" not in err  # refused before the base model's weights are read
    [line] = [x for x in err.splitlines() if x.strip()]
    assert f"was trained on base model {model!r}" in line and f"pass --model {model}" in line

    stale = shutil.copytree(out, tmp_path / "stale", ignore=shutil.ignore_patterns("checkpoints", "cache"))
    m["prompt"]["templates"]["answer.ko"] = "0"
    (stale / MANIFEST).write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="trained on prompt template answer.ko version 0, but this installation"):
        QwenBackend(model, adapter=str(stale)).load()


def logged_steps(out: Path) -> list[int]:
    try:
        return [s for s, _ in logbook.losses(logbook.read(out / logbook.LOG))]
    except ValueError:  # a line being written
        return []


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_adapter_of_an_uninterrupted_one(tmp_path, tiny_dir, monkeypatch, capsys):
    from safetensors.torch import load_file

    common = [rows16(tmp_path / "rows.csv", limit=8), "--images", EXAMPLES, "--model", tiny_dir / "vlm-qwen2.5-vl",
              "--tools", "none", "--max-pixels", "20000", "--epochs", "2", "--batch-size", "2", "--grad-accum", "1"]
    # 4 steps an epoch, 8 in all; checkpoints after steps 4 and 8
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ok("train", *common, "--out", whole)
    proc = subprocess.Popen([VQA, "train", *map(str, common), "--out", str(cut)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if (cut / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file() and max(
                    logged_steps(cut), default=0) >= 5:
                proc.send_signal(signal.SIGKILL)  # in the middle of epoch 2
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(logged_steps(cut))
    assert 5 <= killed_at < 8
    assert not (cut / "adapter_model.safetensors").exists()
    code, err = run_main(monkeypatch, capsys, "train", *common, "--out", cut)
    assert code == 2 and "already holds a training run; pass --resume" in err
    code, err = run_main(monkeypatch, capsys, "train", *common, "--out", cut, "--resume", "--lr", "1e-3")
    assert code == 2 and "was started with other settings (options.lr: 0.0005 -> 0.001)" in err
    ok("train", *common, "--out", cut, "--resume")
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(cut / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) == 28  # A and B of 14 projections
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a[next(k for k in a if "lora_B" in k)], torch.zeros(1))
    assert logged_steps(cut) == list(range(1, 9))  # the steps the killed run repeated are logged once


@pytest.mark.slow
def test_retrieve_never_returns_the_trained_row_nor_a_validation_row(tmp_path, tiny_dir):
    from agent.kb.build import build_kb

    data = rows16(tmp_path / "rows.csv")
    build_kb(data, tmp_path / "kb", clip="e5", images_root=EXAMPLES)  # every row, answers included
    out = tmp_path / "adapter"
    ok("train", data, "--images", EXAMPLES, "--model", tiny_dir / "vlm-qwen3-vl", "--out", out, "--tools", "retrieve",
       "--kb", tmp_path / "kb", "--val-frac", "0.25", "--max-steps", "2", "--max-pixels", SMALL)
    records = [json.loads(line) for line in (out / "evidence.jsonl").read_text(encoding="utf-8").splitlines()]
    val = {r["id"] for r in records if r["split"] == "val"}
    assert len(val) == 4 and len(records) == 16
    for r in records:
        [res] = r["results"]
        assert res["tool"] == "retrieve" and res["ok"], res
        found = {e["id"] for e in res["evidence"]["entries"]}
        assert found and r["id"] not in found
        assert r["id"] in res["evidence"]["excluded"]  # its own row was the nearest and was kept out
        if r["split"] == "train":
            assert not found & val
        assert "similar solved question" in r["prompt"]
    m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert m["metrics"]["val_rows"] == 4 and 0 <= m["metrics"]["val_accuracy"] <= 1
    assert m["tools"]["settings"]["retrieve"] == {"kb": str(tmp_path / "kb")}


@pytest.mark.slow
def test_the_benchmark_reports_step_time_and_peak_memory():
    from eval.bench.train import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run(None, rows=4, steps=3, batch_size=2, max_pixels=20_000, checkpointing=None)
    finally:
        torch.set_num_threads(threads)
    assert report["steps"] == 3 and report["step_s_median"] > 0 and report["rows_per_s"] > 0
    assert report["peak_memory_mib"] > 100 and report["memory_kind"] in ("process peak RSS", "cuda max allocated")
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["last_loss"])
    assert report["gradient_checkpointing"] == torch.cuda.is_available()
