"""Secrets kept out of everything written: ``run.json``, ``metrics.json``, ``failed.csv``, traces, results, logs.

Two kinds are removed wherever they appear in text: the password of a URL (``http://user:PASSWORD@host/v1`` ->
``http://user:***@host/v1``) and a bearer token (``Bearer sk-…`` -> ``Bearer ***``); and the secrets this process
was configured with (``remember``: the API key, any URL password of the settings and its HTTP Basic form), in any
context — a server
whose error body echoes the key has it replaced by ``***``. Secrets shorter than ``MIN_SECRET`` characters are
not searched for (they would match ordinary text). Remembering a secret also installs a log-record factory that
redacts every log message of the process.
Part of ``agent.core``: it imports nothing from the project.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any

MASK = "***"
MIN_SECRET = 6
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*):([^\s/@]+)@")
_USERINFO = re.compile(r"://([^\s/@:]*):([^\s/@]+)@")
_BEARER = re.compile(r"(\b[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}")
_secrets: set[str] = set()
_lock = threading.Lock()
_factory_installed = False


def remember(*secrets: str | None) -> None:
    """Redact these values (an API key, a password) from everything this process writes from now on."""
    with _lock:
        for s in secrets:
            if isinstance(s, str) and len(s.strip()) >= MIN_SECRET:
                _secrets.add(s.strip())
        if _secrets:
            _install_log_factory()


def remember_settings(settings: Any) -> None:
    """``remember`` the API key and the URL passwords of a ``Settings`` (or anything with those attributes)."""
    key = getattr(settings, "api_key", None)
    key = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    url = getattr(settings, "base_url", None) or ""
    basic = [base64.b64encode(f"{user}:{pw}".encode()).decode() for user, pw in _USERINFO.findall(url)
             if pw != MASK]  # what an HTTP client sends (and a server may echo) for http://user:pw@host
    remember(key, *url_passwords(url), *basic)


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``."""
    return [m.group(2) for m in _URL_PASSWORD.finditer(text) if m.group(2) != MASK]


def redact(text: str) -> str:
    """``text`` with URL passwords, bearer tokens and every remembered secret replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_deep(value: Any) -> Any:
    """``redact`` applied to every string inside lists, tuples and dict values."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_deep(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_deep(v) for v in value)
    return value


def _install_log_factory() -> None:
    """Every log record's message goes through ``redact`` (installed once, on the first remembered secret)."""
    global _factory_installed
    if _factory_installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report, not ours
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True
