"""A private stand-in for ``agent.api.Orchestrator`` with the same signature, until that API is merged.

The UI only calls ``Orchestrator(...)``, ``.ask(image, question, options, *, tools=None, run_dir=None)``,
``.settings``, ``.services`` (the chat tab's ``ChatRuntime``) and ``.close()``; at merge this module is replaced
by an import of the real class. It is built on the CLI's own pieces (``open_services`` + ``agent.runner.ask``),
so an answer here is the answer ``vqa ask`` gives on the same inputs.
"""

from __future__ import annotations

import io
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from PIL import Image

from agent.schema import LETTERS, Answer, Question


def _options(options: list[str] | dict[str, str]) -> dict[str, str]:
    return dict(options) if isinstance(options, dict) else dict(zip(LETTERS, options))


def _tools(spec: str | list[str] | None) -> list[str] | None:
    from tools import parse_tool_list

    if spec is None or isinstance(spec, list):
        return spec
    return parse_tool_list(spec)


class Orchestrator:
    """Answers questions about images with the reasoner and tools loaded once (the ``vqa ask`` pipeline)."""

    def __init__(self, model: str | None = None, backend: str | None = None, reasoner: str | None = None,
                 tools: str | list[str] | None = None, planner: str | None = None, config: str | Path | None = None,
                 **settings: Any) -> None:
        from agent.cli.common import SettingsFlags, open_services

        given = {k: v for k, v in dict(model=model, backend=backend, reasoner=reasoner, planner=planner,
                                       **settings).items() if v is not None}
        self.settings = SettingsFlags(Path(config) if config else None, given).settings()
        self.tools = _tools(tools)  # after the settings: the config file may register plug-in tools
        with ExitStack() as stack:  # a model that fails to load leaves nothing behind
            self.services = stack.enter_context(open_services(self.settings, None, cache=False))
            self._tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vqa-api-")))
            self._stack = stack.pop_all()

    def ask(self, image: str | Path | Image.Image | bytes, question: str, options: list[str] | dict[str, str], *,
            tools: str | list[str] | None = None, run_dir: str | Path | None = None) -> Answer:
        """One question; ``run_dir`` keeps its record (``results.jsonl``), trace and tool images there."""
        from agent.cli.common import trace_writer
        from agent.runner import ResultsLog, ask as run_ask

        path = self._image_path(image)
        q = Question(id="ask", image=path, text=question, options=_options(options))
        services, trace = self.services, None
        if run_dir is not None:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            services, trace = services.replace(artifacts_dir=run_dir / "artifacts"), trace_writer(run_dir)
        forced = _tools(tools) if tools is not None else self.tools
        answer = run_ask(services, q, forced_tools=forced, trace=trace)
        if run_dir is not None:
            ResultsLog(run_dir / "results.jsonl").append(answer)
        return answer

    def _image_path(self, image: str | Path | Image.Image | bytes) -> Path:
        if isinstance(image, (str, Path)):
            return Path(image)
        path = Path(tempfile.mkstemp(suffix=".png", dir=self._tmp)[1])
        if isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
        image.save(path, format="PNG")
        return path

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
