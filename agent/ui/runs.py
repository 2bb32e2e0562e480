"""The Runs tab's data: a run directory's questions as table rows, their filters, one question's trace page, and
the ablation table and plot when the run has them. Plain functions of the files ``vqa batch``/``vqa eval`` write.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import VqaError
from agent.core.schema import Answer, brief_error
from agent.runner import ResultsLog

COLUMNS = ["id", "answer", "gold", "correct", "confidence", "tools", "failed"]


@dataclass(frozen=True)
class Row:
    id: str
    answer: str
    gold: str
    correct: str  # "yes", "no", or "" without a gold letter
    confidence: float
    tools: str
    failed: str  # tools that failed and why the question failed; "" when nothing did

    def cells(self) -> list[str | float]:
        return [self.id, self.answer, self.gold, self.correct, round(self.confidence, 4), self.tools, self.failed]


def _row(a: Answer) -> Row:
    failed = [f"{r.tool}: {brief_error(r.error)}" for r in a.evidence if not r.ok]
    failed += [f"{t}: {brief_error(why)}" for t, why in (a.route.skipped.items() if a.route else ())]
    failed += [f"question: {e}" for e in a.errors] if a.failed else []
    gold = a.gold or ""
    return Row(a.id, a.answer, gold, ("yes" if a.answer == gold else "no") if gold else "",
               a.probs.get(a.answer, 0.0), ", ".join(a.tools), "; ".join(failed))


def answers_dir(run_dir: Path) -> Path:
    """Where a run's answers are: the run directory (``vqa batch``), or for a ``vqa eval`` run the folder of its
    main arm (``arms/router``, or ``arms/planner-<name>`` when it ran another planner; else the first arm)."""
    if (run_dir / "results.jsonl").is_file() or not (run_dir / "arms").is_dir():
        return run_dir
    arms = sorted(p.parent for p in (run_dir / "arms").glob("*/results.jsonl"))
    main = [a for a in arms if a.name == "router"] or [a for a in arms if a.name.startswith("planner-")] or arms
    return main[0] if main else run_dir


def load_run(run_dir: Path) -> list[Row]:
    """Every question of the run: the answered ones (``results.jsonl``) and the rows that got a fallback
    (``failed.csv``), in file order."""
    run_dir = answers_dir(Path(run_dir).expanduser())
    results = run_dir / "results.jsonl"
    if not results.is_file():
        raise VqaError(f"expected a run directory with results.jsonl, found none in {run_dir}; make one with "
                       "`vqa batch CSV --images DIR --run-dir RUN` or `vqa eval`")
    rows = [_row(a) for a in ResultsLog(results).load().values()]
    seen = {r.id for r in rows}
    failed = run_dir / "failed.csv"
    if failed.is_file():
        with failed.open(encoding="utf-8", newline="") as f:
            for rec in csv.DictReader(f):
                if rec.get("id") and rec["id"] not in seen:
                    rows.append(Row(rec["id"], rec.get("fallback_answer", ""), "", "", 0.0, "",
                                    f"question: {rec.get('reason', 'failed')}"))
    return rows


def tools_of(rows: list[Row]) -> list[str]:
    return sorted({t for r in rows for t in r.tools.split(", ") if t})


def filtered(rows: list[Row], *, wrong: bool = False, failed: bool = False, low: float | None = None,
             tool: str | None = None) -> list[Row]:
    """Rows that are wrong (with a gold letter), failed (a tool or the question), below ``low`` confidence, or
    ran ``tool``; every filter given must hold."""
    return [r for r in rows
            if (not wrong or r.correct == "no") and (not failed or r.failed) and (low is None or r.confidence < low)
            and (not tool or tool in r.tools.split(", "))]


def trace_page(run_dir: Path, qid: str) -> str:
    """The question's trace as the self-contained page of ``vqa trace show --html``, inside an iframe."""
    from agent.trace.html import render_html
    from agent.trace.read import questions, read_trace, trace_path

    path = trace_path(Path(run_dir).expanduser())
    views = questions(read_trace(path), qid=qid)
    if not views:
        raise VqaError(f"no trace events for question {qid!r} in {path}")
    page = render_html(views, path.parent, title=f"{run_dir} · {qid}")
    return (f'<iframe class="trace-page" title="trace of {html.escape(qid)}" srcdoc="{html.escape(page, quote=True)}"'
            ' style="width:100%;height:900px;border:1px solid #ddd;border-radius:8px"></iframe>')


def ablation(run_dir: Path) -> tuple[list[list[str]], list[str], Path | None]:
    """The ablation table's rows and header (``ablation.csv``) and its plot (``ablation.png``), when present."""
    run_dir = Path(run_dir).expanduser()
    table, plot = run_dir / "ablation.csv", run_dir / "ablation.png"
    header: list[str] = []
    rows: list[list[str]] = []
    if table.is_file():
        with table.open(encoding="utf-8", newline="") as f:
            header, *rows = list(csv.reader(f)) or [[]]
    return rows, header, plot if plot.is_file() else None
