"""Finding a checkpoint on disk: a local folder as it is, a hub id in the local cache, and the hub itself at most
once per process.

Offline (a Kaggle notebook, a firewalled machine) ``from_pretrained("org/name")`` retries the hub for ~25 s per
call before it fails; a batch that routes 300 questions to ``detect`` would pay that 300 times. ``locate`` pays
it never: it looks in the cache first, asks the hub one quick question when the cache lacks the id, and once the
hub has failed to answer it is not asked again in this process. Part of ``agent.core``: tools and reasoners use it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agent.core.errors import ModelLoadError, brief

PROBE_TIMEOUT = 5.0  # seconds for the one question to the hub

_lock = threading.Lock()
_hub_down: str | None = None  # why the hub could not be reached, once it could not


def is_local(model: str) -> bool:
    """A path rather than a hub id (``org/name``)."""
    path = Path(model).expanduser()
    return path.exists() or path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1


def locate(model: str, *, flag: str, what: str) -> str:
    """A local folder holding ``model`` (a path, or a hub id), downloading it only when the hub answers.

    Raises ``ModelLoadError`` naming ``flag`` at once for a missing path, an uncached id offline
    (``HF_HUB_OFFLINE=1``) or an uncached id once the hub has failed to answer in this process.
    """
    global _hub_down
    if is_local(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"{flag} {model!r} does not exist or is not a folder; expected a {what} checkpoint "
                                 "folder (config.json + weights) or a hub id")
        return str(path)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    hint = (f"pass {flag} with a local checkpoint folder (saved with save_pretrained on a networked machine), or "
            f"copy the hub cache of {model!r} here")
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ModelLoadError(f"the {what} {model!r} is not in the local hub cache and HF_HUB_OFFLINE is set: {hint}")
    with _lock:
        if _hub_down is None:
            _hub_down = _probe(model)
        down = _hub_down
    if down:
        raise ModelLoadError(f"the {what} {model!r} is not in the local hub cache and the hub is unreachable "
                             f"({down}): {hint}")
    try:
        return snapshot_download(model)
    except Exception as exc:  # noqa: BLE001 - any failure of the download is the same fix for the user
        raise ModelLoadError(f"could not download the {what} {model!r} ({brief(exc)}): {hint}") from None


def probe(model: str) -> str:
    """``""`` when the hub answers about ``model`` within ``PROBE_TIMEOUT``, else why not (one question)."""
    return _probe(model)


def _probe(model: str) -> str:
    """``""`` when the hub answers about ``model`` within ``PROBE_TIMEOUT``, else why not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(model, timeout=PROBE_TIMEOUT)
    except HfHubHTTPError as exc:  # the hub answered (e.g. 401/404): it is up; the download will say what is wrong
        return "" if exc.response is not None and exc.response.status_code < 500 else brief(exc, 160)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: the hub is not reachable from here
        return brief(exc, 160) or type(exc).__name__
    return ""


def reset() -> None:
    """Forget that the hub was unreachable (a new process starts this way; for tests)."""
    global _hub_down
    with _lock:
        _hub_down = None
