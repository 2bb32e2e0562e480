"""``vqa eval``: accuracy with intervals, calibration, circular evaluation and the tool ablation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from agent.cli.cluster import CpusPerWorker, GpusPerWorker, Oversubscribe, RayAddress, Workers, cluster
from agent.cli.common import (
    RUN_FLAGS,
    Limit,
    Opt,
    Quiet,
    SettingsFlags,
    Tools,
    err,
    fail,
    orchestrator,
    out,
    settings_flags,
    tools as parse_tools_flag,
)
from agent.cli.interrupt import interrupted, resume_command, stopping
from agent.cli.progress import row_progress

if TYPE_CHECKING:
    from eval.report import Metrics


@settings_flags(*RUN_FLAGS)
def eval_cmd(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Labelled competition file (with an answer column); with --task visdial a VisDial v1.0 JSON "
                                  "file.")],
    images: Annotated[Path, Opt("--images", help="Root folder the CSV's paths are relative to.")],
    run_dir: Annotated[Path, Opt("--run-dir", help="Where metrics.json, the arms, the trace and the cache go.")],
    ablate: Annotated[bool, Opt("--ablate", help="Run the tool ablation arms; writes ablation.csv and .png.")] = False,
    ablate_tools: Annotated[Optional[str], Opt("--ablate-tools", help="Tools the arms vary (comma list; default: "
                                               "every available tool).")] = None,
    ablate_planners: Annotated[Optional[str], Opt("--ablate-planners", help="Also compare these planners with the "
                                                  "router (comma list of escalate, vlm): arms planner:<name>; "
                                                  "implies --ablate.")] = None,
    circular: Annotated[bool, Opt("--circular", help="Ask every rotation of the options: circular accuracy and "
                                  "position bias.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print metrics.json instead of tables.")] = False,
    task: Annotated[Optional[str], Opt("--task", help="mc (the default): lettered multiple choice (a CSV); visdial: "
                                       "rank VisDial v1.0 candidates (a JSON file; writes ranks.json); a task a tool "
                                       "brings (anomaly, caption): runs that tool's eval with the other arguments, "
                                       "e.g. --task anomaly LABELS.csv --normal DIR.")] = None,
    dense: Annotated[Optional[Path], Opt("--dense", help="VisDial dense annotations (gt_relevance): adds NDCG.")] = None,
    rank_score: Annotated[str, Opt("--rank-score", help="visdial: rank by mean or sum log-likelihood.")] = "mean",
    tools: Tools = None,
    ray: RayAddress = None, workers: Workers = 1, gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = 1.0, oversubscribe: Oversubscribe = False,
    limit: Limit = None, quiet: Quiet = False,
    task_args: Annotated[Optional[list[str]], typer.Argument(hidden=True, help="The task's own options (--task).")
                         ] = None,
    *, opts: SettingsFlags,
) -> None:
    """Accuracy with 95% intervals (overall, per category), calibration, and optionally the tool ablation."""
    from tools import parse_tool_list

    if task not in (None, "mc", "visdial") or task_args:
        return run_task(task, [str(csv_path), "--images", str(images), "--run-dir", str(run_dir), *(task_args or [])],
                        dict(opts.given))

    if not images.is_dir():
        fail(f"--images {images} is not a folder")
    if task == "visdial":
        if ablate or ablate_planners or circular or ray:
            fail("--task visdial ranks candidates: --ablate, --ablate-planners, --circular and --ray do not apply")
        from agent.cli.visdial import eval_visdial_cli

        return eval_visdial_cli(csv_path, images, run_dir, dense=dense, rank_score=rank_score, limit=limit,
                                quiet=quiet, as_json=as_json, settings=opts.settings())
    on = cluster(ray, workers, gpus_per_worker, cpus_per_worker, oversubscribe)
    settings = opts.settings()
    forced = parse_tools_flag(tools)  # after the settings: the config file may register plug-in tools
    try:
        varied = parse_tool_list(ablate_tools or "all")
    except ValueError as exc:
        fail(f"--ablate-tools: {exc}")
    if ablate_tools is not None and not (ablate or ablate_planners):
        fail("--ablate-tools names the tools the ablation varies: add --ablate (or use --tools to force tools "
             "on every question)")
    metrics = _evaluate(vqa_args=dict(csv=csv_path, images=images, run_dir=run_dir, ablate=ablate,
                                      ablate_tools=varied, ablate_planners=ablate_planners, circular=circular,
                                      limit=limit), settings=settings, forced=forced, on=on, quiet=quiet)
    if as_json:
        print(metrics.model_dump_json(indent=2))
    else:
        print_metrics(metrics)
    if not quiet and not as_json:
        out.print(f"metrics: {run_dir / 'metrics.json'}" + (f"   ablation: {run_dir / 'ablation.csv'}, "
                                                             f"{run_dir / 'ablation.png'}" if ablate or ablate_planners else "")
                  + f"   trace: vqa trace show {run_dir}")
    if interrupted():  # every row was done before the stop took effect: the metrics are written
        raise typer.Exit(130)


def _evaluate(vqa_args: dict, settings: object, forced: list[str] | None, on: object, *, quiet: bool) -> Metrics:
    """``vqa.eval`` under the batch's Ctrl-C (``agent.cli.interrupt``): the first stops taking rows, says how many
    rows of which arm are done and the command to run again, and exits 130."""
    from eval.ablation import ArmStopped

    count = {"arm": "router", "rows": 0, "done": 0}
    run_dir = vqa_args["run_dir"]

    def say(arm: str, done: int, rows: int, cut: int = 0) -> None:
        err.print(f"interrupted: {done} of {rows} rows of arm {arm} done" + (f", {cut} cut short" if cut else "")
                  + f" (kept in {run_dir}/arms/{arm.replace(':', '-')}/results.jsonl; a rerun answers every row "
                  "again, with the tool results from the cache); resume with:", highlight=False, markup=False)
        err.print("  " + resume_command(), highlight=False, markup=False)

    with orchestrator(settings, forced, cluster=on) as vqa, row_progress("router", quiet=quiet, transient=True) as bar:
        def start(rows: int) -> None:
            count["rows"] = rows
            bar.start(rows)

        def arm(name: str) -> None:
            count.update(arm=name, done=0)
            bar.arm(name)

        def done(a: object) -> None:
            count["done"] += not getattr(a, "incomplete", False)
            bar.done(a)

        def on_stop() -> None:
            err.print("\nstopping: no new rows; running ones are cut short (Ctrl-C again to quit at once)",
                      highlight=False)

        try:
            with stopping(on_stop, lambda: say(count["arm"], count["done"], count["rows"])) as stop:
                return vqa.eval(**vqa_args, on_start=start, on_arm=arm, on_done=done, stop=stop)
        except ArmStopped as exc:
            say(exc.arm, exc.done, exc.rows, exc.cut)
            raise typer.Exit(130) from None


def run_task(task: str | None, args: list[str], given: dict) -> None:
    """``vqa eval --task NAME ...``: the command the tool ``NAME`` declares for it (``Tool.eval_task``); the
    settings flags typed on the command line (``--model``, ``--seed`` ...) reach it where it takes them."""
    import inspect

    from tools import eval_tasks, import_spec

    tasks = eval_tasks()
    if task is None:
        fail(f"unexpected arguments {' '.join(args[5:])}: vqa eval takes them only with --task (one of "
             f"{', '.join(tasks) or 'none'}); see vqa eval --help")
    if task not in tasks:
        fail(f"--task {task!r}: expected mc, visdial or one of {list(tasks)} (tools that declare an eval task)")
    fn = import_spec(tasks[task])
    args += [a for k, v in given.items() if k in inspect.signature(fn).parameters
             for a in (f"--{k.replace('_', '-')}", str(v))]
    cli = typer.Typer(add_completion=False)
    cli.command()(fn)
    typer.main.get_command(cli).main(args, prog_name=f"vqa eval --task {task}", standalone_mode=False)


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _table(title: str, columns: list[str], names: list[str]) -> Table:
    """A table whose first column (arm, category, letter) is never cut: it keeps the width of its longest name, and
    the other columns fold their text onto more lines when the terminal is narrow."""
    t = Table(title=title)
    t.add_column(columns[0], no_wrap=True, min_width=max(map(len, [columns[0], *names])))
    for col in columns[1:]:
        t.add_column(col, overflow="fold")
    return t


def print_metrics(m: Metrics) -> None:
    out.print(f"[bold]accuracy[/] {_pct(m.accuracy)}  (95% CI {_pct(m.ci_low)}–{_pct(m.ci_high)}, "
              f"n={m.n}, failed {m.failed})   [bold]s/question[/] {m.s_per_q:.3f}   reasoner {m.reasoner}")
    t = _table(f"per category (from the {'CSV' if m.category_source == 'column' else 'router'})",
               ["category", "n", "accuracy", "95% CI"], list(m.per_category))
    for c, s in m.per_category.items():
        t.add_row(c, str(s.n), _pct(s.accuracy), f"{_pct(s.ci_low)}–{_pct(s.ci_high)}")
    out.print(t)
    c = m.calibration
    line = (f"[bold]calibration[/] ECE {c.ece:.3f}  NLL {c.nll:.3f}  fitted temperature "
            f"{c.temperature_fit:.3g} → ECE {c.ece_at_fit:.3f}, NLL {c.nll_at_fit:.3f} (in-sample)")
    if c.temperature is not None:
        line += f"; at --temperature {c.temperature:g}: ECE {c.ece_at_temperature:.3f}"
    out.print(line)
    if m.cache:
        k = m.cache
        out.print(f"[bold]tool cache[/] computed {k.computed}, served {k.served}, failed {k.failed}  ({k.root})")
    if m.circular:
        ci = m.circular
        out.print(f"[bold]circular accuracy[/] {_pct(ci.circular_accuracy)} (rotations right: "
                  f"{_pct(ci.rotation_accuracy)} of {ci.evaluations})")
        t = _table("position bias (share of answers)", ["letter", "chosen", "correct", "gap"], list(ci.position_bias))
        for k, v in ci.position_bias.items():
            t.add_row(k, _pct(v.chosen), _pct(v.correct), f"{v.gap:+.1%}")
        out.print(t)
    if m.ablation:
        rows = m.ablation.rows
        extra = [k for k in rows[0] if k.startswith("ran:")] if rows else []
        t = _table("tool ablation (Δ and McNemar p vs router)", ["arm", "n", "accuracy", "95% CI", "Δ", "p", "s/q",
                                                                  "cached", "calls/q", "tool s/q", *extra],
                   [r["arm"] for r in rows])
        t.caption = ("ran:<tool>: share of questions on which the tool succeeded. s/q: wall seconds per question; "
                     "'cached' is the share of tool results served from the tool cache (filled by the first arm "
                     "or an earlier run), so those arms' seconds are lookups. An arm marked 'not run' forced a tool "
                     "that is unavailable here: it is not compared.")
        for r in rows:
            skip = r.get("unavailable") and r["arm"] != "router"
            t.add_row(r["arm"] + (f" [yellow](not run: {r['unavailable']} unavailable)[/]" if skip else ""),
                      str(r["n"]), _pct(r["accuracy"]), f"{_pct(r['ci_low'])}–{_pct(r['ci_high'])}",
                      "-" if skip else f"{r['delta_vs_router']:+.1%}", "-" if skip else f"{r['mcnemar_p']:.3g}",
                      f"{r['s_per_q']:.3f}", _pct(r.get("cached", 0.0)), f"{r['calls_per_q']:.2f}",
                      f"{r['tool_s_per_q']:.3f}", *[_pct(r[k]) for k in extra])
        out.print(t)
