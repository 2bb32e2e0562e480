"""Tool ablation: the standard arms, their table (``ablation.csv``) and its plot (``ablation.png``).

Arms: ``none`` (no tools), ``only:<tool>`` (each tool alone), ``without:<tool>`` (all tools minus each one),
``router`` (the router's choice per question, one round: the ``rules`` planner), ``planner:<name>`` (the router's
choice, then that planner, e.g. ``planner:escalate``; ``agent.planners``) and ``all`` (every tool). Each arm is
one ``run_batch`` in its own folder ``RUN/arms/<arm>/`` (``:`` written as ``-``), answered afresh on every
invocation (tool outputs come from the cache); the tool arms force their tools with the ``rules`` planner, and
arms with the same tool set are answered once and share the result.
The table compares every arm with ``router`` on the same questions: accuracy with its Wilson 95% interval,
the difference, the exact McNemar p-value, the cost per question (wall seconds, tool calls, seconds spent in
tool nodes: a call served from the tool cache costs its lookup) and how often each tool ran.
"""

from __future__ import annotations

import csv
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.fileio import atomic_open
from agent.core.schema import Answer, Question
from agent.data import spreadsheet_cell
from agent.runner import fallback_answer, run_batch
from agent.services import Services
from agent.toolpool import ToolPool
from agent.trace.events import TraceWriter
from eval.metrics import accuracy, paired_comparison, wilson_interval

COLUMNS = ["arm", "n", "accuracy", "ci_low", "ci_high", "delta_vs_router", "mcnemar_p", "s_per_q", "calls_per_q",
           "tool_s_per_q", "cached", "unavailable"]
PLANNER_ARM = "planner:"


def arm_specs(tools: Sequence[str], planners: Sequence[str] = ()) -> list[tuple[str, list[str] | None]]:
    """``(name, forced tools)`` of every arm, in table order; ``None`` means the router decides (and, for
    ``planner:<name>``, that planner goes on from it)."""
    tools = list(tools)
    return ([("none", [])] + [(f"only:{t}", [t]) for t in tools]
            + [(f"without:{t}", [x for x in tools if x != t]) for t in tools] + [("router", None)]
            + [(f"{PLANNER_ARM}{p}", None) for p in planners] + [("all", tools)])


def arm_planner(name: str) -> str:
    """The planner an arm runs: ``planner:<name>``'s, else ``rules``."""
    return name.removeprefix(PLANNER_ARM) if name.startswith(PLANNER_ARM) else "rules"


class ArmStopped(Exception):
    """The run was stopped (Ctrl-C) before every row of ``arm`` was answered: ``done`` of ``rows`` are in its
    ``results.jsonl`` (beside the ``cut`` short, recorded incomplete); no metrics are written."""

    def __init__(self, arm: str, done: int, rows: int, cut: int = 0) -> None:
        super().__init__(f"stopped in arm {arm}: {done} of {rows} rows done")
        self.arm, self.done, self.rows, self.cut = arm, done, rows, cut


@dataclass
class ArmRun:
    """One arm's answers (every question, fallbacks included) and cost."""

    name: str
    tools: list[str] | None
    answers: dict[str, Answer]
    seconds: float
    same_as: str | None = None  # answered by an earlier arm with the same tool set
    tool_runs: dict[str, dict[str, int]] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)  # its tools that could not run (not measured)

    @property
    def cached_share(self) -> float:
        """Share of the successful tool calls served from the tool cache (an earlier arm or run computed them):
        the seconds of an arm with a high share are lookups, not tool work."""
        ran = sum(c["ran"] for c in self.tool_runs.values())
        return sum(c["cached"] for c in self.tool_runs.values()) / ran if ran else 0.0

    @property
    def s_per_q(self) -> float:
        return self.seconds / len(self.answers) if self.answers else 0.0

    @property
    def calls_per_q(self) -> float:
        """Tool calls per question (every call the graph made, cached or not)."""
        return sum(len(a.evidence) for a in self.answers.values()) / len(self.answers) if self.answers else 0.0

    @property
    def tool_s_per_q(self) -> float:
        """Seconds per question spent in ``run_tool`` nodes (tools run in parallel count each)."""
        total = sum(st.seconds for a in self.answers.values() for st in a.steps if st.node == "run_tool")
        return total / len(self.answers) if self.answers else 0.0

    def correct(self, questions: Sequence[Question]) -> list[bool]:
        return [self.answers[q.id].answer == q.answer for q in questions]


def count_tool_runs(answers: Sequence[Answer]) -> dict[str, dict[str, int]]:
    """Per tool: calls made (``called``), calls that succeeded (``ran``: a failed call did not run the tool in any
    sense that matters to the answer), of those served from the cache, and failed calls."""
    out: dict[str, dict[str, int]] = {}
    for a in answers:
        for r in a.evidence:
            c = out.setdefault(r.tool, {"called": 0, "ran": 0, "cached": 0, "failed": 0})
            c["called"] += 1
            c["ran"] += int(r.ok)
            c["cached"] += int(r.ok and r.cached)
            c["failed"] += int(not r.ok)
    return out


def unavailable_tools(arm: ArmRun, services: Services) -> list[str]:
    """The arm's tools that could not run in this process (their load failed: weights missing, no knowledge
    base): an arm that forces them did not measure them."""
    named = arm.tools if arm.tools is not None else sorted(arm.tool_runs)
    return [t for t in named if services.unavailable(t) is not None]


def arm_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "arms" / name.replace(":", "-")


def run_arm(name: str, tools: list[str] | None, questions: list[Question], services: Services, run_dir: Path,
            trace: TraceWriter, *, batch_size: int = 8, debias: bool = False,
            on_done: Callable[[Answer], None] | None = None, stop: threading.Event | None = None) -> ArmRun:
    """Answer every question afresh with ``tools`` forced (``None``: the router) in ``RUN/arms/<arm>/``, with the
    arm's planner (``arm_planner``). ``stop`` set (Ctrl-C) before every row is answered: ``ArmStopped``."""
    folder = arm_dir(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("results.jsonl", "failed.csv"):  # each invocation answers every row again
        (folder / stale).unlink(missing_ok=True)
    got: dict[str, Answer] = {}

    def done(a: Answer) -> None:
        got[a.id] = a
        if on_done:
            on_done(a)

    t0 = time.perf_counter()
    arm = services.replace(artifacts_dir=folder / "artifacts", pool=ToolPool(),  # its own slots: arms never share
                           planner=dataclasses.replace(services.planner, name=arm_planner(name)))
    summary = run_batch(list(questions), arm, folder, batch_size=batch_size,  # calls still stuck from an earlier arm
                        forced_tools=tools, on_done=done, trace=trace.tagged(arm=name), debias=debias, stop=stop)
    if summary.interrupted or (stop is not None and stop.is_set() and summary.incomplete):  # no metrics over cut rows
        raise ArmStopped(name, summary.rows - summary.unanswered - summary.incomplete, summary.rows,
                         summary.incomplete)
    seconds = time.perf_counter() - t0
    answers = {q.id: got.get(q.id) or fallback_answer(q, "not answered") for q in questions}
    run = ArmRun(name, tools, answers, seconds, tool_runs=count_tool_runs(list(answers.values())))
    run.unavailable = unavailable_tools(run, services)
    return run


def run_ablation(questions: list[Question], services: Services, run_dir: Path, trace: TraceWriter,
                 tools: Sequence[str], *, router: ArmRun | None = None, planners: Sequence[str] = (),
                 batch_size: int = 8, debias: bool = False, on_arm: Callable[[str], None] | None = None,
                 on_done: Callable[[Answer], None] | None = None,
                 stop: threading.Event | None = None) -> list[ArmRun]:
    """Every arm of ``arm_specs(tools, planners)``; ``router`` reuses an already answered arm of its name (the
    ``router`` arm, or the ``planner:<name>`` arm of the run's own planner)."""
    runs: list[ArmRun] = []
    by_tools: dict[tuple[str, ...], ArmRun] = {}
    for name, forced in arm_specs(tools, planners):
        if router is not None and name == router.name:
            runs.append(router)
            continue
        key = tuple(sorted(forced)) if forced is not None else None
        if key is not None and key in by_tools:
            src = by_tools[key]
            runs.append(ArmRun(name, forced, src.answers, src.seconds, same_as=src.name, tool_runs=src.tool_runs,
                               unavailable=src.unavailable))
            continue
        if on_arm:
            on_arm(name)
        arm = run_arm(name, forced, questions, services, run_dir, trace, batch_size=batch_size, debias=debias,
                      on_done=on_done, stop=stop)
        runs.append(arm)
        if key is not None:
            by_tools[key] = arm
    return runs


def table_rows(arms: Sequence[ArmRun], questions: Sequence[Question], tools: Sequence[str]) -> list[dict[str, Any]]:
    """One row per arm, compared with ``router`` on the same questions. The ``ran:<tool>`` columns after
    ``COLUMNS`` give the share of questions each tool ran on successfully (served from the cache or not).
    ``unavailable`` names the arm's tools that could not run: such an arm is not compared (``delta_vs_router`` and
    ``mcnemar_p`` empty), as it did not measure what its name says. ``cached`` is the share of its tool results
    served from the cache: its seconds are then lookups, not tool work."""
    router = next(a for a in arms if a.name == "router").correct(questions)
    rows = []
    for a in arms:
        correct = a.correct(questions)
        n, k = len(correct), sum(correct)
        lo, hi = wilson_interval(k, n)
        _, _, p = paired_comparison(correct, router)
        row: dict[str, Any] = {"arm": a.name, "n": n, "accuracy": accuracy(correct), "ci_low": lo, "ci_high": hi,
                               "delta_vs_router": accuracy(correct) - accuracy(router), "mcnemar_p": p,
                               "s_per_q": a.s_per_q, "calls_per_q": a.calls_per_q, "tool_s_per_q": a.tool_s_per_q,
                               "cached": a.cached_share, "unavailable": ",".join(a.unavailable)}
        if a.unavailable and a.name != "router":
            row["delta_vs_router"] = row["mcnemar_p"] = None
        for t in tools:
            row[f"ran:{t}"] = a.tool_runs.get(t, {}).get("ran", 0) / n if n else 0.0
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    """``ablation.csv`` (atomically): ``COLUMNS`` then the ``ran:<tool>`` columns; floats with 4 decimals."""
    path = Path(path)
    fields = COLUMNS + [c for c in rows[0] if c not in COLUMNS] if rows else COLUMNS
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: spreadsheet_cell(f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def plot_table(rows: list[dict[str, Any]], path: Path, title: str = "tool ablation") -> Path:
    """Accuracy with 95% intervals (router highlighted, Δ and McNemar p annotated) beside seconds per question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["arm"] for r in rows]
    y = list(range(len(rows)))[::-1]
    acc = [r["accuracy"] for r in rows]
    err = [[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]]
    colors = ["#d1495b" if n == "router" else "#00798c" for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True,
                                   gridspec_kw={"width_ratios": [3, 1.4]})
    ax1.barh(y, acc, xerr=err, color=colors, capsize=3, alpha=0.9)
    for yi, r in zip(y, rows):
        note = "baseline" if r["arm"] == "router" else f"not run: {r['unavailable']} unavailable" \
            if r.get("unavailable") else f"Δ {r['delta_vs_router']:+.1%}  p={r['mcnemar_p']:.3g}"
        ax1.text(min(r["ci_high"] + 0.02, 1.02), yi, note, va="center", fontsize=8)
    ax1.set_yticks(y, names)
    ax1.set_xlim(0, 1.35)
    ax1.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax1.set_xlabel(f"accuracy (95% Wilson interval), n={rows[0]['n'] if rows else 0}")
    ax1.axvline(next((r["accuracy"] for r in rows if r["arm"] == "router"), 0), color="#d1495b", lw=0.8, ls="--")
    ax2.barh(y, [r["s_per_q"] for r in rows], color="#edae49")
    ax2.set_xlabel("seconds per question")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
