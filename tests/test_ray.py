"""``vqa batch`` / ``vqa eval`` with ``--ray``: the same run directory and submission as without Ray, a worker that
dies mid-run loses and duplicates nothing, and Ray stays optional.

The Ray runs start a small local cluster each (2 CPUs, no dashboard, a 128 MiB object store) in a ``vqa``
process of their own, as a user runs it; Ray's session files go to a folder of the test's own."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.distributed import DIE_AFTER_ENV, Cluster, worker_settings

VQA = str(Path(sys.executable).parent / "vqa")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OCR_CONFIG = '[ocr]\nengine = "tesseract"\ntesseract_boxes = "tesseract"\n'


def vqa(*args: object, env: dict[str, str] | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([VQA, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=EXAMPLES.parent,
                          env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               **(env or {})})


_RAY_DIRS: list[str] = []


def ray_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Ray's session folder in its own short temporary folder: its Unix socket paths must stay under 108 bytes, which
    pytest's (xdist's) temporary paths exceed; removed at the end of the session."""
    d = tempfile.mkdtemp(prefix="vqa-ray-", dir="/tmp")
    _RAY_DIRS.append(d)
    return {"RAY_TMPDIR": d}


@pytest.fixture(scope="module", autouse=True)
def _remove_ray_dirs() -> Iterator[None]:
    yield
    for d in _RAY_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def rows_csv(path: Path, n: int) -> Path:
    """``n`` rows cycled from the shipped OCR set, each with an id of its own."""
    with open(EXAMPLES / "ocr_set.csv", encoding="utf-8") as f:
        src = list(csv.DictReader(f))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(src[0]))
        w.writeheader()
        w.writerows({**src[i % len(src)], "id": f"{src[i % len(src)]['id']}_{i // len(src)}"} for i in range(n))
    return path


def results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def trace_kinds(run_dir: Path) -> Counter:
    events = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text(encoding="utf-8").splitlines()]
    return Counter((e["qid"], e["kind"], e.get("node"), e.get("tool")) for e in events)


@pytest.fixture(scope="module")
def sixty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """60 rows and their submission from a run without Ray (``--tools none``: the evidence reasoner alone)."""
    d = tmp_path_factory.mktemp("sixty")
    data = rows_csv(d / "q60.csv", 60)
    p = vqa("batch", data, "--images", EXAMPLES, "--out", d / "local.csv", "--run-dir", d / "run", "--reasoner",
            "evidence", "--tools", "none")
    assert p.returncode == 0, p.stderr
    return data, d


def same_answers(ray_dir: Path, local_dir: Path) -> None:
    """Every id logged exactly once, with the local run's letter and probabilities; the trace holds the same
    events per question."""
    got, want = results(ray_dir), {a["id"]: a for a in results(local_dir)}
    assert sorted(Counter(a["id"] for a in got).values()) == [1] * len(want)
    assert {a["id"] for a in got} == set(want)
    for a in got:
        assert a["answer"] == want[a["id"]]["answer"] and a["method"] == want[a["id"]]["method"]
        assert a["probs"] == pytest.approx(want[a["id"]]["probs"], abs=1e-9)
    assert trace_kinds(ray_dir) == trace_kinds(local_dir)


@pytest.mark.slow
def test_batch_on_two_ray_workers_writes_what_one_process_writes(sixty, tmp_path: Path, tmp_path_factory) -> None:
    data, local = sixty
    p = vqa("batch", data, "--images", EXAMPLES, "--out", tmp_path / "ray.csv", "--run-dir", tmp_path / "run",
            "--reasoner", "evidence", "--tools", "none", "--ray", "local", "--workers", "2",
            env=ray_env(tmp_path_factory))
    assert p.returncode == 0, p.stderr
    assert "ray: 2 worker(s)" in p.stderr and "restarted" not in p.stderr, p.stderr
    assert (tmp_path / "ray.csv").read_bytes() == (local / "local.csv").read_bytes()
    same_answers(tmp_path / "run", local / "run")
    assert (tmp_path / "run" / "failed.csv").read_text() == (local / "run" / "failed.csv").read_text()


@pytest.mark.slow
def test_worker_killed_mid_run_loses_and_duplicates_no_row(sixty, tmp_path: Path, tmp_path_factory) -> None:
    data, local = sixty
    # the test hook: worker 0's first process exits (os._exit) after answering 5 questions, inside its first chunk
    p = vqa("batch", data, "--images", EXAMPLES, "--out", tmp_path / "ray.csv", "--run-dir", tmp_path / "run",
            "--reasoner", "evidence", "--tools", "none", "--ray", "local", "--workers", "2",
            env={**ray_env(tmp_path_factory), DIE_AFTER_ENV: "5"})
    assert p.returncode == 0, p.stderr
    assert "1 restarted after dying" in p.stderr, p.stderr
    assert (tmp_path / "ray.csv").read_bytes() == (local / "local.csv").read_bytes()
    same_answers(tmp_path / "run", local / "run")


@pytest.mark.slow
def test_eval_on_ray_with_ocr_matches_one_process(tmp_path: Path, tmp_path_factory) -> None:
    """The ocr tool (tesseract) on Ray workers: the same evidence, probabilities and ablation table."""
    data = rows_csv(tmp_path / "q6.csv", 6)
    (tmp_path / "ocr.toml").write_text(OCR_CONFIG)
    common = ["eval", data, "--images", EXAMPLES, "--reasoner", "evidence", "--config", tmp_path / "ocr.toml",
              "--ablate", "--ablate-tools", "ocr", "--json"]
    local = vqa(*common, "--run-dir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    ray = vqa(*common, "--run-dir", tmp_path / "ray", "--ray", "local", "--workers", "2",
              env=ray_env(tmp_path_factory))
    assert ray.returncode == 0, ray.stderr
    a, b = json.loads(local.stdout), json.loads(ray.stdout)
    assert a["tool_runs"]["ocr"]["ran"] == b["tool_runs"]["ocr"]["ran"] > 0
    assert b["accuracy"] == a["accuracy"] and b["per_category"] == a["per_category"]
    assert [(r["arm"], r["accuracy"]) for r in b["ablation"]["rows"]] == [(r["arm"], r["accuracy"])
                                                                          for r in a["ablation"]["rows"]]
    for arm in ("router", "only-ocr", "none"):
        same_answers_in = tmp_path / "ray" / "arms" / arm, tmp_path / "local" / "arms" / arm
        got = {x["id"]: x for x in results(same_answers_in[0])}
        want = {x["id"]: x for x in results(same_answers_in[1])}
        assert set(got) == set(want)
        for qid, x in want.items():
            assert got[qid]["probs"] == pytest.approx(x["probs"], abs=1e-9) and got[qid]["answer"] == x["answer"]
    ocr_probs = [x["probs"] for x in results(tmp_path / "ray" / "arms" / "only-ocr")]
    assert any(len(set(p.values())) > 1 for p in ocr_probs)  # the OCR evidence moved some probabilities
    assert (tmp_path / "ray" / "cache").is_dir()  # the workers' tool cache: the run directory's, as without Ray


def test_ray_flag_without_ray_installed_says_how_to_install(tmp_path: Path) -> None:
    data = rows_csv(tmp_path / "q2.csv", 2)
    code = ("import sys; sys.modules['ray'] = None; from agent.cli import main; "  # import ray raises ImportError
            f"sys.argv = ['vqa', 'batch', {str(data)!r}, '--images', {str(EXAMPLES)!r}, '--out', "
            f"{str(tmp_path / 's.csv')!r}, '--run-dir', {str(tmp_path / 'run')!r}, '--reasoner', 'evidence', "
            "'--ray', 'local']; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    assert "pip install -e '.[ray]'" in p.stderr


def test_importing_agent_and_a_run_without_ray_never_import_ray(tmp_path: Path) -> None:
    data = rows_csv(tmp_path / "q2.csv", 2)
    code = ("import sys; from typer.testing import CliRunner; from agent.cli import app; import agent.distributed; "
            f"r = CliRunner().invoke(app, ['batch', {str(data)!r}, '--images', {str(EXAMPLES)!r}, '--out', "
            f"{str(tmp_path / 's.csv')!r}, '--run-dir', {str(tmp_path / 'run')!r}, '--reasoner', 'evidence', "
            "'--tools', 'none']); assert r.exit_code == 0, r.output; print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_eval_refuses_circular_on_ray_before_any_work(tmp_path: Path) -> None:
    p = vqa("eval", rows_csv(tmp_path / "q2.csv", 2), "--images", EXAMPLES, "--run-dir", tmp_path / "run",
            "--reasoner", "evidence", "--circular", "--ray", "local")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--circular does not run on Ray workers" in p.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("base_url", "workers", "expected"), [
    (None, 2, [None, None]),
    ("http://a:8000/v1", 3, ["http://a:8000/v1"] * 3),
    ("http://a:8000/v1, http://b:8000/v1", 3, ["http://a:8000/v1", "http://b:8000/v1", "http://a:8000/v1"]),
])
def test_workers_take_turns_on_a_list_of_servers(base_url, workers, expected) -> None:
    from agent.config import Settings

    settings = Settings(reasoner="evidence", base_url=base_url)
    assert [s.base_url for s in worker_settings(settings, workers)] == expected


@pytest.mark.parametrize("bad", [dict(workers=0), dict(gpus_per_worker=-1), dict(cpus_per_worker=-0.5)])
def test_cluster_refuses_impossible_sizes(bad) -> None:
    from agent.core.errors import ConfigError

    with pytest.raises(ConfigError, match="must be"):
        Cluster(**bad)


@pytest.mark.slow
def test_worker_gone_for_good_has_its_rows_answered_by_the_other(tmp_path: Path, tmp_path_factory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No restarts allowed: the dead worker's chunks go to the other worker; every row logged exactly once."""
    from agent.config import Settings
    from agent.data import read_questions
    from agent.distributed import RayExecutor
    from agent.reasoners import load_reasoner
    from agent.runner import run_batch
    from agent.services import Services

    for k, v in {**ray_env(tmp_path_factory), DIE_AFTER_ENV: "3", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)  # before Ray starts: its workers inherit them
    rows = read_questions(rows_csv(tmp_path / "q.csv", 24), EXAMPLES)
    run_dir = tmp_path / "run"
    with RayExecutor(Cluster("local", workers=2, max_restarts=0), Settings(reasoner="evidence"), run_dir,
                     EXAMPLES) as executor:
        services = Services(reasoner=load_reasoner("evidence"), artifacts_dir=run_dir / "artifacts",
                            images_root=EXAMPLES, executor=executor)
        summary = run_batch(rows, services, run_dir, batch_size=4, forced_tools=[], out=tmp_path / "s.csv")
        assert executor.lost == 1 and not executor.restarted
    assert summary.answered == summary.new == 24 and summary.failed == 0
    assert sorted(Counter(a["id"] for a in results(run_dir)).values()) == [1] * 24
    with open(tmp_path / "s.csv", encoding="utf-8") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [q.id for q in rows]


@pytest.mark.slow
def test_workers_as_clients_of_one_server_each(tmp_path: Path, tmp_path_factory) -> None:
    """The server-backend variant: ``--base-url`` lists two servers, each of the two workers talks to its own."""
    from tests.fake_openai_server import FakeOpenAIServer

    data = rows_csv(tmp_path / "q.csv", 8)
    with FakeOpenAIServer() as one, FakeOpenAIServer() as two:
        p = vqa("batch", data, "--images", EXAMPLES, "--out", tmp_path / "s.csv", "--run-dir", tmp_path / "run",
                "--tools", "none", "--backend", "openai", "--model", "fake-qwen", "--base-url",
                f"{one.url},{two.url}", "--batch-size", "2", "--ray", "local", "--workers", "2",
                env=ray_env(tmp_path_factory))
        assert p.returncode == 0, p.stderr
        assert one.stats.requests and two.stats.requests  # each worker asked its own server
    got = results(tmp_path / "run")
    assert len(got) == 8 and {a["answer"] for a in got} == {"b"}  # the scripted answer, from either server
    p = vqa("batch", data, "--images", EXAMPLES, "--out", tmp_path / "s2.csv", "--run-dir", tmp_path / "run2",
            "--tools", "none", "--backend", "openai", "--model", "fake-qwen", "--base-url", f"{one.url},{two.url}")
    assert p.returncode == 2 and "needs --ray" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_a_server_worker_answers_two_chunks_at_once_and_a_kill_loses_none(tmp_path: Path, tmp_path_factory) -> None:
    """With a server backend a worker answers its two queued chunks at once (one worker, chunks of 2: the server
    sees 4 requests in flight, which it waits for), and a worker killed with both chunks running has them
    answered again: every row logged exactly once."""
    from tests.fake_openai_server import FakeOpenAIServer, Script

    data = rows_csv(tmp_path / "q.csv", 12)
    with FakeOpenAIServer(Script(gather=4)) as server:
        p = vqa("batch", data, "--images", EXAMPLES, "--out", tmp_path / "s.csv", "--run-dir", tmp_path / "run",
                "--tools", "none", "--backend", "openai", "--model", "fake-qwen", "--base-url", server.url,
                "--batch-size", "2", "--ray", "local", "--workers", "1",
                env={**ray_env(tmp_path_factory), DIE_AFTER_ENV: "3"})
        assert p.returncode == 0, p.stderr
        assert server.stats.max_in_flight >= 4
    assert "1 restarted after dying" in p.stderr, p.stderr
    assert sorted(Counter(a["id"] for a in results(tmp_path / "run")).values()) == [1] * 12


def test_more_gpus_than_the_cluster_has_is_refused_before_any_worker_starts() -> None:
    from agent.core.errors import ConfigError
    from agent.distributed import check_room

    four = Cluster("auto", workers=4, gpus_per_worker=1)
    with pytest.raises(ConfigError, match=r"needs 4 GPUs, the Ray cluster has 2"):
        check_room(four, {"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(ConfigError, match=r"needs 4 CPUs, the Ray cluster has 2"):
        check_room(four, {"CPU": 2.0, "GPU": 4.0})
    check_room(four, {"CPU": 4.0, "GPU": 4.0})  # fits: no error


@pytest.mark.slow
def test_a_backend_the_workers_cannot_reach_is_one_line_before_any_question(tmp_path: Path, tmp_path_factory) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    p = vqa("batch", rows_csv(tmp_path / "q.csv", 2), "--images", EXAMPLES, "--out", tmp_path / "s.csv",
            "--run-dir", tmp_path / "run", "--backend", "openai", "--base-url", url, "--model", "fake-qwen",
            "--ray", "local", env=ray_env(tmp_path_factory))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "could not start:" in p.stderr and url in p.stderr, p.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists() and not (tmp_path / "s.csv").exists()


def test_worker_flags_without_ray_are_refused(tmp_path: Path) -> None:
    p = vqa("batch", rows_csv(tmp_path / "q.csv", 2), "--images", EXAMPLES, "--out", tmp_path / "s.csv",
            "--run-dir", tmp_path / "run", "--reasoner", "evidence", "--workers", "4")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "need --ray ADDRESS" in p.stderr, p.stderr


def test_an_address_where_nothing_listens_is_refused_at_once() -> None:
    import socket

    from agent.core.errors import ConfigError
    from agent.distributed import check_reachable

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=f"nothing answers at 127.0.0.1:{port}"):
            check_reachable(address)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")  # something answers: no error
    check_reachable("auto")  # left to Ray


@pytest.mark.slow
def test_rays_notices_print_only_with_verbose(tmp_path: Path, tmp_path_factory) -> None:
    """Ray warns on every local start that token authentication is on (its mode left unset, as a user leaves it):
    ``vqa`` keeps that off stderr unless ``--verbose``."""
    data = rows_csv(tmp_path / "two.csv", 2)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_LOGGER_LEVEL")}
    env.update(COLUMNS="200", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **ray_env(tmp_path_factory))
    err = {}
    for flag in ([], ["--verbose"]):
        p = subprocess.run([VQA, *flag, "batch", str(data), "--images", str(EXAMPLES), "--out",
                            str(tmp_path / f"sub{len(flag)}.csv"), "--run-dir", str(tmp_path / f"run{len(flag)}"),
                            "--reasoner", "evidence", "--tools", "none", "--ray", "local", "--workers", "1"],
                           capture_output=True, text=True, timeout=400, env=env)
        assert p.returncode == 0, p.stderr
        err[bool(flag)] = p.stderr
    assert "Token authentication" not in err[False] and "WARNING" not in err[False], err[False]
    assert "Token authentication is enabled" in err[True], err[True]
