"""``vqa bench tools``: per-image seconds for detect (with and without tiling) and som, on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.bench.tools import run_bench

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


@pytest.mark.slow
def test_bench_reports_seconds_per_image_and_the_cost_of_tiling(tiny_dir: Path) -> None:
    out = run_bench(str(tiny_dir / "detector-grounding-dino"), str(tiny_dir / "segmenter-sam"),
                    [IMAGES / "coffee.jpg", IMAGES / "coins.jpg"], accept_all_masks=True)
    assert out["images"] == 2 and out["device"] == "cpu" and out["detect_peak_gpu_mb"] is None
    for key in ("detect_s_per_image", "detect_tiled_s_per_image", "som_auto_s_per_image", "som_seeded_s_per_image"):
        assert out[key] > 0, key
    assert out["tiles_per_image"] > 1  # the tiny detector reads 160 px: both photos are tiled
    # the ratio is of the unrounded seconds: within rounding of the ratio of the printed ones
    assert out["tiling_cost_x"] == pytest.approx(out["detect_tiled_s_per_image"] / out["detect_s_per_image"], rel=0.01)
    assert out["marks_per_image_seeded"] >= 1 and set(out["load_s"]) == {"detect", "som"}
