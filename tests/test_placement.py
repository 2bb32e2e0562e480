"""Two GPUs (Kaggle's T4x2): ``--ray local --workers 2`` places one model per GPU. Tested on a CPU machine by the
device each worker is given: a local Ray cluster declares two GPUs, and each worker reports the one Ray gave it
(its ``CUDA_VISIBLE_DEVICES``, where its models' ``cuda`` points)."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter

import pytest

from agent.distributed import Cluster, gpus_each


@pytest.mark.parametrize("workers, given, gpus, expected", [
    (2, None, 2.0, 1.0),   # T4x2, two workers: one GPU each
    (1, None, 2.0, 1.0),   # one worker: one GPU (a model uses one device)
    (4, None, 2.0, 0.5),   # four workers share two GPUs, two on each
    (3, None, 2.0, 0.66),  # rounded down, so three fit in two
    (2, None, 0.0, 0.0),   # no GPU: none reserved
    (2, 0.0, 2.0, 0.0),    # --gpus-per-worker 0: none, as asked
    (2, 0.5, 2.0, 0.5),    # --gpus-per-worker as given
])
def test_gpus_each_worker_gets(workers, given, gpus, expected) -> None:
    assert gpus_each(Cluster("local", workers=workers, gpus_per_worker=given), {"GPU": gpus}) == expected


@pytest.mark.slow
@pytest.mark.parametrize("workers, expected", [(2, {"GPU 0": 1, "GPU 1": 1}), (4, {"GPU 0": 2, "GPU 1": 2})])
def test_workers_are_placed_one_model_per_gpu(workers, expected, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config import Settings
    from agent.distributed import RayExecutor

    ray_dir = tempfile.mkdtemp(prefix="vqa-ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        cluster = Cluster("local", workers=workers, cpus_per_worker=0.5, local_gpus=2)
        with tempfile.TemporaryDirectory() as run_dir, \
                RayExecutor(cluster, Settings(reasoner="evidence"), run_dir) as executor:
            assert Counter(executor.devices) == expected
            assert all(f"worker {i} on {d}" in executor.describe() for i, d in enumerate(executor.devices))
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
