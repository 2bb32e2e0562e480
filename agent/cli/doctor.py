"""``vqa doctor``: what this machine has for a run (``agent.doctor``), as a table or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli.common import AsJson, Opt, SettingsFlags, out, settings_flags

MARK = {"ok": "[green]ok[/]", "missing": "[red]missing[/]", "info": "[dim]info[/]"}


@settings_flags()
def doctor_cmd(
    as_json: AsJson = False,
    strict: Annotated[bool, Opt("--strict", help="Exit 1 when something the configured run needs is missing.")] = False,
    hub: Annotated[bool, Opt("--hub/--no-hub", help="Ask the hub one question (short timeout) to see whether it "
                             "is reachable.")] = True,
    *, opts: SettingsFlags,
) -> None:
    """Check this machine: Python, torch and CUDA, GPUs, bitsandbytes, each tool's weights, the reasoner, Tesseract
    languages, fonts, Chromium, the hub, and the config or bundle in use; each missing piece with its fix."""
    from agent.doctor import as_json as to_json, run_checks

    settings = opts.settings()
    checks = run_checks(settings, opts.config, hub=hub)
    report = to_json(checks)
    if as_json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        table = Table("check", "", "found", "fix", title="vqa doctor")
        for c in checks:
            name = c.name + (" *" if c.needed else "")
            table.add_row(escape(name), MARK[c.status], escape(c.detail), escape(c.fix))
        out.print(table)
        out.print("* needed by the configured run" + ("" if report["ok"] else ": [red]something needed is missing[/]"))
    if strict and not report["ok"]:
        raise typer.Exit(1)
