"""Shared fixtures: tiny random-weight checkpoints built once per session through the real code path."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# Where model weights and user data would otherwise be found: the hub cache (and what transformers derives from
# it), EasyOCR's weights folder, vqa chat's store. The session points them at an empty folder of its own.
HERMETIC = {"HF_HOME": "hf", "HF_HUB_CACHE": "hf/hub", "HUGGINGFACE_HUB_CACHE": "hf/hub",
            "HF_ASSETS_CACHE": "hf/assets", "HUGGINGFACE_ASSETS_CACHE": "hf/assets", "HF_XET_CACHE": "hf/xet",
            "HF_MODULES_CACHE": "hf/modules", "HF_DATASETS_CACHE": "hf/datasets", "EASYOCR_MODULE_PATH": "easyocr",
            "VQA_DATA_DIR": "data"}
UNSET = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE", "MODULE_PATH")
HOME = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Hermetic caches: before any test module is imported (several build their subprocess environment at
    import) every cache variable names a folder of this session's, so a machine with real weights in its hub
    cache (Grounding DINO, SAM, Qwen) runs the same tests as one without, and the ``vqa`` processes the tests
    start inherit it. ``VQA_*`` settings from the caller's shell are dropped too."""
    home = Path(tempfile.mkdtemp(prefix="vqa-tests-home-"))
    config.stash[HOME] = home
    for name in [*UNSET, *(k for k in os.environ if k.startswith("VQA_"))]:
        os.environ.pop(name, None)
    for name, sub in HERMETIC.items():
        os.environ[name] = str(home / sub)
    for sub in set(HERMETIC.values()):
        (home / sub).mkdir(parents=True, exist_ok=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def hermetic_home(pytestconfig: pytest.Config) -> Path:
    """The session's own folder behind ``HF_HOME``, ``HF_HUB_CACHE``, ``EASYOCR_MODULE_PATH``, ``VQA_DATA_DIR``."""
    return pytestconfig.stash[HOME]


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's temporary files (``tempfile``, and the ``vqa`` processes it starts) go into a folder of its
    own under pytest's base temp (beside ``tmp_path``, which stays as the test made it), never into ``/tmp``."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return tmp


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """``vqa dev make-tiny`` output: ``tiny_dir / "vlm-qwen2.5-vl"`` etc. (random weights, useless for answers)."""
    from agent.dev.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny")
    make_tiny(out)
    return out


@pytest.fixture(scope="session", autouse=True)
def shared_ocr_engines() -> Iterator[dict]:
    """One EasyOCR reader (and one CRAFT box finder) per weights folder, languages and device for the session:
    every ``OcrTool`` still plans, locates its weights and builds its engines through its own code (a missing
    file is still its error), but the weights are read from disk once, not once per test."""
    import threading

    import tools.ocr as ocr

    engines: dict[tuple, object] = {}
    lock = threading.Lock()

    def shared(cls: type) -> Callable[..., object]:
        def build(*args: object) -> object:
            key = (cls.__name__, *map(repr, args))
            with lock:
                if key not in engines:
                    engines[key] = cls(*args)
                return engines[key]
        return build

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ocr, "EasyOcrEngine", shared(ocr.EasyOcrEngine))
        mp.setattr(ocr, "CraftBoxes", shared(ocr.CraftBoxes))
        yield engines


@pytest.fixture(autouse=True)
def session_tool_registry() -> Iterator[None]:
    """A plug-in tool a test registers (``tools.register``, or a config file's ``[tools.register]`` read in the
    test's process) is gone after the test: later tests in the session see the built-ins and entry points only,
    never a leftover that a planner could pick."""
    import tools

    registry, names = tools.REGISTRY, list(tools.REGISTRY)
    yield
    if tools.REGISTRY is registry and list(tools.REGISTRY) != names:
        tools.REGISTRY = tools.Registry(tools.BUILTIN)
