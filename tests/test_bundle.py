"""``vqa bundle``, ``vqa doctor`` and the config a bundle ships: the host's torch stack is left out, the manifest
matches the files and names the ones that do not, a bundle's ``vqa.toml`` points at its own folders wherever it is
mounted, a re-run fetches nothing it holds, and ``vqa doctor`` reports and (``--strict``) fails on what is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bundle import assets, build, manifest as mf
from agent.bundle.wheels import Target, Wheel, expand_platforms, host_provided, select

VQA = str(Path(sys.executable).parent / "vqa")
ROOT = Path(__file__).resolve().parents[1]


def vqa(*args: object, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("name, left_out", [
    ("torch", True), ("torchvision", True), ("triton", True), ("nvidia-cublas", True), ("nvidia_cudnn_cu13", True),
    ("cuda-toolkit", True), ("cuda_bindings", True), ("transformers", False), ("torchmetrics", False),
    ("easyocr", False), ("numpy", False),
])
def test_the_host_torch_stack_is_left_out(name: str, left_out: bool) -> None:
    assert host_provided(name) is left_out


def test_select_keeps_the_rest_and_with_torch_keeps_all() -> None:
    found = [Wheel("torch", "2.14.1", "file:///w/torch-2.14.1-cp311-cp311-x.whl", ""),
             Wheel("nvidia-nccl-cu13", "2.30", "file:///w/nvidia_nccl_cu13-2.30-py3-none-x.whl", ""),
             Wheel("numpy", "2.4", "file:///w/numpy-2.4-cp311-cp311-x.whl", "")]
    kept, out = select(found, with_torch=False)
    assert [w.name for w in kept] == ["numpy"] and [w.name for w in out] == ["torch", "nvidia-nccl-cu13"]
    assert select(found, with_torch=True) == (found, [])


def test_a_foreign_target_asks_pip_for_binary_wheels_of_its_platform() -> None:
    args = Target(python="3.10", platforms=("manylinux_2_28_x86_64",)).pip_args()
    assert args[:1] == ["--only-binary=:all:"] and ["--python-version", "3.10"] == args[3:5]
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms[:2] == ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64"]  # older glibc wheels fit too
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(platforms)
    assert "manylinux_2_29_x86_64" not in platforms and len(platforms) == len(set(platforms))
    assert expand_platforms(["manylinux2014_aarch64"])[0] == "manylinux_2_17_aarch64"
    assert expand_platforms(["win_amd64"]) == ["win_amd64"]
    assert "--platform" not in Target(python="3.12").pip_args()  # pip's own tags for this machine, manylinux too
    assert Target().pip_args() == []  # this machine: pip's own defaults (and sdists may be built)


def test_manifest_names_missing_resized_and_damaged_files(tmp_path: Path) -> None:
    files = {"wheels/a.whl": b"a" * 10, "models/m/config.json": b"{}", "fonts/f.ttf": b"font"}
    m = mf.Manifest()
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
        m.add(mf.entry_for(tmp_path, tmp_path / rel, source="test", kind="file"))
    mf.write(tmp_path, m)
    assert mf.verify(tmp_path, mf.read(tmp_path)) == []
    if shutil.which("sha256sum"):  # what install.sh runs before installing anything
        assert subprocess.run(["sha256sum", "--quiet", "-c", mf.SUMS], cwd=tmp_path).returncode == 0
    (tmp_path / "wheels/a.whl").unlink()
    (tmp_path / "fonts/f.ttf").write_bytes(b"FONT")  # same size, other bytes
    (tmp_path / "models/m/config.json").write_bytes(b"{ }")
    problems = mf.verify(tmp_path, mf.read(tmp_path))
    assert len(problems) == 3
    assert problems[0].startswith("fonts/f.ttf: sha256 differs")
    assert problems[1] == "models/m/config.json: 3 bytes, expected 2"
    assert problems[2].startswith("wheels/a.whl: missing (expected 10 bytes")
    assert mf.verify(tmp_path, mf.read(tmp_path), hashes=False) == problems[1:]  # sizes only: the cheap check


def test_config_paths_starting_with_dot_are_relative_to_the_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import load_settings

    (tmp_path / "b").mkdir()
    config = tmp_path / "b" / "vqa.toml"
    config.write_text('detector = "./models/dino"\nsegmenter = "facebook/sam-vit-base"\nmodel = "../qwen"\n'
                      '[ocr]\neasyocr_model_dir = "./easyocr"\n', encoding="utf-8")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VQA_CONFIG", str(config))  # no --config: the variable names the file
    s = load_settings(None, {})
    assert s.detector == str(tmp_path / "b" / "models" / "dino") and s.model == str(tmp_path / "qwen")
    assert s.segmenter == "facebook/sam-vit-base"  # a hub id is not a path
    assert s.tool_tables["ocr"] == {"easyocr_model_dir": str(tmp_path / "b" / "easyocr")}
    monkeypatch.setenv("VQA_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(Exception, match=r"gone.toml \(from VQA_CONFIG\) does not exist"):
        load_settings(None, {})


def test_a_bundled_model_is_found_through_its_vqa_toml_and_a_rerun_fetches_nothing(tiny_dir: Path, tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    from agent.config import load_settings
    from agent.doctor import check_config

    model = tiny_dir / "vlm-qwen2.5-vl"
    asset = assets.plan_model("reasoner", str(model), ("", "model"), hub_ok=False)
    assert asset.size == sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    root = tmp_path / "bundle"
    plan = build.Plan(root, Target(), extras=["ray"], assets=[asset])
    m = build.make(plan, version="test")
    assert mf.verify(root, m) == [] and {e.kind for e in m.files} == {"model", "file"}
    assert 'pip install --no-index --find-links "$HERE/wheels" "vqa-orchestrator[ray]"' in (
        root / build.INSTALL).read_text(encoding="utf-8")
    moved = tmp_path / "mounted" / "elsewhere"  # a Kaggle dataset is mounted at another path
    shutil.copytree(root, moved)
    monkeypatch.setenv("VQA_CONFIG", str(moved / build.CONFIG))
    settings = load_settings(None, {})
    assert Path(settings.model) == moved / "models" / model.name and (Path(settings.model) / "config.json").is_file()
    assert [c.status for c in check_config(None)] == ["ok", "ok"]
    again = build._mark_held(build.Plan(moved, Target(), assets=[asset]), build.held_files(moved))
    assert again.held == {asset.dest} and again.to_fetch() == 0
    next(moved.joinpath("models", model.name).glob("*.safetensors")).unlink()  # a damaged copy
    again = build._mark_held(build.Plan(moved, Target(), assets=[asset]), build.held_files(moved))
    checks = check_config(None)
    assert checks[1].status == "missing" and checks[1].blocking and "safetensors: missing" in checks[1].detail
    assert again.held == set() and again.to_fetch() == asset.size  # the re-run fetches the model again


def test_doctor_reports_json_and_strict_fails_on_what_the_run_needs(tmp_path: Path) -> None:
    p = vqa("doctor", "--json", "--no-hub", "--reasoner", "evidence")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert {"python", "torch", "gpu", "bitsandbytes", "reasoner", "detect", "som", "tesseract", "font", "chromium",
            "config"} <= set(by_name)
    assert by_name["torch"]["status"] == "ok" and by_name["reasoner"]["status"] == "ok"
    missing = tmp_path / "no-such-model"
    p = vqa("doctor", "--json", "--no-hub", "--model", missing)
    assert p.returncode == 0 and not json.loads(p.stdout)["ok"], p.stdout  # a report, not a failure
    reasoner = {c["name"]: c for c in json.loads(p.stdout)["checks"]}["reasoner"]
    assert reasoner["status"] == "missing" and "--model" in reasoner["fix"]
    p = vqa("doctor", "--no-hub", "--strict", "--model", missing)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "something needed is missing" in p.stdout


def test_bundle_bad_input_is_one_line(tmp_path: Path) -> None:
    p = vqa("bundle", tmp_path / "b", "--constraint", tmp_path / "nope.txt", "--reasoner", "evidence")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--constraint" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
