"""The anomaly tool: the offline default measured for real on generated woven textures, the metrics against
hand-computed values, the tool's evidence and heat map, and `vqa ask` answering from its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from agent.core.errors import ConfigError
from agent.core.schema import Question
from tools import load_tool
from tools.anomaly import evaluate as ev
from tools.anomaly.patchcore import AnomalyModel, fit, greedy_coreset
from tools.anomaly.textures import add_defect, make_set, render, weave
from tools.anomaly.tool import AnomalyEvidence, option_says_anomaly

VQA = str(Path(sys.executable).parent / "vqa")


def vqa(*args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> tuple[Path, AnomalyModel]:
    """A model fitted on 8 generated normal textures (128 px), saved and loaded back."""
    root = tmp_path_factory.mktemp("tex")
    rng = np.random.default_rng(1)
    normal = [render(weave(128, rng)[0], rng) for _ in range(8)]
    model = fit(normal, size=128, min_bank=200, folds=4)
    path = root / "model.npz"
    model.save(path)
    return path, model


def defect_image(kind: str, seed: int = 5, size: int = 128) -> Image.Image:
    rng = np.random.default_rng(seed)
    img, info = weave(size, rng)
    return render(add_defect(img, kind, info, rng), rng)


def test_auroc_and_f1_match_hand_computed_values() -> None:
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.4]  # a tie (0.4, normal vs anomaly) counts half
    assert ev.auroc(y, s) == pytest.approx(roc_auc_score(y, s)) == pytest.approx((2 + 3 + 2.5) / 9)
    got = ev.f1_at(y, s, 0.3)  # predicted anomalies: 0.4(n), 0.35, 0.8, 0.4 -> tp 3, fp 1, fn 0
    assert (got["precision"], got["recall"]) == (0.75, 1.0) and got["f1"] == pytest.approx(2 * 0.75 / 1.75)
    lo, hi = ev.auroc_ci(y, s)
    assert 0 <= lo <= ev.auroc(y, s) <= hi <= 1


def test_greedy_coreset_picks_far_apart_points() -> None:
    x = np.array([[0, 0], [0.1, 0], [10, 0], [10, 0.1], [0, 10]], dtype=np.float32)
    picked = set(greedy_coreset(x, 3, seed=0).tolist())
    assert len(picked) == 3 and 4 in picked and len(picked & {2, 3}) == 1 and len(picked & {0, 1}) == 1


@pytest.mark.parametrize(("option", "question", "expected"), [
    ("예", "이 부품에 결함이 있나요?", True), ("아니오", "이 부품에 결함이 있나요?", False),
    ("yes", "Is this part defective?", True), ("no", "Is this part defective?", False),
    ("예", "이 제품은 정상인가요?", False), ("아니요", "이 제품은 정상인가요?", True),
    ("정상", "이 제품의 상태는?", False), ("불량", "이 제품의 상태는?", True), ("파란색", "무슨 색인가요?", None),
])
def test_options_map_to_the_verdict(option: str, question: str, expected: bool | None) -> None:
    assert option_says_anomaly(option, question) is expected


def test_the_tool_gives_score_threshold_verdict_region_and_heat_map(small_model, tmp_path: Path) -> None:
    path, model = small_model
    again = AnomalyModel.load(path)
    probe = defect_image("blot")
    assert again.score(probe)[0] == pytest.approx(model.score(probe)[0], rel=1e-5)  # saved and read back whole
    tool = load_tool("anomaly", model=str(path))
    q = Question(id="q", text="이 부품에 결함이 있나요?", options={"a": "예", "b": "아니오"})
    result = tool.run(probe, q, workdir=tmp_path)
    assert result.ok, result.error
    e = result.evidence
    assert isinstance(e, AnomalyEvidence) and e.threshold == pytest.approx(model.threshold, abs=1e-3)
    assert e.verdict == ("anomaly" if e.score > e.threshold else "normal")
    x1, y1, x2, y2 = e.region
    assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
    heat = Path(result.artifacts["heatmap"])
    assert heat.parent == tmp_path and Image.open(heat).size == probe.size
    support = e.support(q)
    assert support["a"] == pytest.approx(1 - support["b"]) and (support["a"] > 0.5) == (e.verdict == "anomaly")


def test_without_a_model_the_tool_is_unavailable_and_says_how_to_fit_one() -> None:
    result = load_tool("anomaly").run(Image.new("RGB", (32, 32)), Question(id="q", text="결함?", options={"a": "예",
                                                                                                          "b": "아니오"}))
    assert not result.ok and "vqa anomaly fit" in result.error
    with pytest.raises(ConfigError, match="bad settings for tool 'anomaly': modle"):
        load_tool("anomaly", modle="x.npz")


def test_bad_labels_are_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,path,label\na,a.png,broken\n")
    with pytest.raises(ConfigError, match="label must be normal or anomaly, found 'broken'"):
        ev.read_labels(labels, tmp_path)
    p = vqa("eval", "--task", "anomaly", labels, "--images", tmp_path, "--run-dir", tmp_path / "run",
            "--normal", tmp_path / "missing")
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout and "label must be" in p.stderr, p.stderr


@pytest.mark.slow
def test_offline_default_reaches_auroc_090_on_generated_textures(tmp_path: Path) -> None:
    """The issue's set: 30 normal to fit on, 20 normal + 20 subtle defects to score (the trivial patch-mean score
    gets about 0.64 on it); `vqa eval --task anomaly` with the offline default backbone."""
    labels = make_set(tmp_path / "tex")
    run = tmp_path / "run"
    p = vqa("eval", "--task", "anomaly", labels, "--normal", tmp_path / "tex" / "normal_fit", "--images",
            tmp_path / "tex", "--run-dir", run)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["auroc"] >= 0.9 and m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
    assert m["arms"]["patch_mean"]["auroc"] < 0.75 and m["arms"]["anomalib"]["ran"] in (True, False)
    assert len(m["scores"]) == 40 and {s["label"] for s in m["scores"]} == {"normal", "anomaly"}
    assert 0 <= m["f1"] <= 1 and (run / "scores.png").is_file()


@pytest.mark.slow
def test_vqa_ask_routes_to_anomaly_and_answers_from_its_verdict(small_model, tmp_path: Path) -> None:
    path, model = small_model
    photo = tmp_path / "photo.png"
    defect_image("blot").save(photo)
    score = model.score(Image.open(photo).convert("RGB"))[0]
    cfg = tmp_path / "vqa.toml"
    cfg.write_text(f'[anomaly]\nmodel = "{path}"\n')
    p = vqa("ask", photo, "이 부품에 결함이 있나요?", "-c", "예", "-c", "아니오", "--reasoner", "evidence", "--config", cfg,
            "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(p.stdout)
    assert "anomaly" in rec["route"]["tools"]
    anomaly = next(r for r in rec["evidence"] if r["tool"] == "anomaly")
    assert anomaly["ok"] and anomaly["evidence"]["score"] == pytest.approx(score, abs=1e-3)
    assert rec["answer"] == ("a" if score > model.threshold else "b") and rec["method"] == "evidence"
