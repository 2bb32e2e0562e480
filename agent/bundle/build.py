"""``vqa bundle DIR``: everything an offline machine needs to run the project, in one folder.

``plan`` resolves the wheels and finds the assets (nothing is fetched; the sizes are known), ``make`` fetches what
the bundle does not hold yet and writes ``manifest.json`` (+ ``SHA256SUMS``), ``install.sh``, ``notebook_cell.py``
and ``vqa.toml``. A re-run finds what the manifest already lists with the right size and fetches only the rest.

Layout::

    DIR/wheels/          the project's wheel and its dependencies' (no torch/torchvision/CUDA unless --with-torch)
    DIR/models/ORG--NAME the snapshots of the configured reasoner and tools
    DIR/easyocr/         EasyOCR's Korean recogniser and text detector (when found here)
    DIR/tessdata/        Tesseract's kor/eng/osd traineddata (when found here)
    DIR/fonts/           a Hangul font (when found here)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.bundle import assets, manifest as mf, wheels as wh
from agent.bundle.assets import Asset
from agent.bundle.wheels import Target, Wheel

WHEELS = "wheels"
INSTALL, NOTEBOOK, CONFIG = "install.sh", "notebook_cell.py", "vqa.toml"


@dataclass
class Plan:
    root: Path
    target: Target
    extras: list[str] = field(default_factory=list)  # the project's extras the wheels cover (install.sh asks for them)
    wheels: list[Wheel] = field(default_factory=list)
    left_out: list[Wheel] = field(default_factory=list)  # the host's torch stack
    assets: list[Asset] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # what was looked for and not found (one line each)
    sizes: dict[str, int | None] = field(default_factory=dict)  # wheel filename -> bytes
    held: set[str] = field(default_factory=set)  # wheel filenames / asset dests the bundle already has

    def rows(self) -> list[tuple[str, str, int | None, bool]]:
        """``(kind, name, bytes, already held)`` of everything in the plan, for the table printed first."""
        out = [("wheel", w.filename if w.is_wheel else f"{w.name} {w.version} (built)", self.sizes.get(w.filename),
                w.filename in self.held) for w in self.wheels]
        return out + [(a.kind, a.name, a.size, a.dest in self.held) for a in self.assets]

    def to_fetch(self) -> int:
        return sum(size or 0 for _, _, size, held in self.rows() if not held)


def requirement(extras: list[str]) -> str:
    """What pip resolves: the source checkout (when running from one) or the released package."""
    src = wh.project_source()
    suffix = f"[{','.join(extras)}]" if extras else ""
    if src is not None:
        return f"{wh.PROJECT}{suffix} @ {src.as_uri()}"
    from agent.rundir import package_version

    return f"{wh.PROJECT}{suffix}=={package_version()}"


def plan(root: Path, settings: Any, *, target: Target, extras: list[str], with_torch: bool, models: bool,
         constraints: Path | None, hub_ok: Callable[[], bool]) -> Plan:
    """What the bundle at ``root`` needs and which of it it already holds."""
    p = Plan(Path(root), target, extras=list(extras))
    resolved = wh.resolve(requirement(extras), target, constraints=constraints)
    p.wheels, p.left_out = wh.select(resolved, with_torch=with_torch)
    held = held_files(p.root)
    for w in p.wheels:
        entry = held.get(f"{WHEELS}/{w.filename}")
        if w.is_wheel and entry is not None and (not w.sha256 or entry.sha256 == w.sha256):
            p.held.add(w.filename)
        p.sizes[w.filename] = entry.size if entry else (wh.size_of(w) if w.is_wheel else None)
    if not models:  # --no-models: wheels only
        return _mark_held(p, held)
    up: bool | None = None  # asked once, only when a model is not on this machine
    for what, model, setting in assets.configured_models(settings):
        if up is None and not _cached(model):
            up = hub_ok()
        try:
            p.assets.append(assets.plan_model(what, model, setting, bool(up)))
        except Exception as exc:  # noqa: BLE001 - a model not found is a line of the plan, not a crash
            p.missing.append(f"{what} model: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
    found = assets.plan_easyocr()
    if not any(a.name == "korean_g2.pth" for a in found):
        p.missing.append(f"EasyOCR Korean weights: not in {assets.easyocr_dir()} (Korean OCR falls back to Tesseract)")
    tess = assets.plan_tessdata()
    if not any(a.name == "kor.traineddata" for a in tess):
        p.missing.append("Tesseract kor.traineddata: not found here (apt-get install tesseract-ocr-kor)")
    font = assets.plan_font()
    if not font:
        p.missing.append("a Hangul font: not found here (apt-get install fonts-nanum)")
    p.assets += found + tess + font
    return _mark_held(p, held)


def _mark_held(p: Plan, held: dict[str, mf.Entry]) -> Plan:
    """An asset is held when the manifest lists it and every file it lists for it is there with its size (a model
    with one file gone is fetched again)."""
    listed = mf.read(p.root).by_path()
    for a in p.assets:
        mine = [path for path in listed if path == a.dest or path.startswith(a.dest + "/")]
        if mine and all(path in held for path in mine) and (a.kind == "model" or held[a.dest].size == a.size):
            p.held.add(a.dest)
    return p


def _cached(model: str) -> bool:
    from agent.core.hub import is_local

    if is_local(model):
        return True
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(model, local_files_only=True)
        return True
    except LocalEntryNotFoundError:
        return False


def held_files(root: Path) -> dict[str, mf.Entry]:
    """The manifest's entries whose file is still there with its size (cheap: no hashing)."""
    m = mf.read(root)
    return {e.path: e for e in m.files if (root / e.path).is_file() and (root / e.path).stat().st_size == e.size}


def make(p: Plan, *, version: str, on_step: Callable[[str], None] = lambda _: None) -> mf.Manifest:
    """Fetch what ``p`` lacks, then write the manifest and the install files. ``on_step`` hears each fetch."""
    root = p.root
    root.mkdir(parents=True, exist_ok=True)
    m = mf.read(root)
    m.drop_missing(root)
    m.created_by, m.target = f"{wh.PROJECT} {version}", p.target.describe()
    folder = root / WHEELS
    for w in p.wheels:
        if w.filename in p.held:
            continue
        on_step(f"wheel {w.filename if w.is_wheel else w.name}")
        path = wh.fetch(w, folder, mf.sha256)
        source = w.url if w.is_wheel else f"built from {w.url}"
        m.add(mf.entry_for(root, path, source=source, kind="wheel"))
        mf.write(root, m)  # after each file: an interrupted run keeps what it fetched
    for a in p.assets:
        if a.dest in p.held:
            continue
        on_step(f"{a.kind} {a.name}")
        for path in assets.fetch(a, root):
            m.add(mf.entry_for(root, path, source=a.source, kind=a.kind))
        mf.write(root, m)
    write_config(root, p)
    write_install(root, p)
    for name in (CONFIG, INSTALL, NOTEBOOK):
        m.add(mf.entry_for(root, root / name, source="vqa bundle", kind="file"))
    mf.write(root, m)
    return m


def settings_lines(p: Plan) -> dict[str, dict[str, str]]:
    """vqa.toml's values, relative to the bundle (``./``: the config file's folder), by table (``""``: top level)."""
    tables: dict[str, dict[str, str]] = {"": {}}
    for a in p.assets:
        if a.setting:
            table, key = a.setting
            tables.setdefault(table, {})[key] = "./" + a.dest
    if any(a.kind == "easyocr" for a in p.assets):
        tables.setdefault("ocr", {})["easyocr_model_dir"] = "./" + assets.EASYOCR
    return tables


def write_config(root: Path, p: Plan) -> Path:
    lines = ["# Written by vqa bundle: paths starting with ./ are relative to this file's folder.",
             "# install.sh and notebook_cell.py set VQA_CONFIG to this file, so vqa needs no flag to find them."]
    for table, values in sorted(settings_lines(p).items()):
        if not values:
            continue
        if table:
            lines.append(f"[{table}]")
        lines += [f'{key} = "{value}"' for key, value in sorted(values.items())]
    path = root / CONFIG
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def environment(p: Plan, here: str) -> dict[str, str]:
    """The variables that point the project and its tools at the bundle's folders (``here``: the bundle path as
    the script will see it, e.g. ``$HERE``)."""
    env = {"VQA_CONFIG": f"{here}/{CONFIG}"}
    if any(a.kind == "tessdata" for a in p.assets):
        env["TESSDATA_PREFIX"] = f"{here}/{assets.TESSDATA}"
    if font := next((a for a in p.assets if a.kind == "font"), None):
        env["VQA_HANGUL_FONT"] = f"{here}/{font.dest}"
    return env


def write_install(root: Path, p: Plan) -> None:
    env = environment(p, "$HERE")
    project = wh.PROJECT + (f"[{','.join(p.extras)}]" if p.extras else "")
    exports = "\n".join(f'export {k}="{v}"' for k, v in env.items())
    (root / INSTALL).write_text(f"""#!/usr/bin/env bash
# Install vqa-orchestrator from this bundle with no network, keeping the torch this machine already has.
#   source install.sh     (installs, and sets the variables below in this shell)
#   bash install.sh       (installs only)
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
(cd "$HERE" && sha256sum --quiet -c {mf.SUMS}) || {{ echo "the bundle in $HERE does not match its {mf.SUMS}: copy it again or rerun vqa bundle" >&2; return 1 2>/dev/null || exit 1; }}
python -m pip install --no-index --find-links "$HERE/{WHEELS}" "{project}" || {{ return 1 2>/dev/null || exit 1; }}
{exports}
echo "vqa-orchestrator installed from $HERE; check this machine with: vqa doctor"
""", encoding="utf-8")
    (root / INSTALL).chmod(0o755)
    sets = "\n".join(f'os.environ["{k}"] = f"{v.replace("$HERE", "{BUNDLE}")}"' for k, v in env.items())
    (root / NOTEBOOK).write_text(f"""# A notebook cell (Kaggle, Colab): the bundle uploaded as a dataset, installed with no network.
import os
import subprocess
import sys

BUNDLE = "/kaggle/input/vqa-bundle"  # where the dataset is mounted
subprocess.run(["sha256sum", "--quiet", "-c", "{mf.SUMS}"], cwd=BUNDLE, check=True)
subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", f"{{BUNDLE}}/{WHEELS}",
                "{project}"], check=True)
{sets}
subprocess.run(["vqa", "doctor"], check=False)
""", encoding="utf-8")
