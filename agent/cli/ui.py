"""``vqa ui``: the web UI (Gradio) over the same model, backend and tool settings as ``vqa ask``."""

from __future__ import annotations

import ipaddress
import socket
import tempfile
from pathlib import Path
from typing import Annotated, Optional

from agent.cli.common import (
    Opt,
    RunDir,
    SettingsFlags,
    Tools,
    err,
    fail,
    orchestrator,
    settings_flags,
    tools as parse_tools,
)

INSTALL = "pip install 'vqa-orchestrator[ui]' (in a checkout: pip install -e '.[ui]')"


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` ... (a name is resolved: every address must be loopback)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def parse_auth(spec: str | None) -> tuple[str, str] | None:
    if spec is None:
        return None
    user, sep, password = spec.partition(":")
    if not sep or not user or not password:
        fail(f"--auth: expected USER:PASSWORD, found {spec!r}")
    return user, password


@settings_flags()
def ui_cmd(
    host: Annotated[str, Opt("--host", help="Address to listen on; anything but loopback needs --auth.")] = "127.0.0.1",
    port: Annotated[int, Opt("--port", help="Port (0: a free one).")] = 7860,
    auth: Annotated[Optional[str], Opt("--auth", help="USER:PASSWORD asked by the page (or VQA_UI_AUTH).",
                                       envvar="VQA_UI_AUTH", show_envvar=False)] = None,
    no_auth_ok: Annotated[bool, Opt("--insecure-no-auth", help="Allow a non-loopback --host without --auth (anyone "
                                    "who reaches it can run the model and read run folders).")] = False,
    runs: Annotated[Optional[Path], Opt("--runs", help="Run directory the Runs tab opens first.")] = None,
    tools: Tools = None, run_dir: RunDir = None, *, opts: SettingsFlags,
) -> None:
    """Serve the web UI: Ask (evidence drawn on the photo), Chat (the sessions of vqa chat) and Runs tabs."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail(f"vqa ui needs gradio, which is not installed: {INSTALL}")
    credentials = parse_auth(auth)
    if credentials is None and not no_auth_ok and not is_loopback(host):
        fail(f"--host {host} is reachable from other machines: give --auth USER:PASSWORD (or --insecure-no-auth "
             "to serve it open on purpose)")
    if not 0 <= port <= 65535:
        fail(f"--port: expected 0-65535, found {port}")
    from agent.chat import default_db
    from agent.ui.app import build_app
    from agent.ui.chat_tab import images_dir
    from agent.ui.common import CSS
    settings = opts.settings()  # a bad config file fails here, before any model loads; it may register plug-in tools
    forced = parse_tools(tools)
    port = port or _free_port(host)
    work = Path(run_dir) if run_dir else None
    with tempfile.TemporaryDirectory(prefix="vqa-ui-") as tmp, \
            orchestrator(settings, forced) as engine:
        engine.load()  # a model that cannot load fails before the page is served
        db = default_db(run_dir)
        app = build_app(engine, work or Path(tmp), chat_db=db, chat_flags=opts.kept(), run_dir=str(runs or ""))
        err.print(f"vqa ui: http://{host}:{port} (reasoner {engine.settings.reasoner}; Ctrl-C stops)", highlight=False)
        app.launch(server_name=host, server_port=port, auth=credentials, share=False, inbrowser=False, quiet=True,
                   show_error=False, allowed_paths=[str(images_dir(db))], css=CSS, footer_links=["api"],
                   max_file_size="50mb")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
