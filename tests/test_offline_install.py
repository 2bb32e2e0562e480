"""The competition's own environment, end to end: a bundle made here installs with no network into a fresh
environment that already has its own torch (a Kaggle image's), leaves that torch alone, and ``vqa batch`` answers
every row of ``examples/test.csv`` there with no network; ``vqa doctor --json`` reports that torch and exits 0.

The host's torch is another environment's site-packages seen through a ``.pth`` file, as a notebook's preinstalled
torch is: ``VQA_TEST_HOST_SITE`` names one (e.g. a venv with only torch 2.14.0 + torchvision 0.29.0 installed),
else this interpreter's torch, torchvision and their requirements are linked into a folder of their own. The network
is cut with ``unshare -n`` (a network namespace with no interface) where this user may; without it the installs use
``--no-index`` and ``HF_HUB_OFFLINE=1`` only."""

from __future__ import annotations

import csv
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from agent.bundle import manifest as mf

ROOT = Path(__file__).resolve().parents[1]
VQA = str(Path(sys.executable).parent / "vqa")


def host_site(dest: Path) -> Path:
    """``VQA_TEST_HOST_SITE``, else ``dest`` holding links to this interpreter's torch, torchvision and everything
    they require (nothing of the project's other dependencies)."""
    if os.environ.get("VQA_TEST_HOST_SITE"):
        return Path(os.environ["VQA_TEST_HOST_SITE"])
    dest.mkdir(parents=True)
    todo: list[tuple[str, frozenset[str]]] = [("torch", frozenset()), ("torchvision", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        name = re.sub(r"[-_.]+", "-", name).lower()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = md.distribution(name)
        todo += [(r.name, frozenset(r.extras)) for r in map(Requirement, dist.requires or [])
                 if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras))]
        site = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
            if not (dest / top).exists() and (site / top).exists():
                (dest / top).symlink_to(site / top)
    return dest


def offline() -> list[str]:
    """``unshare -n`` when it works here (root or user namespaces), else nothing."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    return ["unshare", "-n"] if ok else []


def run(cmd: list[str], env: dict[str, str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*offline(), *cmd], capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_offline_install_keeps_the_host_torch_and_answers_every_row(tmp_path: Path) -> None:
    # one OpenMP thread per process and a generous tool timeout: a loaded CI machine makes OCR slow, and a tool
    # thread still running when the process exits can abort it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    bundle = tmp_path / "bundle"
    p = subprocess.run([VQA, "bundle", bundle, "--reasoner", "evidence"], capture_output=True, text=True,
                       timeout=1200, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    wheels = sorted(f.name for f in (bundle / "wheels").iterdir())
    assert not [w for w in wheels if re.match(r"(torch|torchvision|triton|nvidia_|cuda_)", w)], wheels
    assert any(w.startswith("vqa_orchestrator-") for w in wheels)
    m = mf.read(bundle)
    assert mf.verify(bundle, m) == []
    assert sorted(e.path for e in m.files if e.kind == "wheel") == [f"wheels/{w}" for w in wheels]

    host = host_site(tmp_path / "host")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    (next(venv.glob("lib/python3*/site-packages")) / "host_torch.pth").write_text(f"{host}\n", encoding="utf-8")
    py = str(venv / "bin" / "python")
    versions = [py, "-c", "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.__file__)"]
    before = subprocess.run(versions, capture_output=True, text=True, check=True).stdout
    clean = {**env, "PIP_CONFIG_FILE": os.devnull, "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "VQA_CONFIG", "TESSDATA_PREFIX", "PIP_CONSTRAINT", "PIP_FIND_LINKS"):
        clean.pop(key, None)

    # what a user does on the offline machine: install.sh (sha256sum -c, pip install --no-index), then vqa
    out = tmp_path / "run"
    script = (f'source "{bundle}/install.sh" && cd "{ROOT}" && vqa batch examples/test.csv --images examples '
              f'--reasoner evidence --out "{out}/submission.csv" --run-dir "{out}" --tool-timeout 900')
    p = run(["bash", "-c", script], clean, timeout=2400)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert subprocess.run(versions, capture_output=True, text=True, check=True).stdout == before  # torch untouched
    assert str(host) in before
    with open(out / "submission.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(ROOT / "examples" / "test.csv", encoding="utf-8") as f:
        assert [r["id"] for r in rows] == [r["id"] for r in csv.DictReader(f)]
    assert len(rows) == 12 and all(r["answer"] in "abcde" and r["answer"] for r in rows)

    p = run(["bash", "-c", f'source "{bundle}/install.sh" >/dev/null && vqa doctor --json'], clean)
    assert p.returncode == 0, p.stderr
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert before.split()[0] in checks["torch"]["detail"]
    assert checks["tesseract"]["status"] == "ok" or "kor.traineddata" not in {e.path.split("/")[-1] for e in m.files}
    assert checks["bundle"]["status"] == "ok" and checks["config"]["detail"].endswith("vqa.toml")
    assert {checks["detect"]["status"], checks["som"]["status"]} <= {"ok", "missing"}
