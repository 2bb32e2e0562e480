"""``vqa bundle DIR``: the wheels, models and data an offline machine needs, with a checked manifest and the
files that install it (``agent.bundle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli.common import Opt, SettingsFlags, err, fail, out, settings_flags


def human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@settings_flags()
def bundle_cmd(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The bundle's folder (created; a re-run completes it).")],
    python: Annotated[Optional[str], Opt("--python", help="Target Python, e.g. 3.11 (default: this one).")] = None,
    platform: Annotated[Optional[list[str]], Opt("--platform", help="Target wheel platform, e.g. "
                                                 "manylinux_2_28_x86_64; repeat for several (default: this machine).")
                        ] = None,
    with_torch: Annotated[bool, Opt("--with-torch", help="Also bundle torch, torchvision and the CUDA wheels (the "
                                    "target has none).")] = False,
    models: Annotated[bool, Opt("--models/--no-models", help="Bundle the configured reasoner's and tools' model "
                                "snapshots (from the local hub cache, else the hub).")] = True,
    extras: Annotated[str, Opt("--extras", help="The project's extras to bundle, comma-separated ('' for none): "
                               "gpu is bitsandbytes (--quant 4bit), ray runs --workers 2 on two GPUs.")] = "gpu,ray",
    constraint: Annotated[Optional[Path], Opt("--constraint", help="pip constraints for the versions (default: the "
                                              "checkout's constraints.txt, when running from one).")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print what would be fetched, with sizes, and stop.")] = False,
    *, opts: SettingsFlags,
) -> None:
    """Make an offline bundle: wheels for the target (no torch/CUDA unless --with-torch), model snapshots, EasyOCR's
    Korean weights, Tesseract data, a Hangul font, manifest.json, install.sh, notebook_cell.py and vqa.toml."""
    from agent.bundle import build, wheels
    from agent.core.hub import probe
    from agent.rundir import package_version

    settings = opts.settings()
    target = wheels.Target(python=python, platforms=tuple(platform or ()))
    if constraint is None and (src := wheels.project_source()) is not None and (src / "constraints.txt").is_file():
        constraint = src / "constraints.txt"
    if constraint is not None and not constraint.is_file():
        fail(f"--constraint {constraint} is not a file; expected a pip constraints file (NAME==VERSION lines)")
    err.print(f"resolving {wheels.PROJECT} for Python {target.describe()['python']} on "
              f"{target.describe()['platform']} ...", highlight=False)
    plan = build.plan(folder, settings, target=target, extras=[e.strip() for e in extras.split(",") if e.strip()],
                      with_torch=with_torch, models=models, constraints=constraint,
                      hub_ok=lambda: not probe(settings.model))
    table = Table("kind", "name", "size", "in bundle", title=f"bundle {folder}")
    for kind, name, size, held in plan.rows():
        table.add_row(kind, escape(name), human(size), "yes" if held else "")
    out.print(table)
    if plan.left_out:
        out.print(f"left out (the target has its own; --with-torch adds them): "
                  f"{', '.join(sorted(w.name for w in plan.left_out))}", highlight=False)
    for line in plan.missing:
        out.print(f"[yellow]not bundled:[/] {escape(line)}")
    out.print(f"to fetch: {human(plan.to_fetch())} of {human(sum(s or 0 for *_, s, _ in plan.rows()))}",
              highlight=False)
    if dry_run:
        return
    m = build.make(plan, version=package_version(), on_step=lambda s: err.print(f"  fetching {escape(s)}"))
    total = sum(e.size for e in m.files)
    out.print(f"{folder}: {len(m.files)} files, {human(total)}; manifest {folder / 'manifest.json'}. On the offline "
              f"machine: source {folder}/install.sh (or the cell in {folder}/notebook_cell.py), then vqa doctor",
              highlight=False)
