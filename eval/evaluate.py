"""``vqa eval``: accuracy (overall and per category) with 95% intervals, calibration, circular evaluation and
the tool ablation, written to ``RUN/metrics.json`` (and ``RUN/ablation.csv`` / ``RUN/ablation.png``).

Every invocation answers every labelled row afresh (``RUN/arms/router/`` for the router's choice, one folder
per ablation arm) with tool outputs served from the tool cache (``RUN/cache/`` by default), so a rerun costs
only the reasoner; every node lands in ``RUN/trace.jsonl`` tagged with its arm.

- Categories: the CSV's ``category`` column when any row has one, else the router's tool set (``ocr``,
  ``detect+som``, ``none``).
- Fallback answers (a missing image, a reasoner failure) count with the letter the submission would get.
- Calibration (router arm, fallbacks left out): ECE of the chosen option's probability (10 equal-width bins),
  the NLL-minimising temperature fitted on these rows (in-sample: fit on a labelled set, apply with
  ``--temperature`` elsewhere), and ECE/NLL at the fitted and at the given temperature.
- Circular (``--circular``): the router arm's reasoner is asked every rotation of the options (tools run
  once); a question counts only if every rotation picks the gold option; position bias compares how often
  each shown letter is chosen with how often it is the gold one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.calibration import RotatingReasoner
from agent.core.errors import DataError
from agent.core.probs import apply_temperature, chosen_letter
from agent.core.schema import Answer, Question
from agent.data import RowError
from agent.services import Services
from agent.trace.events import TRACE_FILE, TraceWriter
from eval.ablation import PLANNER_ARM, plot_table, run_ablation, run_arm, table_rows, write_table
from eval.metrics import (
    accuracy,
    circular_accuracy,
    expected_calibration_error,
    fit_temperature,
    nll,
    position_bias,
    wilson_interval,
)
from eval.report import Ablation, CacheStats, Calibration, Circular, Metrics, Summary


def summary(correct: Sequence[bool]) -> Summary:
    n, k = len(correct), sum(correct)
    lo, hi = wilson_interval(k, n)
    return Summary(n=n, correct=k, accuracy=accuracy(correct), ci_low=lo, ci_high=hi)


def categories(questions: Sequence[Question], answers: dict[str, Answer]) -> tuple[str, dict[str, str]]:
    """``(source, qid -> category)``: the CSV column when present, else the router's tool set."""
    if any(q.category for q in questions):
        return "column", {q.id: q.category or "(none)" for q in questions}
    return "router", {q.id: "+".join(answers[q.id].route.tools if answers[q.id].route else []) or "none"
                      for q in questions}


def calibration(questions: Sequence[Question], answers: dict[str, Answer],
                temperature: float | None) -> Calibration:
    scored = [(answers[q.id], q.answer) for q in questions if not answers[q.id].failed]
    probs = [a.probs for a, _ in scored]
    gold = [g for _, g in scored]

    def ece_at(t: float) -> float:
        conf, ok = [], []
        for p, g in zip(probs, gold):
            pt = apply_temperature(p, t) if t != 1.0 else p
            best = chosen_letter(pt, list(pt))
            conf.append(pt[best])
            ok.append(best == g)
        return expected_calibration_error(conf, ok)

    fitted = fit_temperature(probs, gold)
    out = Calibration(n=len(scored), bins=10, ece=ece_at(1.0), nll=nll(probs, gold), temperature_fit=fitted,
                      ece_at_fit=ece_at(fitted), nll_at_fit=nll(probs, gold, fitted), temperature=temperature)
    if temperature is not None:
        out.ece_at_temperature, out.nll_at_temperature = ece_at(temperature), nll(probs, gold, temperature)
    return out


def circular_metrics(questions: Sequence[Question], records: dict[str, list[dict[str, Any]]]) -> Circular:
    """From the rotation records of ``RotatingReasoner`` (a question without records counts as wrong)."""
    per_q, chosen, gold_pos = [], [], []
    for q in questions:
        recs = records.get(q.id, [])
        per_q.append([r["chosen"] == q.answer for r in recs] or [False])
        for r in recs:
            chosen.append(r["chosen_position"])
            gold_pos.append(q.letters[r["order"].index(q.answer)])
    all_rotations = [ok for rs in per_q for ok in rs]
    letters = sorted({k for q in questions for k in q.letters})
    return Circular(n=len(questions), circular_accuracy=circular_accuracy(per_q),
                    ci=list(wilson_interval(sum(all(rs) for rs in per_q), len(per_q))),
                    rotation_accuracy=accuracy(all_rotations), evaluations=len(all_rotations),
                    position_bias=position_bias(chosen, gold_pos, letters))


def labelled(rows: Sequence[Question | RowError], csv_path: Path | None = None) -> tuple[list[Question], int, int]:
    """``(questions with a gold letter, row errors, rows without one)``; no gold at all is a ``DataError``."""
    questions = [r for r in rows if isinstance(r, Question)]
    with_gold = [q for q in questions if q.answer is not None]
    if not with_gold:
        raise DataError(f"expected an 'answer' column with the gold letter in {csv_path or 'the CSV'}, found no "
                        "labelled row; vqa eval needs labelled rows (e.g. examples/train.csv)")
    return with_gold, sum(isinstance(r, RowError) for r in rows), len(questions) - len(with_gold)


def evaluate(rows: Sequence[Question | RowError], services: Services, run_dir: Path, *, ablate: bool = False,
             ablate_tools: Sequence[str] = (), ablate_planners: Sequence[str] = (), circular: bool = False,
             debias: bool = False,
             temperature: float | None = None, batch_size: int = 8, csv_path: Path | None = None,
             on_arm: Callable[[str], None] | None = None, on_done: Callable[[Answer], None] | None = None,
             trace: TraceWriter | None = None, identity: dict[str, Any] | None = None,
             provenance: dict[str, Any] | None = None, forced_tools: list[str] | None = None,
             stop: threading.Event | None = None) -> Metrics:
    """Run the evaluation and write ``metrics.json`` (plus the ablation table and plot); returns the metrics.

    ``trace``: where node events go (default ``run_dir/trace.jsonl``, no export sinks). The metrics are those of
    the run's own planner: the ``router`` arm for ``rules``, else ``planner:<name>`` (also an ablation arm, beside
    ``router`` and the ``ablate_planners`` arms).
    ``identity`` and ``provenance`` (``agent.rundir``): what produced the run, recorded in ``metrics.json`` as in
    ``run.json``. ``forced_tools``: the main arm runs these tools on every question instead of the router's choice
    (``--tools``; not with the ablation, whose arms compare with the router).
    ``stop`` (Ctrl-C): set, no more rows start; an arm left unfinished raises ``eval.ablation.ArmStopped`` and no
    metrics are written.
    """
    run_dir = Path(run_dir)
    questions, row_errors, unlabelled = labelled(rows, csv_path)
    trace = trace if trace is not None else TraceWriter(run_dir / TRACE_FILE)
    cache = services.cache
    before = (cache.computed, cache.served, cache.failed) if cache else (0, 0, 0)

    records: dict[str, list[dict[str, Any]]] = {}
    router_services = services
    main = "router" if services.planner.name == "rules" else f"{PLANNER_ARM}{services.planner.name}"
    if circular:
        arm_trace = trace.tagged(arm=main)

        def keep(qid: str, recs: list[dict[str, Any]], start: float, end: float) -> None:
            records[qid] = recs
            arm_trace.rotations(qid, recs, start, end)

        router_services = services.replace(reasoner=RotatingReasoner(services.reasoner, average=debias,
                                                                     on_rotations=keep))
    if on_arm:
        on_arm(main)
    router = run_arm(main, forced_tools, questions, router_services, run_dir, trace, batch_size=batch_size,
                     debias=debias and not circular, on_done=on_done, stop=stop)
    correct = router.correct(questions)
    source, cats = categories(questions, router.answers)
    per_cat = {c: summary([ok for q, ok in zip(questions, correct) if cats[q.id] == c])
               for c in sorted(set(cats.values()))}
    metrics = Metrics(
        csv=str(csv_path) if csv_path else None, run=trace.run, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        reasoner=getattr(services.reasoner, "name", "?"), **summary(correct).model_dump(), row_errors=row_errors,
        unlabelled=unlabelled, failed=sum(a.failed for a in router.answers.values()),
        s_per_q=router.s_per_q, debias=debias, category_source=source, per_category=per_cat,
        tool_runs=router.tool_runs, calibration=calibration(questions, router.answers, temperature),
        circular=circular_metrics(questions, records) if circular else None, ablation=None,
        identity=identity, provenance=provenance,
    )
    if ablate:
        planners = list(dict.fromkeys([*ablate_planners] + ([services.planner.name] if main != "router" else [])))
        arms = run_ablation(questions, services, run_dir, trace, ablate_tools, router=router, planners=planners,
                            batch_size=batch_size, debias=debias, on_arm=on_arm, on_done=on_done, stop=stop)
        rows_ = table_rows(arms, questions, ablate_tools)
        write_table(rows_, run_dir / "ablation.csv")
        plot_table(rows_, run_dir / "ablation.png", title=f"tool ablation · {metrics.reasoner} · n={len(questions)}")
        metrics.ablation = Ablation(table="ablation.csv", plot="ablation.png", tools=list(ablate_tools), rows=rows_,
                                    same_as={a.name: a.same_as for a in arms if a.same_as},
                                    tool_runs={a.name: a.tool_runs for a in arms})
    if cache is not None:
        metrics.cache = CacheStats(root=str(cache.root), computed=cache.computed - before[0],
                                   served=cache.served - before[1], failed=cache.failed - before[2])
    metrics.write(run_dir / "metrics.json")
    return metrics

