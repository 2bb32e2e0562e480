"""Benchmark ``detect`` and ``som`` per image: ``vqa bench tools --tiny DIR`` prints JSON.

Times each tool's ``run`` on the example photos (or ``--images``), after one warm-up image that is not counted:

- ``detect_s_per_image``: the whole image alone (``tiling="off"``);
- ``detect_tiled_s_per_image``: the whole image plus overlapping tiles at the detector's input size
  (``tiling="on"``), with ``tiles_per_image`` and ``tiling_cost_x`` (tiled over untiled time);
- ``som_auto_s_per_image``: SAM's automatic regions (point grid, filters, NMS, layout, drawing);
- ``som_seeded_s_per_image``: regions prompted by ``detect``'s boxes (the detector's run is already cached, so
  this is SAM, layout and drawing only).

Also reported: model load seconds, the CPU load average when the run started (timings on a shared machine mean
little when it exceeds the core count), and on CUDA each tool's peak GPU memory.

``--tiny DIR`` uses ``DIR/detector-grounding-dino`` and ``DIR/segmenter-sam`` from ``vqa dev make-tiny`` and
accepts every SAM mask (random weights score ~0, so the default filters would leave nothing to lay out); with
real checkpoints pass ``--detector`` and ``--segmenter`` and the tools' defaults apply.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from PIL import Image

from agent.core.schema import Question
from tools.detect import DetectTool, SingleFlight
from tools.som import SomTool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
QUESTION = Question(id="bench", text="사진 속 사람은 몇 명인가요?", options={"a": "1명", "b": "2명", "c": "3명"})


def per_image(run, images: list[Image.Image], repeat: int) -> tuple[float, list]:
    """Median over ``repeat`` passes of the mean seconds per image; the last pass's results."""
    run(images[0])  # warm-up (lazy kernels, allocator), not counted
    passes, results = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        results = [run(img) for img in images]
        passes.append((time.perf_counter() - t0) / len(images))
    return statistics.median(passes), results


def loaded(tool, key: str, out: dict) -> None:
    t0 = time.perf_counter()
    tool.setup()
    out.setdefault("load_s", {})[key] = round(time.perf_counter() - t0, 3)


def peak_gpu_mb(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def fresh(tool: DetectTool):
    """``run`` with the detector's result cache emptied first, so every call runs the detector."""
    def run(img: Image.Image):
        tool._cache = SingleFlight()
        r = tool.run(img, QUESTION)
        if not r.ok:
            raise RuntimeError(f"detect failed: {r.error}")
        return r
    return run


def run_bench(detector: str, segmenter: str, images: list[Path], repeat: int = 1, device: str = "auto",
              accept_all_masks: bool = False) -> dict:
    pics = [Image.open(p).convert("RGB") for p in images]
    out: dict = {"detector": detector, "segmenter": segmenter, "images": len(pics),
                 "mean_size": [round(statistics.mean(p.size[i] for p in pics)) for i in (0, 1)],
                 "cpus": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    peak_gpu_mb(reset=True)
    plain = DetectTool(model=detector, tiling="off", device=device)
    tiled = DetectTool(model=detector, tiling="on", device=device)
    loaded(plain, "detect", out)
    tiled.setup()
    out["device"] = plain._device
    out["detect_s_per_image"], found = per_image(fresh(plain), pics, repeat)
    out["boxes_per_image"] = round(statistics.mean(len(r.evidence.boxes) for r in found), 1)
    out["detect_tiled_s_per_image"], found = per_image(fresh(tiled), pics, repeat)
    out["tiles_per_image"] = round(statistics.mean(r.evidence.tiles for r in found), 2)
    out["tiling_cost_x"] = round(out["detect_tiled_s_per_image"] / out["detect_s_per_image"], 2)
    out["detect_peak_gpu_mb"] = peak_gpu_mb()
    peak_gpu_mb(reset=True)

    masks = {"pred_iou_thresh": 0.0, "stability_thresh": 0.0} if accept_all_masks else {}
    som = SomTool(model=segmenter, device=device, **masks)
    loaded(som, "som", out)

    def run_som(peers):
        def run(img: Image.Image):
            r = som.run(img, QUESTION, None, peers=peers)
            if not r.ok:
                raise RuntimeError(f"som failed: {r.error}")
            return r
        return run

    out["som_auto_s_per_image"], marked = per_image(run_som(None), pics, repeat)
    out["marks_per_image_auto"] = round(statistics.mean(len(r.evidence.marks) for r in marked), 1)
    for img in pics:
        plain.detections(img, QUESTION)  # cached: the seeded timing is SAM + layout + drawing
    out["som_seeded_s_per_image"], marked = per_image(run_som({"detect": plain}), pics, repeat)
    out["marks_per_image_seeded"] = round(statistics.mean(len(r.evidence.marks) for r in marked), 1)
    out["som_peak_gpu_mb"] = peak_gpu_mb()
    for key in ("detect_s_per_image", "detect_tiled_s_per_image", "som_auto_s_per_image", "som_seeded_s_per_image"):
        out[key] = round(out[key], 4)
    return out
