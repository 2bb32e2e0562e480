"""``RUN/metrics.json`` as typed data: what ``vqa eval`` writes and reads back.

The JSON keys are the models' fields, in order; a key the untyped file left out when it did not apply (``cache``
without a tool cache, ``ece_at_temperature``/``nll_at_temperature`` without ``--temperature``) is still left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, model_serializer

from agent.core.fileio import atomic_write
from agent.core.redact import redact

METRICS_VERSION = 1


class _Record(BaseModel):
    omit_if_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in self.omit_if_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Summary(_Record):
    """Accuracy of ``n`` questions with its Wilson 95% interval."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float


class ToolRuns(_Record):
    """Calls of a tool: made, succeeded (``ran``), of those served from the cache, and failed."""

    called: int = 0
    ran: int = 0
    cached: int = 0
    failed: int = 0


class Calibration(_Record):
    """ECE (``bins`` equal-width bins) and NLL as answered, at the fitted temperature and at the given one."""

    omit_if_none = ("ece_at_temperature", "nll_at_temperature")

    n: int
    bins: int
    ece: float
    nll: float
    temperature_fit: float
    ece_at_fit: float
    nll_at_fit: float
    temperature: float | None
    ece_at_temperature: float | None = None
    nll_at_temperature: float | None = None


class LetterBias(_Record):
    chosen: float
    correct: float
    gap: float


class Circular(_Record):
    """Circular evaluation: right under every rotation, per-rotation accuracy and position bias."""

    n: int
    circular_accuracy: float
    ci: list[float]
    rotation_accuracy: float
    evaluations: int
    position_bias: dict[str, LetterBias]


class Ablation(_Record):
    """Where the ablation table and plot are, and their rows (``eval.ablation.COLUMNS`` then ``ran:<tool>``)."""

    table: str
    plot: str
    tools: list[str]
    rows: list[dict[str, Any]]
    same_as: dict[str, str]
    tool_runs: dict[str, dict[str, ToolRuns]]


class CacheStats(_Record):
    """What the tool cache did in this invocation."""

    root: str
    computed: int
    served: int
    failed: int


class Metrics(_Record):
    """The whole file."""

    omit_if_none = ("cache", "identity", "provenance")

    version: int = METRICS_VERSION
    csv: str | None
    run: str
    created: str
    reasoner: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    row_errors: int
    unlabelled: int
    failed: int
    s_per_q: float
    debias: bool
    category_source: Literal["column", "router"]
    per_category: dict[str, Summary]
    tool_runs: dict[str, ToolRuns]
    calibration: Calibration
    circular: Circular | None
    ablation: Ablation | None
    cache: CacheStats | None = None
    identity: dict[str, Any] | None = None  # what shapes the answers, as in run.json (agent.rundir.identity)
    provenance: dict[str, Any] | None = None  # what else produced them: version, git commit, seed, command ...

    def write(self, path: Path) -> None:
        atomic_write(path, redact(self.model_dump_json(indent=2)))  # agent.core.redact: no secret is written

    @classmethod
    def read(cls, path: Path) -> Metrics:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
