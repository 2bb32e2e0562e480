"""The wheels of a bundle: pip resolves the project and its dependencies for the target (``pip install --dry-run
--report``), the torch stack the target already has is left out, and each remaining wheel is copied (a local
index or cache) or downloaded, checked against the sha256 the index published.

pip is run as a subprocess of this interpreter (``python -m pip``), so its configuration (indexes, find-links,
constraints) is the user's own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from agent.core.errors import ConfigError

PROJECT = "vqa-orchestrator"
# what a GPU notebook (Kaggle, Colab) or a lab server already has: torch and the CUDA libraries built for it
HOST_STACK = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
TIMEOUT = 60.0  # seconds per HTTP request


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_provided(name: str) -> bool:
    """Left out unless ``--with-torch``: torch, torchvision, triton and the CUDA wheels (``nvidia-*``, ``cuda-*``)."""
    return bool(HOST_STACK.match(canonical(name)))


@dataclass(frozen=True)
class Target:
    """The Python and platform the wheels are for; ``None`` fields mean this interpreter's."""

    python: str | None = None  # "3.11"
    platforms: tuple[str, ...] = ()  # "manylinux_2_28_x86_64", ...

    @property
    def native(self) -> bool:
        return self.python in (None, this_python()) and not self.platforms

    def pip_args(self) -> list[str]:
        if self.native:
            return []
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python or this_python()]
        for p in expand_platforms(self.platforms):  # none given: pip's own tags for this machine
            args += ["--platform", p]
        return args

    def describe(self) -> dict[str, str]:
        return {"python": self.python or this_python(),
                "platform": ",".join(self.platforms) if self.platforms else this_platform()}


LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def expand_platforms(platforms: Sequence[str]) -> list[str]:
    """``manylinux_2_N_ARCH`` also means every older glibc (``manylinux_2_27``, ..., ``manylinux2014``, ...): pip
    takes ``--platform`` tags literally, so a wheel tagged ``manylinux_2_27`` would not match ``manylinux_2_28``."""
    out: list[str] = []
    for p in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", p) or re.fullmatch(r"(manylinux)(2014|2010|1)_(\w+)", p)
        if m is None:
            tags = [p]
        else:
            if m.group(1) == "manylinux":
                top, arch = {"2014": 17, "2010": 12, "1": 5}[m.group(2)], m.group(3)
            else:
                top, arch = int(m.group(1)), m.group(2)
            tags = [f"manylinux_2_{k}_{arch}" for k in range(top, 4, -1)]
            tags += [f"{LEGACY_MANYLINUX[k]}_{arch}" for k in sorted(LEGACY_MANYLINUX, reverse=True) if k <= top]
        out += [t for t in tags if t not in out]
    return out


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def this_platform() -> str:
    """This machine's platform, as the user reads it (``linux_x86_64``)."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class Wheel:
    """One resolved distribution: where pip found it and the sha256 the index gave (``""`` for a local folder)."""

    name: str
    version: str
    url: str
    sha256: str
    requested: bool = False  # the project itself

    @property
    def filename(self) -> str:
        return unquote(Path(urlparse(self.url).path).name)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def local_path(self) -> Path | None:
        return Path(unquote(urlparse(self.url).path)) if self.url.startswith("file:") else None


def resolve(requirement: str, target: Target, *, constraints: Path | None = None) -> list[Wheel]:
    """Every distribution ``pip install requirement`` would install into an empty environment of ``target``."""
    with tempfile.TemporaryDirectory(prefix="vqa-bundle-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *target.pip_args()]
        if not target.native:
            cmd += ["--target", str(Path(tmp) / "target")]
        if constraints is not None:
            cmd += ["--constraint", str(constraints)]
        proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
            why = [ln for ln in lines if ln.startswith(("The conflict is caused by", "ERROR: Could not find",
                                                        "ERROR: No matching"))]
            tail = " ".join((lines[lines.index(why[0]):] if why else lines[-4:])[:6])
            raise ConfigError(f"pip could not resolve {requirement} for {target.describe()}: {tail}")
        data = json.loads(report.read_text(encoding="utf-8"))
    out = []
    for item in data["install"]:
        info = item["download_info"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        out.append(Wheel(name=item["metadata"]["name"], version=item["metadata"]["version"], url=info["url"],
                         sha256=hashes.get("sha256", ""), requested=bool(item.get("requested"))))
    return out


def select(wheels: Sequence[Wheel], *, with_torch: bool) -> tuple[list[Wheel], list[Wheel]]:
    """``(kept, left_out)``: the host's torch stack is left out unless ``with_torch``."""
    kept = [w for w in wheels if with_torch or not host_provided(w.name)]
    return kept, [w for w in wheels if w not in kept]


def size_of(wheel: Wheel) -> int | None:
    """Bytes to fetch (``None`` when unknown): a local file's size, or the index's ``Content-Length``."""
    local = wheel.local_path
    if local is not None:
        return local.stat().st_size if local.is_file() else None
    import httpx

    try:
        r = httpx.head(wheel.url, follow_redirects=True, timeout=TIMEOUT)
        return int(r.headers["content-length"]) if r.is_success and "content-length" in r.headers else None
    except (httpx.HTTPError, ValueError):
        return None


def have(wheel: Wheel, folder: Path, sha256_of: Callable[[Path], str]) -> Path | None:
    """The file already in ``folder`` for ``wheel`` with the index's hash (so a re-run skips it), else ``None``."""
    path = folder / wheel.filename
    if wheel.is_wheel and path.is_file() and wheel.sha256 and sha256_of(path) == wheel.sha256:
        return path
    return None


def fetch(wheel: Wheel, folder: Path, sha256_of: Callable[[Path], str]) -> Path:
    """Copy or download ``wheel`` into ``folder`` and check its sha256; an sdist (or the project's source folder)
    is built into a wheel with ``pip wheel``. Raises ``ConfigError`` with the reason."""
    folder.mkdir(parents=True, exist_ok=True)
    if not wheel.is_wheel:
        return build(wheel.url if not wheel.local_path else str(wheel.local_path), folder, wheel.name)
    dest = folder / wheel.filename
    part = dest.with_name(dest.name + ".part")
    local = wheel.local_path
    if local is not None:
        shutil.copyfile(local, part)
    else:
        import httpx

        try:
            with httpx.stream("GET", wheel.url, follow_redirects=True, timeout=TIMEOUT) as r, open(part, "wb") as f:
                r.raise_for_status()
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
        except httpx.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise ConfigError(f"could not download {wheel.filename} from {wheel.url} ({exc}); check the network "
                              "and run vqa bundle again (what is done is kept)") from None
    if wheel.sha256 and sha256_of(part) != wheel.sha256:
        part.unlink()
        raise ConfigError(f"{wheel.filename}: sha256 differs from the index's; run vqa bundle again")
    part.replace(dest)
    return dest


def build(source: str, folder: Path, name: str) -> Path:
    """``pip wheel --no-deps source`` into ``folder``: the wheel it made."""
    before = set(folder.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder), source],
                          capture_output=True, text=True)
    made = sorted(set(folder.glob("*.whl")) - before) or sorted(
        p for p in folder.glob("*.whl") if canonical(p.name.split("-")[0]) == canonical(name))
    if proc.returncode != 0 or not made:
        tail = " ".join(line.strip() for line in proc.stderr.strip().splitlines()[-2:])
        raise ConfigError(f"pip could not build a wheel of {name} from {source}: {tail}")
    return made[-1]


def project_source() -> Path | None:
    """The project's source folder when this ``agent`` package runs from a checkout (an editable install)."""
    import agent

    root = Path(agent.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{PROJECT}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None
