"""Tool calls that time out let go: of their slot, of other tools, and of the process's exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agent.toolpool import ToolPool, ToolStuck, ToolTimeout


def test_a_stuck_call_gives_its_slot_back_and_never_delays_another_tool() -> None:
    pool, release = ToolPool(per_tool=1, max_abandoned=3), threading.Event()
    with pytest.raises(ToolTimeout):
        pool.call("detect", release.wait, timeout=0.2)
    assert pool.abandoned("detect") == 1
    assert pool.call("ocr", lambda: "read", timeout=30) == "read"  # another tool: untouched
    assert pool.call("detect", lambda: 3, timeout=30) == 3  # the same tool: its only slot came back
    release.set()
    for _ in range(200):  # the abandoned call ends once released and stops counting
        if pool.abandoned("detect") == 0:
            break
        threading.Event().wait(0.05)
    assert pool.abandoned("detect") == 0


def test_a_tool_whose_timed_out_calls_pile_up_is_reported_stuck() -> None:
    pool, release = ToolPool(per_tool=2, max_abandoned=2), threading.Event()
    for _ in range(2):
        with pytest.raises(ToolTimeout):
            pool.call("som", release.wait, timeout=0.1)
    with pytest.raises(ToolStuck, match="2 earlier calls timed out"):
        pool.call("som", lambda: None, timeout=30)
    release.set()


def test_errors_reach_the_caller_and_free_the_slot() -> None:
    pool = ToolPool(per_tool=1)

    def boom() -> None:
        raise ValueError("bad image")

    with pytest.raises(ValueError, match="bad image"):
        pool.call("ocr", boom, timeout=30)
    assert pool.call("ocr", lambda: "ok", timeout=30) == "ok"


def test_the_process_exits_with_an_abandoned_call_still_running(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import threading
        from agent.toolpool import ToolPool, ToolTimeout
        try:
            ToolPool().call("detect", threading.Event().wait, timeout=0.2)
        except ToolTimeout:
            print("timed out")
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stdout.strip()) == (0, "timed out")


@pytest.mark.skipif(sys.platform != "linux" or any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists(),
                    reason="needs a Linux machine without a GPU device node")
def test_sizing_the_pool_on_a_machine_without_a_gpu_does_not_import_torch() -> None:
    """A server-backed run without tools never needs torch: sizing the tool pool must not import it (about 3 s
    of every such process's start), yet finds no GPU, as torch would."""
    code = ("import sys\nfrom agent.toolpool import configure, gpu_count_cached\n"
            "slots = configure(None, 'auto')\nprint('torch' in sys.modules, gpu_count_cached(), slots)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "0", str(max(1, len(__import__("os").sched_getaffinity(0)) // 4))]
