"""``vqa eval``: the pieces against hand-computed values, then end to end on a labelled CSV built from examples/
(the evidence reasoner, and the tiny Qwen), twice: the second run computes no tool output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from agent.core.errors import DataError
from agent.core.schema import Answer, Question
from agent.runner import ResultsLog
from agent.trace.read import questions, read_trace
from eval.ablation import COLUMNS, ArmRun, arm_specs, table_rows, write_table
from eval.evaluate import calibration, categories, circular_metrics, labelled, summary
from eval.metrics import mcnemar_exact
from eval.report import Metrics

VQA = str(Path(sys.executable).parent / "vqa")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def q(i: int, gold: str, category: str | None = None) -> Question:
    return Question(id=f"q{i}", text="what?", options={"a": "x", "b": "y", "c": "z"}, answer=gold, category=category)


def answer(qid: str, letter: str, probs: dict[str, float] | None = None, tools: list[str] | None = None,
           method: str = "logits") -> Answer:
    return Answer(id=qid, answer=letter, probs=probs or {letter: 1.0}, method=method, tools=[], evidence=[],
                  timings={}, question="what?", options={"a": "x", "b": "y", "c": "z"},
                  route={"tools": tools or []})


def test_the_standard_arms() -> None:
    assert [name for name, _ in arm_specs(["detect", "ocr"])] == [
        "none", "only:detect", "only:ocr", "without:detect", "without:ocr", "router", "all"]
    specs = dict(arm_specs(["detect", "ocr"]))
    assert specs["none"] == [] and specs["router"] is None and specs["all"] == ["detect", "ocr"]
    assert specs["without:detect"] == ["ocr"] and specs["only:detect"] == ["detect"]


def test_the_ablation_table_compares_every_arm_with_the_router_on_the_same_questions() -> None:
    qs = [q(i, "a") for i in range(6)]
    router = ArmRun("router", None, {f"q{i}": answer(f"q{i}", "a" if i < 3 else "b") for i in range(6)}, 1.2,
                    tool_runs={"ocr": {"ran": 3, "cached": 3, "failed": 0}})
    better = ArmRun("only:ocr", ["ocr"], {f"q{i}": answer(f"q{i}", "a" if i < 5 else "c") for i in range(6)}, 3.0,
                    tool_runs={"ocr": {"ran": 6, "cached": 0, "failed": 0}})
    rows = table_rows([better, router], qs, ["ocr"])
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    r = rows[0]
    # 5/6 vs 3/6 right; discordant: q3, q4 right only with ocr (b=2), none right only with the router (c=0)
    assert (r["arm"], r["n"], r["accuracy"], r["delta_vs_router"]) == ("only:ocr", 6, 5 / 6, 5 / 6 - 3 / 6)
    assert r["mcnemar_p"] == mcnemar_exact(2, 0) == 0.5 and r["s_per_q"] == 0.5 and r["ran:ocr"] == 1.0
    assert rows[1]["delta_vs_router"] == 0.0 and rows[1]["mcnemar_p"] == 1.0 and rows[1]["ran:ocr"] == 0.5


def test_circular_metrics_from_rotation_records() -> None:
    qs = [q(0, "a"), q(1, "b")]

    def rec(shift: int, chosen_position: str) -> dict:
        order = ["abc"[(i + shift) % 3] for i in range(3)]
        return {"shift": shift, "order": order, "chosen_position": chosen_position,
                "chosen": order["abc".index(chosen_position)]}

    # q0 always picks the option "a" wherever it is shown (positions a, c, b): right under every rotation.
    # q1 always picks the first position shown: right only when b is shown first (shift 1).
    records = {"q0": [rec(0, "a"), rec(1, "c"), rec(2, "b")], "q1": [rec(0, "a"), rec(1, "a"), rec(2, "a")]}
    m = circular_metrics(qs, records)
    assert m.circular_accuracy == 0.5 and m.rotation_accuracy == 4 / 6 and m.evaluations == 6
    bias = m.position_bias
    # chosen positions: a, c, b, a, a, a; gold positions: q0 -> a, c, b; q1 -> b, a, c
    assert bias["a"].model_dump() == {"chosen": 4 / 6, "correct": 2 / 6, "gap": 2 / 6}
    assert bias["b"].chosen == 1 / 6 and bias["c"].correct == 2 / 6
    assert circular_metrics([q(2, "a")], {}).circular_accuracy == 0.0  # no records: wrong


def test_categories_come_from_the_column_else_from_the_router() -> None:
    answers = {"q0": answer("q0", "a", tools=["ocr"]), "q1": answer("q1", "a", tools=["detect", "som"]),
               "q2": answer("q2", "a")}
    assert categories([q(0, "a"), q(1, "a"), q(2, "a")], answers) == (
        "router", {"q0": "ocr", "q1": "detect+som", "q2": "none"})
    assert categories([q(0, "a", "sign"), q(1, "a")], answers) == ("column", {"q0": "sign", "q1": "(none)"})


def test_calibration_leaves_fallbacks_out_and_reports_the_fitted_temperature() -> None:
    qs = [q(i, "a" if i < 3 else "b") for i in range(5)]
    answers = {f"q{i}": answer(f"q{i}", "a", {"a": 0.9, "b": 0.1}) for i in range(4)}
    answers["q4"] = answer("q4", "a", {"a": 1.0, "b": 0.0}, method="fallback")
    c = calibration(qs, answers, temperature=2.0)
    # 4 scored rows at 0.9, 3 right: ECE = |0.75 - 0.9| = 0.15; T = ln 9 / ln 3 = 2 makes it 0.75 (ECE 0)
    assert c.n == 4 and c.ece == pytest.approx(0.15) and c.temperature_fit == pytest.approx(2.0, abs=1e-4)
    assert c.ece_at_fit == pytest.approx(0.0, abs=1e-4) and c.ece_at_temperature == pytest.approx(0.0)


def test_the_metrics_file_keeps_its_keys_and_reads_back(tmp_path: Path) -> None:
    qs = [q(i, "a") for i in range(3)]
    answers = {f"q{i}": answer(f"q{i}", "a", {"a": 0.6, "b": 0.4}) for i in range(3)}
    m = Metrics(csv=None, run="r", created="t", reasoner="evidence", **summary([True, True, False]).model_dump(),
                row_errors=0, unlabelled=1, failed=0, s_per_q=0.1, debias=False, category_source="router",
                per_category={"none": summary([True])}, tool_runs={"ocr": {"ran": 1, "cached": 0, "failed": 0}},
                calibration=calibration(qs, answers, None), circular=None, ablation=None)
    m.write(tmp_path / "metrics.json")
    raw = json.loads((tmp_path / "metrics.json").read_text())
    assert list(raw) == ["version", "csv", "run", "created", "reasoner", "n", "correct", "accuracy", "ci_low",
                         "ci_high", "row_errors", "unlabelled", "failed", "s_per_q", "debias", "category_source",
                         "per_category", "tool_runs", "calibration", "circular", "ablation"]  # no cache: no key
    assert list(raw["calibration"]) == ["n", "bins", "ece", "nll", "temperature_fit", "ece_at_fit", "nll_at_fit",
                                        "temperature"]  # no --temperature: no ece/nll at it
    assert raw["n"] == 3 and raw["correct"] == 2 and raw["per_category"]["none"]["ci_high"] == 1.0
    assert Metrics.read(tmp_path / "metrics.json") == m


def test_eval_needs_labelled_rows() -> None:
    with pytest.raises(DataError, match="answer"):
        labelled([Question(id="x", text="q?", options={"a": "1", "b": "2"})])


# ---------------------------------------------------------------- end to end


def labelled_csv(path: Path, ids: list[str], categories: dict[str, str] | None = None) -> Path:
    """A competition-layout CSV (with ``answer`` and, when given, ``category``) from examples/train.csv rows."""
    rows = {r["id"]: r for r in csv.DictReader(open(EXAMPLES / "train.csv", encoding="utf-8"))}
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "question", "a", "b", "c", "d", "answer"] + (["category"] if categories else []))
        for i in ids:
            r = rows[i]
            w.writerow([r[k] for k in ("id", "path", "question", "a", "b", "c", "d", "answer")]
                       + ([categories[i]] if categories else []))
    return path


def vqa_eval(*args: object) -> dict:
    p = subprocess.run([VQA, "eval", *map(str, args)], capture_output=True, text=True, timeout=900, env=ENV)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    return {"stdout": p.stdout}


def tool_events(run: Path, run_id: str) -> list:
    return [e for e in read_trace(run / "trace.jsonl") if e.run == run_id and e.node == "run_tool"]


@pytest.mark.slow
def test_eval_with_ablation_twice_computes_every_tool_output_once(tmp_path: Path) -> None:
    ids = ["TRAIN_000", "TRAIN_002", "TRAIN_007", "TRAIN_008", "TRAIN_010"]  # routed: ocr, none, ocr, none, none (002 asks a colour)
    data = labelled_csv(tmp_path / "train.csv", ids, {"TRAIN_000": "sign", "TRAIN_002": "sign", "TRAIN_007": "tag",
                                                      "TRAIN_008": "general", "TRAIN_010": "general"})
    config = tmp_path / "vqa.toml"
    config.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n')
    run = tmp_path / "run"
    args = [data, "--images", EXAMPLES, "--run-dir", run, "--reasoner", "evidence", "--config", config, "--ablate",
            "--ablate-tools", "ocr", "--circular"]
    first = vqa_eval(*args)
    m1 = json.loads((run / "metrics.json").read_text())
    vqa_eval(*args)
    m2 = json.loads((run / "metrics.json").read_text())

    # every question's OCR ran once, on the first run (router arm: 2 questions; only:ocr: the other 3)
    assert m1["cache"] == {"root": str(run / "cache"), "computed": 5, "served": 2, "failed": 0}
    assert m2["cache"]["computed"] == 0 and m2["cache"]["served"] == 7
    t1, t2 = tool_events(run, m1["run"]), tool_events(run, m2["run"])
    assert len(t1) == len(t2) == 7 and all(e.cached for e in t2) and sum(not e.cached for e in t1) == 5

    router = ResultsLog(run / "arms" / "router" / "results.jsonl").load()
    gold = {r["id"]: r["answer"] for r in csv.DictReader(open(data, encoding="utf-8"))}
    correct = [router[i].answer == gold[i] for i in ids]
    assert m2["n"] == 5 and m2["accuracy"] == sum(correct) / 5 and m2["category_source"] == "column"
    assert m2["per_category"]["general"]["n"] == 2 and m2["per_category"]["sign"]["n"] == 2
    assert m2["tool_runs"] == {"ocr": {"called": 2, "ran": 2, "cached": 2, "failed": 0}}

    table = list(csv.DictReader(open(run / "ablation.csv", encoding="utf-8")))
    assert list(table[0])[: len(COLUMNS)] == COLUMNS
    by_arm = {r["arm"]: r for r in table}
    assert list(by_arm) == ["none", "only:ocr", "without:ocr", "router", "all"]
    # no tools: the evidence reasoner has nothing, probabilities are uniform and "a" wins the tie; gold is a in 2/5
    assert float(by_arm["none"]["accuracy"]) == 0.4 and by_arm["without:ocr"] == {**by_arm["none"],
                                                                                   "arm": "without:ocr"}
    assert float(by_arm["all"]["ran:ocr"]) == 1.0 and float(by_arm["router"]["ran:ocr"]) == 0.4
    assert float(by_arm["router"]["mcnemar_p"]) == 1.0 and float(by_arm["router"]["delta_vs_router"]) == 0.0
    with Image.open(run / "ablation.png") as im:
        assert im.format == "PNG" and im.size[0] > 800
    assert "tool ablation" in first["stdout"] and "only:ocr" in first["stdout"]

    circ = m2["circular"]
    assert circ["evaluations"] == sum(len(r.options) for r in router.values())
    assert circ["circular_accuracy"] <= m2["accuracy"]
    no_evidence = [i for i in ids if "no_evidence" in router[i].flags]
    assert no_evidence  # TRAIN_008 and TRAIN_010 at least: uniform, so the first option shown wins every rotation
    [rot] = [e for e in read_trace(run / "trace.jsonl") if e.run == m2["run"] and e.kind == "rotations"
             and e.qid == no_evidence[0]]
    assert {r["chosen_position"] for r in rot.outputs["rotations"]} == {"a"}
    assert sum(v["chosen"] for v in circ["position_bias"].values()) == pytest.approx(1.0)

    p = subprocess.run([VQA, "trace", "show", run, "--id", "TRAIN_000", "--arm", "only:ocr"], capture_output=True,
                       text=True, env=ENV)
    assert p.returncode == 0 and "cached" in p.stdout and "only:ocr" in p.stdout, p.stdout + p.stderr


@pytest.mark.slow
def test_eval_with_the_tiny_qwen_and_batch_debias(tiny_dir: Path, tmp_path: Path) -> None:
    ids = ["TRAIN_007", "TRAIN_011", "TRAIN_010"]  # routed: ocr, detect, none
    data = labelled_csv(tmp_path / "train.csv", ids)
    config = tmp_path / "vqa.toml"
    config.write_text('[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n')
    run = tmp_path / "run"
    args = [data, "--images", EXAMPLES, "--run-dir", run, "--model", tiny_dir / "vlm-qwen2.5-vl", "--detector",
            tiny_dir / "detector-grounding-dino", "--config", config, "--ablate", "--ablate-tools", "ocr,detect",
            "--circular", "--temperature", "2"]
    vqa_eval(*args)
    m1 = json.loads((run / "metrics.json").read_text())
    vqa_eval(*args)
    m2 = json.loads((run / "metrics.json").read_text())
    assert m1["cache"]["computed"] > 0 and m1["cache"]["failed"] == 0
    assert m2["cache"] == {**m1["cache"], "computed": 0, "served": m1["cache"]["computed"] + m1["cache"]["served"]}
    assert all(e.cached for e in tool_events(run, m2["run"]))
    assert m2["reasoner"] == "qwen" and m2["category_source"] == "router"
    assert set(m2["per_category"]) == {"ocr", "detect", "none"}
    cal = m2["calibration"]
    assert cal["n"] == 3 and 0 <= cal["ece"] <= 1 and cal["temperature"] == 2 and "ece_at_temperature" in cal
    rows = {r["arm"]: r for r in csv.DictReader(open(run / "ablation.csv", encoding="utf-8"))}
    assert set(rows) == {"none", "only:ocr", "only:detect", "without:ocr", "without:detect", "router", "all"}
    assert m2["ablation"]["same_as"] == {"without:ocr": "only:detect", "without:detect": "only:ocr"}
    assert rows["without:ocr"]["accuracy"] == rows["only:detect"]["accuracy"]
    assert m2["circular"]["evaluations"] == 4 + 4 + 2

    # vqa batch --debias: the answer's probabilities are the mean of the rotations the trace records
    out, brun = tmp_path / "sub.csv", tmp_path / "batch"
    p = subprocess.run([VQA, "batch", data, "--images", EXAMPLES, "--out", out, "--run-dir", brun, "--tools", "none",
                        "--model", tiny_dir / "vlm-qwen2.5-vl", "--debias", "--temperature", "1.5"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr
    answers = ResultsLog(brun / "results.jsonl").load()
    for view in questions(read_trace(brun / "trace.jsonl")):
        a = answers[view.qid]
        assert "debiased" in a.flags and "temperature=1.5" in a.flags
        recs = view.first("rotations").outputs["rotations"]
        assert len(recs) == len(a.options)
        mean = {k: sum(r["probs"][k] for r in recs) / len(recs) for k in a.options}
        from agent.core.probs import apply_temperature

        assert a.probs == pytest.approx(apply_temperature(mean, 1.5), abs=1e-6)


def test_ablation_csv_cells_cannot_run_as_formulas(tmp_path: Path) -> None:
    row = {"arm": "=HYPERLINK(\"http://x\")", "n": 3, "accuracy": 0.5, "ci_low": 0.1, "ci_high": 0.9,
           "delta_vs_router": -0.05, "mcnemar_p": 1.0, "s_per_q": 0.2, "ran:ocr": 1.0}
    write_table([row], tmp_path / "ablation.csv")
    [got] = list(csv.DictReader(open(tmp_path / "ablation.csv", encoding="utf-8")))
    assert got["arm"] == "'=HYPERLINK(\"http://x\")" and got["delta_vs_router"] == "-0.0500" and got["n"] == "3"
