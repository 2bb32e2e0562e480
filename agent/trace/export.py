"""Export of trace events to other tracers, opt-in: ``VQA_TRACE_EXPORT=otel`` mirrors every event as an
OpenTelemetry span. Off by default; nothing here runs, imports OpenTelemetry or touches the network unless asked.

LangGraph's own LangChain callbacks need nothing from us: with ``langsmith`` installed, ``LANGSMITH_TRACING=true``
and ``LANGSMITH_API_KEY`` set, every graph run is also sent to LangSmith by LangGraph itself.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from agent.core.errors import ConfigError
from agent.trace.events import Sink, TraceEvent


def sinks_from_env() -> list[Sink]:
    """``VQA_TRACE_EXPORT=otel`` adds an ``OtelSink``; unset (the default) exports nothing."""
    wanted = [w.strip() for w in os.environ.get("VQA_TRACE_EXPORT", "").split(",") if w.strip()]
    sinks: list[Sink] = []
    for w in wanted:
        if w != "otel":
            raise ConfigError(f"VQA_TRACE_EXPORT: expected 'otel' (or nothing), found {w!r}")
        sinks.append(OtelSink())
    return sinks


class OtelSink:
    """Mirrors trace events as OpenTelemetry spans: one ``vqa.question`` span per question with a child span per
    node, carrying the recorded start/end times. Uses the global tracer provider (configure it with the SDK or
    ``opentelemetry-instrument``; unconfigured, the API is a no-op); needs ``opentelemetry-api``."""

    def __init__(self, tracer: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:
            raise ConfigError("VQA_TRACE_EXPORT=otel needs OpenTelemetry: pip install 'vqa-orchestrator[otel]'") \
                from exc
        self._trace = trace
        self._tracer = tracer or trace.get_tracer("vqa-orchestrator")
        self._roots: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, e: TraceEvent) -> None:
        key = (e.run, tuple(sorted(e.tags.items())), e.qid)
        attrs = {"vqa.qid": e.qid, "vqa.run": e.run, **{f"vqa.{k}": v for k, v in e.tags.items()}}
        ns = lambda t: int(t * 1e9)  # noqa: E731
        with self._lock:
            if e.kind == "question":
                self._roots[key] = self._tracer.start_span("vqa.question", start_time=ns(e.start), attributes={
                    **attrs, "vqa.question": e.inputs.get("text", "")})
                return
            root = self._roots.get(key)
        ctx = self._trace.set_span_in_context(root) if root is not None else None
        span = self._tracer.start_span(f"vqa.{e.label}", context=ctx, start_time=ns(e.start), attributes={
            **attrs, "vqa.kind": e.kind, "vqa.ok": e.ok, **({"vqa.cached": e.cached} if e.cached is not None else {})})
        if not e.ok:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, e.error or ""))
        span.end(end_time=ns(e.end))
        if root is not None and (e.node == "finish" or e.kind == "error"):
            if e.node == "finish":
                root.set_attribute("vqa.answer", str(e.outputs.get("answer")))
            root.end(end_time=ns(e.end))
            with self._lock:
                self._roots.pop(key, None)
