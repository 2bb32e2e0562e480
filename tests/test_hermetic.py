"""The suite is hermetic: its hub cache (and EasyOCR's folder, vqa chat's store) is a folder of its own, so a
machine whose hub cache holds the real default checkpoints runs the same tests as one whose cache is empty."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached(hub: Path, repo_id: str, folder: Path) -> Path:
    """``folder`` laid out in the hub cache ``hub`` as ``repo_id``'s main revision (what ``snapshot_download``
    leaves behind on a networked machine)."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    shutil.copytree(folder, repo / "snapshots" / COMMIT, dirs_exist_ok=True)
    return repo / "snapshots" / COMMIT


def test_the_hub_cache_is_the_sessions_own(hermetic_home: Path) -> None:
    import huggingface_hub.constants as c
    from transformers.utils import hub as transformers_hub

    for where in (c.HF_HOME, c.HF_HUB_CACHE, c.HF_ASSETS_CACHE, transformers_hub.HF_MODULES_CACHE,
                  os.environ["EASYOCR_MODULE_PATH"], os.environ["VQA_DATA_DIR"]):
        assert Path(where).is_relative_to(hermetic_home), where
    p = subprocess.run([sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"],
                       capture_output=True, text=True, timeout=120, check=True)
    assert Path(p.stdout.strip()) == Path(c.HF_HUB_CACHE)  # and the vqa processes a test starts inherit it
    assert not any(Path(c.HF_HUB_CACHE).iterdir())  # nothing is downloaded into it either


@pytest.mark.slow
def test_a_populated_user_hub_cache_changes_no_test(tmp_path: Path, tiny_dir: Path) -> None:
    """A user's cache holding Grounding DINO and SAM under their default ids (the tiny checkpoints stand in for
    them): outside the suite ``detect`` loads from it; inside, the tests that expect no cached weights pass."""
    hub = tmp_path / "user-cache" / "hub"
    cached(hub, "IDEA-Research/grounding-dino-tiny", tiny_dir / "detector-grounding-dino")
    cached(hub, "facebook/sam-vit-base", tiny_dir / "segmenter-sam")
    user = {**os.environ, "HF_HOME": str(hub.parent), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT)}
    probe = ("from PIL import Image; from agent.core.schema import Question; from tools.detect import DetectTool; "
             "q = Question(id='q', image='x.jpg', text='사진 속 사람은 몇 명인가요?', options={'a': '1명', 'b': '2명'}); "
             "r = DetectTool(tiling='off').run(Image.new('RGB', (64, 48)), q); print(r.ok, r.error)")
    p = subprocess.run([sys.executable, "-c", probe], env=user, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and p.stdout.startswith("True"), p.stdout + p.stderr  # the simulated cache is real
    tests = ["tests/test_detect.py::test_unreachable_hub_id_fails_offline_without_touching_the_network",
             "tests/test_hermetic.py::test_the_hub_cache_is_the_sessions_own"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "inner"), *tests], env=user, cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0 and f"{len(tests)} passed" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
