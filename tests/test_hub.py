"""Finding checkpoints offline: local folders, the hub cache, and the hub asked at most once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.core import hub
from agent.core.errors import ModelLoadError


def test_a_local_folder_is_used_as_it_is(tmp_path: Path) -> None:
    assert hub.locate(str(tmp_path), flag="--model", what="model") == str(tmp_path)


def test_a_missing_path_fails_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="--detector .* does not exist"):
        hub.locate(str(tmp_path / "nope"), flag="--detector", what="detector")


def test_a_cached_hub_id_is_found_without_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    assert Path(hub.locate("org/tiny", flag="--model", what="model")) == snap


def test_an_uncached_id_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local hub cache and HF_HUB_OFFLINE is set.*--segmenter"):
        hub.locate("org/absent", flag="--segmenter", what="segmenter")


class _DownHub(BaseHTTPRequestHandler):
    """Test double for a hub that is down: every request gets 503 and is counted."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _run(names: list[str], port: int, cache: Path) -> list[str]:
    script = textwrap.dedent(f"""
        from agent.core import hub
        from agent.core.errors import ModelLoadError
        for name in {names!r}:
            try:
                hub.locate(name, flag="--detector", what="detector")
            except ModelLoadError as exc:
                print("unreachable" in str(exc) and "--detector" in str(exc))
    """)
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_CACHE": str(cache),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_the_hub_is_asked_once_per_process_then_never_again(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DownHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _run(["org/a"], server.server_port, tmp_path) == ["True"]
        one = _DownHub.hits
        assert _run(["org/a", "org/b", "org/a", "org/c"], server.server_port, tmp_path) == ["True"] * 4
        four = _DownHub.hits - one
    finally:
        server.shutdown()
    assert one >= 1 and four == one  # the first uncached id asks the hub; every later one fails without asking
