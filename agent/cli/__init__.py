"""The ``vqa`` command line; each command lives in its own module and is registered here."""

from __future__ import annotations

import os

# Pillow reads its public PILLOW_BLOCK_SIZE when it is imported (nothing above imports it): 64 MiB blocks are each
# their own mapping (over glibc's mmap threshold), so decoded pixels go back to the system when freed.
os.environ.setdefault("PILLOW_BLOCK_SIZE", "64m")

import sys  # noqa: E402
from typing import Annotated

import typer
from rich.markup import escape

from agent.cli.ask import ask, route
from agent.cli.batch import batch
from agent.cli.bench import bench_app
from agent.cli.bundle import bundle_cmd
from agent.cli.chat import chat_cmd
from agent.cli.common import Opt, err, flags_as_flags
from agent.cli.dev import dev
from agent.cli.doctor import doctor_cmd
from agent.cli.eval import eval_cmd
from agent.cli.interrupt import exit_now, install as install_interrupts, interrupted, stopped_cleanly
from agent.cli.kb import kb_app
from agent.cli.trace import trace_app
from agent.cli.train import train_cmd
from agent.cli.ui import ui_cmd
from agent.cli.visdial import rank_cmd
from agent.core.errors import VqaError
from agent.core.textsafe import clean
from tools import tool_commands

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Answer multiple-choice questions about images with tools and a local Qwen-VL.")
app.command()(ask)
app.command()(route)
app.command()(batch)
app.command("chat")(chat_cmd)
app.command("eval", context_settings={"ignore_unknown_options": True})(eval_cmd)  # --task's options pass on
app.command("train")(train_cmd)
app.command("ui")(ui_cmd)
app.command("bundle")(bundle_cmd)
app.command("doctor")(doctor_cmd)
app.command("rank")(rank_cmd)
app.add_typer(trace_app, name="trace")
app.add_typer(kb_app, name="kb")
app.add_typer(bench_app, name="bench")
app.add_typer(dev, name="dev")
for _name, _cli in tool_commands().items():  # each tool's own commands (Tool.commands): vqa anomaly fit ...
    if isinstance(_cli, typer.Typer):
        app.add_typer(_cli, name=_name)
    else:
        app.command(_name)(_cli)


def _print_version(value: bool) -> None:
    if value:
        from agent.rundir import git_commit, package_version

        commit = git_commit()
        print(f"vqa-orchestrator {package_version()}" + (f" (git {commit})" if commit else ""))
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, Opt("--version", callback=_print_version, is_eager=True,
                                          help="Print the version (and git commit) and exit.")] = False,
             verbose: Annotated[bool, Opt("--verbose", help="Keep third-party progress bars and warnings "
                                          "(weight loading).")] = False) -> None:
    """Answer multiple-choice questions about images with tools and a local Qwen-VL."""
    if not verbose:
        quiet_third_parties()


def quiet_third_parties() -> None:
    """Third-party progress bars and chatter off (set before those libraries load; a variable already set wins):
    a run's own progress and warnings are what the user reads."""
    import os

    for var, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TQDM_DISABLE", "1"),
                       ("RAY_LOGGER_LEVEL", "error")):  # Ray's driver-side notices (the token warning)
        os.environ.setdefault(var, value)


flags_as_flags(app)

def main() -> None:
    install_interrupts()
    try:
        _main()
    except SystemExit as exc:
        exit_now(exc.code)  # without C++ teardown under tool calls still running (abandoned after a timeout)
    exit_now(0)


def _main() -> None:
    try:
        app()
    except VqaError as exc:
        err.print("[bold red]error:[/]", escape(clean(str(exc))), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished questions are kept in the run directory; rerun the same command to resume")
        sys.exit(130)
    except SystemExit as exc:  # Typer turns Ctrl-C into a silent exit 130 before the handler above could speak
        if exc.code == 130 and interrupted() and not stopped_cleanly():
            err.print("interrupted: finished questions are kept in the run directory; rerun the same command to "
                      "resume", highlight=False)
        raise


if __name__ == "__main__":
    main()
