"""The Python API: ``Orchestrator``, what ``vqa ask``, ``batch``, ``eval`` and ``chat`` are built on.

In a notebook::

    from agent import Orchestrator
    vqa = Orchestrator(reasoner="evidence")
    vqa.ask("examples/images/coffee.jpg", "What is written on the cup?", ["tea", "coffee"]).answer

The settings come from the same place as the command line's (``agent.config.load_settings``): the keyword
arguments are the flags (``model=``, ``quant=``, ``max_pixels=`` ...), then ``config=`` (a TOML file), then
``VQA_*`` variables. The reasoner and the tools are loaded on the first call and reused by every later one, with
any run directory; ``close()`` (or leaving a ``with`` block) releases them. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Settings, load_settings
from agent.core.errors import ConfigError, DataError, ImageError, InputError
from agent.core.fileio import atomic_write
from agent.core.redact import remember_settings
from agent.core.schema import LETTERS, Answer, Question

if TYPE_CHECKING:
    from PIL import Image

    from agent.distributed import Cluster
    from agent.runner import BatchSummary
    from agent.services import Services
    from agent.trace.events import TraceWriter
    from agent.visdial.rank import RankRecord
    from eval.report import Metrics

ImageInput = str | os.PathLike | bytes | bytearray | memoryview
Options = Sequence[str] | Mapping[str, str]
_PNG_MODES = ("1", "L", "LA", "I", "P", "RGB", "RGBA")


def make_question(text: str, options: Options, *, image: Path | None = None, id: str = "ask") -> Question:
    """A ``Question`` from its text and options (a list, lettered a, b, c ... in order, or ``{letter: text}``);
    bad input is an ``InputError`` saying what was expected."""
    from pydantic import ValidationError

    if isinstance(options, str):
        raise InputError(f"expected the options as a list or a {{letter: text}} dict, found the string {options!r}")
    opts = dict(options) if isinstance(options, Mapping) else dict(zip(LETTERS, options))
    if not isinstance(options, Mapping) and len(options) > len(LETTERS):
        raise InputError(f"expected 2-{len(LETTERS)} options, found {len(options)}")
    try:
        return Question(id=id, image=image, text=text, options=opts)
    except ValidationError as exc:
        raise InputError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def answer_schema() -> str:
    """The JSON Schema (draft 2020-12) of the answer record: what ``vqa ask --json`` prints, ``results.jsonl``
    holds one per line, ``Orchestrator.ask`` returns and ``/ask`` of ``vqa ui`` answers; published as
    ``docs/answer.schema.json`` by ``vqa dev schema``. A tool's evidence may carry more fields than ``tool``."""
    import json

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "answer.schema.json",
              **Answer.model_json_schema(mode="serialization")}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def trace_writer(run_dir: Path) -> TraceWriter:
    """``RUN/trace.jsonl`` with the export sinks the environment asks for (``VQA_TRACE_EXPORT``)."""
    from agent.trace.events import TRACE_FILE, TraceWriter
    from agent.trace.export import sinks_from_env

    return TraceWriter(Path(run_dir) / TRACE_FILE, sinks=sinks_from_env())


def tool_list(tools: str | Sequence[str] | None) -> list[str] | None:
    """``None`` (the router decides), or the checked tool names of ``"ocr,detect"``, ``["ocr"]``, ``"all"``,
    ``"none"``; an unknown name is a ``ConfigError``."""
    from tools import parse_tool_list

    if tools is None:
        return None
    if not isinstance(tools, str) and not tools:
        return []
    try:
        return parse_tool_list(tools if isinstance(tools, str) else ",".join(tools))
    except ValueError as exc:
        raise ConfigError(f"tools: {exc}") from None


class Orchestrator:
    """Answers questions about images: one (``ask``), a CSV (``batch``) or a labelled CSV (``eval``).

    ``tools``: force these tools on every question (``"ocr,detect"``, a list, ``"all"``, ``"none"``; default: the
    router picks per question). ``settings``: an already resolved ``Settings`` (the command line passes its own);
    otherwise the keyword arguments are the settings by name, with ``config`` and ``VQA_*`` under them.
    ``command``: the command line recorded in run directories (the CLI passes ``vqa ...``). ``cluster``
    (``agent.distributed.Cluster``): ``batch`` and ``eval`` answer on Ray workers, each loading the reasoner and tools;
    this process alone writes the run directory.
    """

    def __init__(self, model: str | None = None, backend: str | None = None, reasoner: str | None = None,
                 tools: str | Sequence[str] | None = None, planner: str | None = None,
                 config: str | os.PathLike | None = None, *, settings: Settings | None = None,
                 command: str | None = None, cluster: Cluster | None = None, **flags: Any) -> None:
        if settings is None:
            given = {"model": model, "backend": backend, "reasoner": reasoner, "planner": planner, **flags}
            settings = load_settings(Path(config) if config is not None else None, given)
        elif any(v is not None for v in (model, backend, reasoner, planner, config)) or flags:
            raise ConfigError("give either settings= or the settings by name (model=, reasoner=, config= ...), "
                              "not both")
        from agent.services import register_plugins

        register_plugins(settings)  # plug-in tools of the config file, before `tools`
        remember_settings(settings)  # its API key and URL password are never written (agent.core.redact)
        self.settings = settings
        self.tools = tool_list(tools)
        self.command = command
        self.cluster = cluster  # agent.distributed: batch and eval answer on Ray workers
        self.cluster_note: str | None = None  # what the workers did in the last batch/eval on a cluster
        self._services: Services | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._closed = False
        self._lock = threading.RLock()  # a web UI calls from several threads: load once, close once

    # ------------------------------------------------------------------ loading and the run-time services

    def load(self) -> Orchestrator:
        """Build every configured tool and load the reasoner now (the first call does it otherwise): a bad model
        or tool setting fails here, before any question runs."""
        with self._lock:
            if self._closed:
                raise ConfigError("this Orchestrator is closed; create a new one")
            if self._services is None:
                self._services = self._open()
        return self

    def _open(self) -> Services:
        """The services every run shares: the reasoner (loaded), the router and the configured tools (built)."""
        from agent.services import open_services

        return open_services(self.settings)

    def services(self, run_dir: str | os.PathLike | None = None, *, images_root: str | os.PathLike | None = None,
                 cache: bool = True) -> Services:
        """The graph's services for one run (loaded once, shared): tool images under ``RUN/artifacts``, image
        paths kept inside ``images_root``, and the tool cache the ``cache`` setting names (``cache=False``:
        none)."""
        from agent.cache import open_cache

        base = self.load()._services
        assert base is not None
        run = Path(run_dir) if run_dir is not None else None
        return base.replace(artifacts_dir=run / "artifacts" if run else None,
                            images_root=Path(images_root) if images_root is not None else None,
                            cache=open_cache(self.settings.cache, run) if cache else None)

    @contextmanager
    def _run_services(self, run: Path, images: Path, planners: Sequence[str] = ()) -> Iterator[Services]:
        """The services a batch or eval answers with: ``services`` here, or, on a cluster, driver services that
        hand questions to Ray workers (started and ready: a bad model fails before any question). The reasoner
        object on the driver only names the run and is never loaded."""
        s = self.settings
        if self.cluster is None:
            if s.base_url and "," in s.base_url:
                raise ConfigError(f"--base-url {s.base_url}: a comma list of servers needs --ray (each worker takes "
                                  "one in turn); without Ray, give one URL")
            services = self.services(run, images_root=images)
            if "vlm" in planners:  # a planner:vlm ablation arm needs the tool-calling model too
                from agent.services import with_tool_caller

                services = with_tool_caller(services, s)
            yield services
            return
        from agent.planners import PlannerSettings, check_planner
        from agent.reasoners import load_reasoner
        from agent.services import Services

        check_planner(s.planner)
        reasoner = load_reasoner(s.reasoner, **s.reasoner_kwargs())  # not loaded: the workers do that
        with self.cluster.executor(s, run, images_root=images) as executor:
            yield Services(reasoner=reasoner, tool_settings=s.tool_settings(), artifacts_dir=run / "artifacts",
                           images_root=images, executor=executor, planner=PlannerSettings.from_settings(s))
            self.cluster_note = executor.describe()

    def close(self) -> None:
        """Release the reasoner (memory, connections) and the images ``ask`` saved without a run directory."""
        with self._lock:
            self._closed = True
            services, self._services = self._services, None
        try:
            if services is not None:
                services.close()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def provenance(self, tools: list[str] | None = None, *, limit: int | None = None) -> dict[str, Any]:
        """What a run records about what produced it: ``{"identity": ..., "provenance": ...}``."""
        from agent.rundir import identity, provenance

        return {"identity": identity(self.settings, tools),
                "provenance": provenance(self.settings, command=self.command, limit=limit)}

    # ------------------------------------------------------------------ one question

    def ask(self, image: ImageInput | Image.Image, question: str, options: Options, *,
            tools: str | Sequence[str] | None = None, run_dir: str | os.PathLike | None = None,
            id: str = "ask", on_step: Callable[[str, dict], None] | None = None) -> Answer:
        """Answer one question about one image (a path, a PIL image or the file's bytes) with 2-5 options (a
        list, or ``{letter: text}``). ``tools``: force tools for this call (default: the orchestrator's). With
        ``run_dir``: the trace, the tool images, the tool cache, ``run.json`` and the record in
        ``results.jsonl`` go there. A bad image gives a fallback answer (``answer.failed``), as in a batch.
        ``on_step(node, update)``: called as each step of the graph finishes (a status line)."""
        from agent.rundir import identity, provenance, record
        from agent.runner import ResultsLog, ask as run_ask

        q = make_question(question, options, id=id)
        run = Path(run_dir) if run_dir is not None else None
        q = q.model_copy(update={"image": self._image_path(image, run)})
        forced = tool_list(tools) if tools is not None else self.tools
        services = self.services(run, cache=run is not None)
        if run is None:
            return run_ask(services, q, forced_tools=forced, on_step=on_step)
        record(run, identity(self.settings, forced), provenance(self.settings, command=self.command))
        answer = run_ask(services, q, forced_tools=forced, trace=trace_writer(run), on_step=on_step)
        ResultsLog(run / "results.jsonl").append(answer)
        return answer

    def rank(self, image: ImageInput | Image.Image, question: str, candidates: Sequence[str], *,
             history: Sequence[tuple[str, str]] = (), caption: str = "", tools: str | Sequence[str] | None = None,
             rank_score: str = "mean", run_dir: str | os.PathLike | None = None, id: str = "rank") -> RankRecord:
        """Rank free-form ``candidates`` (2 or more) for ``question`` about ``image``, given the earlier rounds
        (``history``: question-answer pairs) and the photo's ``caption``, through the graph (the router's tools run
        and their evidence is used; ``agent.visdial``). ``record.top(rank_score)`` lists the best. Raises
        ``InputError`` when the candidates are unusable or the photo cannot be ranked, ``ConfigError`` when the
        reasoner cannot rank (a server without prompt log-probabilities)."""
        from agent.visdial.rank import Ranker, RankFailure, RankTask

        cands = tuple(str(c).strip() for c in candidates)
        if len(cands) < 2 or not all(cands):
            raise InputError(f"candidates: expected 2 or more non-empty answers, found {len(cands)} "
                             f"({sum(not c for c in cands)} empty)")
        if rank_score not in ("mean", "sum"):
            raise InputError(f"rank_score: expected 'mean' or 'sum', found {rank_score!r}")
        run = Path(run_dir) if run_dir is not None else None
        task = RankTask(id=id, image=self._image_path(image, run), question=question.strip(), candidates=cands,
                        caption=caption, history=tuple((str(q), str(a)) for q, a in history))
        forced = tool_list(tools) if tools is not None else self.tools
        ranker = Ranker(self.services(run, cache=run is not None), rank_score=rank_score,  # type: ignore[arg-type]
                        forced_tools=forced, trace=trace_writer(run) if run is not None else None)
        try:
            return ranker.rank(task)
        except RankFailure as exc:
            raise InputError(f"could not rank the candidates: {exc}") from None

    def _image_path(self, image: Any, run_dir: Path | None) -> Path:
        """A path as given (it must be a file); bytes and PIL images are saved by content hash under
        ``RUN/inputs/`` (or a temporary folder removed by ``close``)."""
        if isinstance(image, (str, os.PathLike)):
            path = Path(image).expanduser()
            if not path.is_file():
                raise ImageError("missing", f"image {path} does not exist or is not a file")
            return path
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            if not data:
                raise InputError("image: expected the bytes of an image file, found 0 bytes")
        elif hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image (PIL itself is not imported here)
            buf = io.BytesIO()
            (image if image.mode in _PNG_MODES else image.convert("RGB")).save(buf, format="PNG")
            data = buf.getvalue()
        else:
            raise InputError(f"image: expected a path, a PIL image or bytes, found {type(image).__name__}")
        if run_dir is not None:
            folder = run_dir / "inputs"
        else:
            with self._lock:
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="vqa-ask-")
                folder = Path(self._tmp.name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(data).hexdigest()[:20]}.img"
        if not path.exists():
            atomic_write(path, data)
        return path

    # ------------------------------------------------------------------ a CSV

    def batch(self, csv: str | os.PathLike, images: str | os.PathLike, run_dir: str | os.PathLike | None = None,
              out: str | os.PathLike | None = None, *, tools: str | Sequence[str] | None = None,
              force: bool = False, limit: int | None = None, on_start: Callable[[int], None] | None = None,
              on_done: Callable[[Answer], None] | None = None, stop: threading.Event | None = None) -> BatchSummary:
        """Answer a competition CSV (``id,path,question,a,b,c,d``) into ``out`` (default ``RUN/submission.csv``),
        resumably through ``run_dir`` (default ``runs/batch-<csv name>``); ``summary.answers`` holds one answer
        per row. ``limit``: only the first N rows. ``force``: set aside answers made with other settings.
        ``on_start(rows)`` is called once the model is loaded, ``on_done(answer)`` once per row, bad rows and
        rows finished in an earlier run first. ``stop``: set it (from a signal handler) to stop taking rows; the
        summary then says ``interrupted`` unless every row was done."""
        from agent.data import read_questions
        from agent.rundir import check_output, identity, locked, provenance, remember
        from agent.runner import run_batch

        csv_path, images = Path(csv), Path(images)
        if not images.is_dir():
            raise DataError(f"images folder {images} does not exist or is not a folder")
        run = Path(run_dir) if run_dir is not None else Path("runs") / f"batch-{csv_path.stem}"
        out_path = Path(out) if out is not None else run / "submission.csv"
        check_output(out_path, inputs=[csv_path], run_dir=run)
        rows = _first(read_questions(csv_path, images), limit)
        forced = tool_list(tools) if tools is not None else self.tools
        s = self.settings
        with locked(run, "vqa batch"):
            remember(run, identity(s, forced), force=force,
                     provenance=provenance(s, command=self.command, limit=limit))
            with self._run_services(run, images) as services:  # tool outputs survive reruns (the cache)
                if on_start:
                    on_start(len(rows))
                return run_batch(rows, services, run, batch_size=s.batch_size, forced_tools=forced, out=out_path,
                                 on_done=on_done, trace=trace_writer(run), debias=s.debias,
                                 temperature=s.temperature, stop=stop)

    def eval(self, csv: str | os.PathLike, images: str | os.PathLike, run_dir: str | os.PathLike, *,
             ablate: bool = False, ablate_tools: str | Sequence[str] | None = None,
             ablate_planners: str | Sequence[str] | None = None, circular: bool = False, limit: int | None = None, on_start: Callable[[int], None] | None = None,
             on_arm: Callable[[str], None] | None = None,
             on_done: Callable[[Answer], None] | None = None, stop: threading.Event | None = None) -> Metrics:
        """Accuracy with 95% intervals, calibration, and optionally circular evaluation and the tool ablation
        (``ablate_tools``: the tools the arms vary, default every available one; ``ablate_planners``: planners
        compared as ``planner:<name>`` arms, implying the ablation) on a labelled CSV; writes
        ``RUN/metrics.json`` (with what produced it) and returns it. ``limit``: only the first N rows.
        ``on_start(questions)`` once the model is loaded, ``on_arm(name)`` as each arm starts, ``on_done`` per
        answer. ``stop``: set it (Ctrl-C) to stop taking rows; an unfinished arm then raises
        ``eval.ablation.ArmStopped`` and no metrics are written."""
        from agent.data import read_questions
        from agent.rundir import locked, record
        from eval.evaluate import evaluate, labelled

        csv_path, images, run = Path(csv), Path(images), Path(run_dir)
        if not images.is_dir():
            raise DataError(f"images folder {images} does not exist or is not a folder")
        rows = _first(read_questions(csv_path, images), limit)
        questions, _, _ = labelled(rows, csv_path)  # fail before loading any model
        arms = tool_list("all" if ablate_tools is None else ablate_tools) or []
        planners = planner_list(ablate_planners)
        if self.cluster is not None and circular:
            raise ConfigError("--circular does not run on Ray workers yet; drop --ray, or run --circular without it")
        if self.cluster is not None and (planners or (ablate and self.settings.planner != "rules")):
            raise ConfigError("planner arms do not run on Ray workers yet (each worker keeps the run's planner); "
                              "drop --ray, or run the tool ablation with --planner rules on it")
        if self.tools is not None and (ablate or planners):
            raise ConfigError("--tools forces the tools of every question, the ablation compares tool sets with the "
                              "router: drop --tools, or drop --ablate/--ablate-planners")
        made = self.provenance(self.tools, limit=limit)
        s = self.settings
        with locked(run, "vqa eval"):
            record(run, made["identity"], made["provenance"])
            with self._run_services(run, images, planners=planners) as services:
                if on_start:
                    on_start(len(questions))
                return evaluate(rows, services, run, ablate=ablate or bool(planners), ablate_tools=arms,
                                ablate_planners=planners, circular=circular, debias=s.debias,
                                temperature=s.temperature, batch_size=s.batch_size, csv_path=csv_path, on_arm=on_arm,
                                on_done=on_done, trace=trace_writer(run), identity=made["identity"],
                                provenance=made["provenance"], forced_tools=self.tools, stop=stop)


def _first(rows: list, limit: int | None) -> list:
    if limit is None:
        return rows
    if limit < 1:
        raise InputError(f"limit: expected a number of rows >= 1, found {limit}")
    return rows[:limit]


def planner_list(spec: str | Sequence[str] | None) -> list[str]:
    """Planners to compare as ``planner:<name>`` ablation arms (``"escalate,vlm"`` or a list; ``rules`` is the
    router arm, always run); an unknown one, or one this install lacks, is a ``ConfigError``."""
    from agent.planners import PLANNERS, check_planner

    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = list(dict.fromkeys(n.strip().lower() for n in items if n.strip()))
    valid = [p for p in PLANNERS if p != "rules"]
    wrong = [n for n in names if n not in valid]
    if wrong:
        raise ConfigError(f"--ablate-planners: unknown planner(s) {', '.join(wrong)}: expected a comma list of "
                          f"{', '.join(valid)} (rules is the router arm, always run)")
    for n in names:
        check_planner(n)
    return names
