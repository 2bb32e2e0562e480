"""``vqa anomaly``: fit a model of normal photos, evaluate it on labelled photos, make the generated texture set.

Mounted by the CLI from ``AnomalyTool.commands``; ``vqa eval --task anomaly ...`` runs ``vqa anomaly eval ...``.
Bad input raises a ``VqaError`` (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.core.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Anomaly detection: fit on normal photos, score, evaluate.")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of normal images (expected PNG/JPEG files)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); point it at the normal photos")
    return paths


def _load(path: Path):
    from agent.core.images import load_image

    return load_image(path).image


def fit_model(normal_dir: Path, backbone: str, coreset: float, seed: int):
    from tools.anomaly.patchcore import fit

    return fit([_load(p) for p in _images_in(normal_dir)], backbone, coreset=coreset, seed=seed)


@app.command("fit")
def fit_cmd(
    normal_dir: Annotated[Path, typer.Argument(help="Folder of normal (defect-free) photos of one product.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the model (.npz).")],
    backbone: Annotated[str, typer.Option("--backbone", help="filters (offline default: fixed hand-crafted "
                                          "filters, no weights) or torchvision:NAME (weights in the torch hub "
                                          "cache).")] = "filters",
    coreset: Annotated[float, typer.Option("--coreset", min=0.001, max=1.0, help="Share of patches kept in the "
                                           "memory bank (greedy coreset).")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Build a PatchCore-style memory bank from normal photos, with a threshold chosen from them."""
    model = fit_model(normal_dir, backbone, coreset, seed)
    model.save(out)
    print(f"anomaly model: {out} ({model.n_fit} normal images, bank {len(model.bank)} patches, backbone "
          f"{model.backbone}, threshold {model.threshold:.4f}); use it with [anomaly] model = \"{out}\"")


@app.command("eval")
def eval_cmd(
    labels: Annotated[Path, typer.Argument(metavar="LABELS.csv", help="id,path,label (normal or anomaly).")],
    images: Annotated[Path, typer.Option("--images", help="Root folder the paths are relative to.")],
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where metrics.json and scores.png go.")],
    normal: Annotated[Optional[Path], typer.Option("--normal", help="Folder of normal photos to fit on.")] = None,
    model_path: Annotated[Optional[Path], typer.Option("--anomaly-model", help="A model from vqa anomaly fit "
                                                       "instead of --normal.")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="As for fit (with --normal).")] = "filters",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Image AUROC (with a 95% bootstrap interval), F1 at the threshold and per-image scores, per arm."""
    from tools.anomaly import evaluate as ev
    from tools.anomaly.patchcore import AnomalyModel

    if (normal is None) == (model_path is None):
        raise ConfigError("vqa eval --task anomaly needs exactly one of --normal NORMAL_DIR (fit now) or "
                          "--anomaly-model MODEL")
    if not images.is_dir():
        raise ConfigError(f"--images {images} is not a folder")
    rows = ev.read_labels(labels, images)
    model = AnomalyModel.load(model_path) if model_path else fit_model(normal, backbone, 0.1, seed)
    normal_images = [_load(p) for p in _images_in(normal)] if normal else []
    y, scores, baseline = [], [], []
    patch_mean = ev.patch_mean_scorer(normal_images) if normal_images else None
    for _, path, label in rows:
        im = _load(path)
        y.append(label)
        scores.append(model.score(im)[0])
        if patch_mean:
            baseline.append(patch_mean(im))
    arms = {"patchcore": {"backbone": model.backbone, **ev.arm_metrics(y, scores, model.threshold)}}
    if patch_mean:
        arms["patch_mean"] = ev.arm_metrics(y, baseline, None)
    arms["anomalib"] = ev.anomalib_arm()
    metrics = {"task": "anomaly", "n": len(rows), "n_anomaly": int(sum(y)), "n_fit": model.n_fit,
               "auroc": arms["patchcore"]["auroc"], "auroc_ci": arms["patchcore"]["auroc_ci"],
               "f1": arms["patchcore"]["f1"], "threshold": model.threshold, "arms": arms,
               "scores": [{"id": i, "label": ev.LABELS[lab], "score": round(s, 5),
                           "verdict": "anomaly" if s > model.threshold else "normal"}
                          for (i, _, lab), s in zip(rows, scores)]}
    path = ev.write_metrics(run_dir, metrics)
    ev.plot(run_dir / "scores.png", y, scores, model.threshold, f"{model.backbone}: AUROC {metrics['auroc']:.3f}")
    lo, hi = metrics["auroc_ci"]
    print(f"auroc {metrics['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={len(rows)})   f1@threshold "
          f"{metrics['f1']:.3f}" + (f"   patch_mean auroc {arms['patch_mean']['auroc']:.3f}" if patch_mean else "")
          + f"\nmetrics: {path}   plot: {run_dir / 'scores.png'}")


@app.command("textures")
def textures_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write normal_fit/, test/ and labels.csv into.")],
    n_fit: Annotated[int, typer.Option("--n-fit", min=2)] = 30,
    n_normal: Annotated[int, typer.Option("--n-normal", min=1)] = 20,
    n_defect: Annotated[int, typer.Option("--n-defect", min=1)] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Generate woven textures with subtle defects (scratches, blots, missing weave) to try the tool on."""
    from tools.anomaly.textures import make_set

    labels = make_set(out, n_fit=n_fit, n_normal=n_normal, n_defect=n_defect, seed=seed)
    print(f"wrote {out / 'normal_fit'} ({n_fit} normal), {out / 'test'} ({n_normal} normal, {n_defect} defective), "
          f"{labels}")
