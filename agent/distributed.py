"""Ray as the distributed engine of ``vqa batch`` and ``vqa eval``: a ``RowExecutor`` whose questions are answered
by Ray actors.

Each worker (``RowWorker``, one Ray actor) builds the reasoner and the tools once, from the driver's own
``Settings`` (``agent.services.open_services``, the same code as without Ray), and answers chunks of
``batch_size`` questions with ``LocalExecutor``, so batching, debiasing and the temperature work as in one process.
A chunk comes back as its ``Answer``\\ s plus the trace events its questions made (held in memory on the worker);
the driver alone appends them to ``results.jsonl`` and ``trace.jsonl`` and writes ``failed.csv`` and the
submission, so a Ray run resumes, fails and traces exactly like a local one.

What workers write themselves, and so must reach the same paths as the driver (one machine, or a shared
filesystem mounted at the same path on every machine): the tool cache (``RUN/cache`` or the ``--cache`` folder),
tool artifacts (``RUN/artifacts``) and the trace's image copies (``RUN/images``). Each such file is
a function of its question (or content-addressed), so a chunk answered twice rewrites the same files.

A worker whose reasoner is a server (``--backend openai``) answers its queued chunks at once (the backend's
``max_concurrency`` still caps its requests in flight), so the end of one chunk does not leave the server idle;
an in-process model answers one chunk at a time.

Faults: a worker process that dies is restarted by Ray (``max_restarts``), which reloads the model and runs its
unfinished chunks again (``max_task_retries``); a worker that cannot come back is dropped and its chunks go to the
others. Only answers that reach the driver are logged, so every row is logged exactly once; a run with every
worker gone stops with an error and resumes like any interrupted run.

Ray is imported only here, and only when a ``RayExecutor`` starts.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError, VqaError
from agent.core.schema import Answer, Question
from agent.runner import Job, LocalExecutor
from agent.services import Services
from agent.toolpool import ToolPool
from agent.trace.events import TRACE_FILE, TraceEvent, TraceWriter

INSTALL_HINT = "pip install -e '.[ray]'"


def ray_log_level() -> int:
    """The driver's level for Ray's own log lines: ``RAY_LOGGER_LEVEL`` (Ray's setting) when set, else warnings;
    the ``vqa`` command sets it to ``error`` unless ``--verbose``, so Ray's notices (the token-authentication
    warning on every local start) do not print on every run."""
    name = os.environ.get("RAY_LOGGER_LEVEL", "warning").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


DIE_AFTER_ENV = "VQA_TEST_RAY_DIE_AFTER"  # test hook: worker 0's first process exits after answering K questions
LOCAL_OBJECT_STORE = 128 * 1024**2  # bytes: only questions and answers travel through it
CHUNKS_AHEAD = 2  # chunks queued on each worker, so it never waits for the driver between two


class RayUnavailable(ConfigError):
    """``--ray`` was asked for but Ray is not installed."""


class WorkersLost(VqaError):
    """Every Ray worker died; the answers logged so far are kept (rerun to resume)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """Where and how many workers: ``address`` is ``local`` (start a cluster in this process), ``auto`` (join the
    one ``ray start`` runs on this machine) or ``ray://host:port`` / ``host:port``."""

    address: str = "local"
    workers: int = 1
    gpus_per_worker: float | None = None  # None: one model per GPU when the cluster has GPUs (see gpus_each)
    cpus_per_worker: float = 1.0
    max_restarts: int = 2  # per worker: Ray restarts a dead worker this many times before giving its rows to others
    local_gpus: int | None = None  # GPUs a local cluster declares (None: Ray counts them; tests declare some on a CPU)
    oversubscribe: bool = False  # local: allow more workers than this machine's CPUs (or GPUs)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, found {self.workers}")
        if (self.gpus_per_worker or 0) < 0 or self.cpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker and --cpus-per-worker must be >= 0, found {self.gpus_per_worker} "
                              f"and {self.cpus_per_worker}")

    def local_cpus(self, cpus: int | None = None, gpus: int | None = None) -> int:
        """``--ray local``: the CPUs of the cluster to start, this machine's (``cpus``); more workers than they
        hold (or than its GPUs, with ``gpus_per_worker``) is a ``ConfigError`` unless ``oversubscribe``."""
        cpus = cpus if cpus is not None else (os.cpu_count() or 1)
        if gpus is None and self.local_gpus is not None:
            gpus = self.local_gpus
        for name, per in (("CPU", self.cpus_per_worker), ("GPU", self.gpus_per_worker or 0.0)):  # None: auto, fits
            have = cpus if name == "CPU" else (gpus if gpus is not None else _local_gpus()) if per else 0
            if self.workers * per > have and not self.oversubscribe:
                raise ConfigError(f"--ray local --workers {self.workers} needs {self.workers * per:g} {name}s "
                                  f"({per:g} each), this machine has {have}; ask for at most {int(have // per)} "
                                  "workers, or pass --oversubscribe to start them anyway")
        return max(1, cpus, math.ceil(self.workers * self.cpus_per_worker))

    def executor(self, settings: Any, run_dir: Path, images_root: Path | None = None) -> RayExecutor:
        """The ``RayExecutor`` answering a run's questions on this cluster's workers (a context manager)."""
        return RayExecutor(self, settings, run_dir, images_root=images_root)


def _local_gpus() -> int:
    """CUDA devices here (0 without torch or CUDA; torch is imported only when already loaded or importable)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def worker_settings(settings: Any, workers: int) -> list[Any]:
    """One ``Settings`` per worker: a comma list in ``base_url`` gives worker ``i`` URL ``i mod n`` (one server per
    GPU, workers as its clients); anything else is the driver's settings as they are."""
    urls = [u.strip() for u in (settings.base_url or "").split(",") if u.strip()]
    if len(urls) <= 1:
        return [settings] * workers
    return [settings.model_copy(update={"base_url": urls[i % len(urls)]}) for i in range(workers)]


def gpus_each(cluster: Cluster, resources: dict[str, float]) -> float:
    """The GPUs Ray reserves for each worker: ``--gpus-per-worker`` when given, else one model per GPU: a cluster
    with G GPUs gives each of N workers ``min(1, G / N)`` (T4x2 with ``--workers 2``: one GPU each, Ray pointing each
    worker's ``CUDA_VISIBLE_DEVICES`` at its own), and a cluster without GPUs none."""
    if cluster.gpus_per_worker is not None:
        return cluster.gpus_per_worker
    gpus = resources.get("GPU", 0.0)
    return min(1.0, math.floor(gpus / cluster.workers * 100) / 100) if gpus else 0.0


def check_room(cluster: Cluster, resources: dict[str, float]) -> None:
    """Refuse, before any worker starts, more GPUs or CPUs than the whole cluster has (Ray would wait forever)."""
    for name, per in (("GPU", gpus_each(cluster, resources)), ("CPU", cluster.cpus_per_worker)):
        have = resources.get(name, 0.0)
        if per * cluster.workers > have:
            raise ConfigError(f"--workers {cluster.workers} with --{name.lower()}s-per-worker {per:g} needs "
                              f"{per * cluster.workers:g} {name}s, the Ray cluster has {have:g}; ask for fewer "
                              "workers or add machines (ray start --address ...)")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """For a ``host:port`` or ``ray://host:port`` address: something listens there (Ray itself would retry a wrong
    address for minutes). ``auto`` is left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: nothing answers at {host}:{port} ({exc.strerror or exc}); expected the "
                          "head node's address ('ray start --head' prints it), or --ray auto on a cluster node") from None


class _HeldLines:
    """A stand-in for ``JsonlLog`` that keeps a worker's trace lines in memory, for the driver to append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def append(self, line: str, *, sync: bool = True) -> None:
        with self._lock:
            self.lines.append(line)

    def sync(self, *, when_due: bool = False) -> None:
        """Nothing to flush: the driver writes (and syncs) these lines."""


@dataclass
class Chunk:
    """Questions sent to one worker at once, with the job's settings (plain data)."""

    questions: list[Question]
    run: str
    tags: dict[str, str]
    artifacts_dir: str | None
    forced_tools: list[str] | None
    batch_size: int
    debias: bool
    temperature: float | None


@dataclass
class ChunkResult:
    answers: list[Answer]
    trace_lines: list[str]
    batch_sizes: list[int] = field(default_factory=list)
    process: str = ""  # host:pid of the worker process that answered


class RowWorker:
    """One Ray actor: builds its services once, then answers chunks. ``run_dir``, ``images_root`` and ``cwd`` are
    the driver's, as given; the worker runs in ``cwd``."""

    def __init__(self, settings: Any, run_dir: str, images_root: str | None, cwd: str, index: int) -> None:
        if not os.path.isdir(cwd):
            raise ConfigError(f"the driver's folder {cwd} does not exist on {socket.gethostname()}: run vqa from a "
                              "shared filesystem mounted at the same path on every machine")
        os.chdir(cwd)  # relative paths (CSV images, --run-dir, --cache) mean what they mean on the driver
        from agent.cache import open_cache
        from agent.services import open_services, register_plugins

        self.index, self.run_dir = index, Path(run_dir)
        self._stack = ExitStack()
        self.failure: str | None = None  # why the services could not be built (a bad model path, a tool setting)
        try:
            register_plugins(settings)
            base = open_services(settings)
            self._stack.callback(base.close)
            self.services: Services = base.replace(artifacts_dir=self.run_dir / "artifacts",
                                                   images_root=Path(images_root) if images_root else None,
                                                   cache=open_cache(settings.cache, self.run_dir))
        except VqaError as exc:  # reported by ready(), as one line, instead of a dead actor's traceback
            self.failure = str(exc)
        self._pools: dict[str | None, ToolPool] = {}  # one per artifacts folder (an eval arm), as run_arm does
        self._answered = 0
        self._lock = threading.Lock()
        self._die_after = self._test_die_after()

    def _test_die_after(self) -> int | None:
        """Test hook (``VQA_TEST_RAY_DIE_AFTER``): worker 0's first process exits after that many answers."""
        import ray

        value = os.environ.get(DIE_AFTER_ENV)
        if not value or self.index != 0 or ray.get_runtime_context().was_current_actor_reconstructed:
            return None
        return int(value)

    def ready(self) -> tuple[str, str | None]:
        """``(host:pid, why it cannot answer or None)``."""
        return f"{socket.gethostname()}:{os.getpid()}", self.failure

    def device(self) -> str:
        """The GPUs Ray gave this worker (``GPU 0``; its ``CUDA_VISIBLE_DEVICES``, where ``cuda`` points), or ``CPU``."""
        import ray

        ids = ray.get_gpu_ids()
        return f"GPU {','.join(map(str, ids))}" if ids else "CPU"

    def answer(self, chunk: Chunk) -> ChunkResult:
        if self.failure is not None:
            raise VqaError(f"this worker could not start: {self.failure}")
        held = _HeldLines(self.run_dir / TRACE_FILE)
        trace = TraceWriter(held.path, run=chunk.run, tags=chunk.tags, log=held)  # type: ignore[arg-type]
        pool = self._pools.setdefault(chunk.artifacts_dir, ToolPool())
        services = self.services.replace(artifacts_dir=Path(chunk.artifacts_dir) if chunk.artifacts_dir else None,
                                         pool=pool)
        answers: list[Answer] = []

        def keep(a: Answer) -> None:
            with self._lock:
                answers.append(a)
                self._answered += 1
                if self._die_after is not None and self._answered >= self._die_after:
                    os._exit(1)  # the test hook: a worker dying mid-chunk

        sizes = LocalExecutor().run(chunk.questions, services, Job(
            trace=trace, forced_tools=chunk.forced_tools, batch_size=chunk.batch_size, debias=chunk.debias,
            temperature=chunk.temperature), keep)
        return ChunkResult(answers, held.lines, sizes, self.ready()[0])

    def close(self) -> None:
        self._stack.close()


class RayExecutor:
    """A ``RowExecutor`` on Ray workers; a context manager that starts them (and a local cluster when asked) and
    stops them. ``settings`` are the driver's; ``run_dir`` is where workers find the tool cache and write
    artifacts (see the module's docstring)."""

    def __init__(self, cluster: Cluster, settings: Any, run_dir: Path, images_root: Path | None = None) -> None:
        self.cluster, self.settings = cluster, settings
        self.run_dir, self.images_root = Path(run_dir), images_root  # as given: workers run in the driver's folder
        self.actors: list[Any] = []
        self.started: list[str] = []  # host:pid of each worker's first process
        self.restarted: set[str] = set()  # processes Ray started again after a worker died (that answered)
        self.lost = 0  # workers gone for good, their chunks answered by others
        self._started_ray = False
        self._ray: Any = None
        self._alive: list[int] = []  # indexes of the workers that still answer
        self.devices: list[str] = []  # what each worker was given: "GPU 0", "GPU 1", "CPU"

    def __enter__(self) -> RayExecutor:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ray = self._ray = import_ray()
        c = self.cluster
        if not ray.is_initialized():
            if c.address == "local":
                try:
                    ray.init(address="local", num_cpus=c.local_cpus(), num_gpus=c.local_gpus,
                             include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE,
                             logging_level=ray_log_level(), log_to_driver=False)
                except (OSError, RuntimeError, ValueError) as exc:  # e.g. a RAY_TMPDIR too deep for Unix sockets
                    raise ConfigError(f"--ray local: cannot start a local Ray cluster ({exc}); with a long RAY_TMPDIR "
                                      "path, point it at a short folder (e.g. RAY_TMPDIR=/tmp/ray)") from None
            else:
                check_reachable(c.address)
                try:
                    ray.init(address=c.address, logging_level=ray_log_level(), log_to_driver=False)
                except (ConnectionError, ValueError, RuntimeError) as exc:
                    raise ConfigError(f"--ray {c.address}: cannot join the Ray cluster ({exc}); start one with "
                                      "'ray start --head' or use --ray local") from None
            self._started_ray = True
        resources = ray.cluster_resources()
        check_room(self.cluster, resources)
        # a server takes concurrent requests: a worker answers its queued chunks at once, so the end of one chunk
        # (its last requests) does not leave the server idle; an in-process model answers one chunk at a time
        at_once = CHUNKS_AHEAD if getattr(self.settings, "reasoner", None) == "openai" else 1
        worker = ray.remote(RowWorker).options(
            num_cpus=c.cpus_per_worker, num_gpus=gpus_each(c, resources), max_restarts=c.max_restarts,
            max_task_retries=c.max_restarts, max_concurrency=at_once)
        cwd = os.getcwd()
        self.actors = [worker.remote(s, str(self.run_dir), str(self.images_root) if self.images_root else None, cwd, i)
                       for i, s in enumerate(worker_settings(self.settings, c.workers))]
        try:
            ready = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            raise VqaError(f"a Ray worker failed to start: {_cause(exc)}") from None
        for process, failure in ready:
            if failure is not None:
                raise VqaError(f"the Ray worker {process} could not start: {failure}")
        self.started = [process for process, _ in ready]
        self.devices = ray.get([a.device.remote() for a in self.actors])
        self._alive = list(range(len(self.actors)))

    def stop(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def run(self, todo: list[Question], services: Services, job: Job,
            on_answer: Callable[[Answer], None]) -> list[int]:
        """Send chunks of ``job.batch_size`` questions to the workers (``CHUNKS_AHEAD`` each), append each returned
        chunk's trace lines to ``job.trace`` and hand its answers to ``on_answer``; a chunk whose worker is gone
        for good goes to another."""
        ray = self._ray
        step = max(1, job.batch_size)
        art = str(services.artifacts_dir) if services.artifacts_dir else None
        queue = deque(Chunk(todo[i:i + step], job.trace.run, dict(job.trace.tags), art, job.forced_tools,
                            job.batch_size, job.debias, job.temperature) for i in range(0, len(todo), step))
        alive = self._alive  # shared by every run of this executor (eval's arms): a lost worker stays lost
        inflight: dict[Any, tuple[int, Chunk]] = {}
        sizes: list[int] = []
        try:
            while queue or inflight:
                if not alive:
                    left = sum(len(c.questions) for c in [*queue, *(c for _, c in inflight.values())])
                    raise WorkersLost(f"every Ray worker died; {left} questions "
                                      "were not answered (answered ones are kept: rerun the same command to resume)")
                for w in alive:  # top every live worker up to CHUNKS_AHEAD
                    while queue and sum(1 for x, _ in inflight.values() if x == w) < CHUNKS_AHEAD:
                        chunk = queue.popleft()
                        inflight[self.actors[w].answer.remote(chunk)] = (w, chunk)
                if not inflight:
                    continue
                [ref], _ = ray.wait(list(inflight), num_returns=1)
                w, chunk = inflight.pop(ref)
                try:
                    result: ChunkResult = ray.get(ref)
                except ray.exceptions.RayActorError:
                    queue.appendleft(chunk)  # answered by another worker (or this one, if it still answers)
                    if w in alive and not self._answers(w):
                        alive.remove(w)
                        self.lost += 1
                    continue
                except ray.exceptions.RayTaskError as exc:  # a bug, not a fault: answering it again would fail too
                    raise VqaError(f"a Ray worker failed: {_cause(exc)}") from None
                last = len(result.trace_lines) - 1
                for i, line in enumerate(result.trace_lines):  # fsynced once per chunk
                    job.trace.emit(TraceEvent.model_validate_json(line), sync=i == last)
                sizes += result.batch_sizes
                if result.process not in self.started:
                    self.restarted.add(result.process)
                for a in result.answers:
                    on_answer(a)
        except BaseException:  # Ctrl-C or every worker lost: chunks not returned are answered on resume
            for ref in inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - finished or gone meanwhile
                    pass
            raise
        return sizes

    def describe(self) -> str:
        """One line for the user: the workers, and any restarts or losses."""
        hosts = sorted({p.rsplit(":", 1)[0] for p in self.started})
        line = f"ray: {len(self.started)} worker(s) on {', '.join(hosts)}"
        if any(d != "CPU" for d in self.devices):
            line += " (" + ", ".join(f"worker {i} on {d}" for i, d in enumerate(self.devices)) + ")"
        if self.restarted:
            line += f"; {len(self.restarted)} restarted after dying (their rows answered again)"
        if self.lost:
            line += f"; {self.lost} lost (their rows answered by the others)"
        return line

    def _answers(self, w: int) -> bool:
        """Whether worker ``w`` still answers (Ray restarted it), or is gone for good."""
        ray = self._ray
        try:
            _, failure = ray.get(self.actors[w].ready.remote())
        except ray.exceptions.RayActorError:
            return False
        return failure is None


def _cause(exc: BaseException) -> str:
    """The worker's own error out of Ray's wrapping (its last line), for a one-line message."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
