"""Logs as text for people or, with `ZTDP_LOG_FORMAT=json`, one JSON object per line.

A JSON line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, and, when logged
inside a span, `trace_id` and `span_id` (hex, as trace viewers show them), so that a log line
leads to its trace; an exception adds `exception` (its traceback as text).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from datetime import UTC, datetime
from typing import Literal, ParamSpec, TypeVar

from opentelemetry import trace

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)  # given by the caller (the access log)
        if trace_id is not None:
            line["trace_id"], line["span_id"] = trace_id, getattr(record, "span_id", None)
        elif (context := trace.get_current_span().get_span_context()).is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(format: Literal["text", "json"], level: int | str | None = None) -> None:
    """Log to stderr in `format`: the root logger's handlers get the formatter (a handler
    is added if there is none); `level`, if given, sets the root level."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    formatter = JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    if level is not None:
        root.setLevel(level)


P = ParamSpec("P")
R = TypeVar("R")


class _Lines(io.TextIOBase):
    """A text stream whose every line becomes a log record."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger, self._partial = logger, ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self._logger.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self._logger.info("%s", self._partial.rstrip())
        self._partial = ""


def said_as_logs(
    say: Callable[P, R], format: Literal["text", "json"], logger: str = "ztdp.cli"
) -> Callable[P, R]:
    """`say` (something that prints to stderr for people, such as the start-up banner) as it
    is in text mode; in JSON mode its lines become log records, so that stderr stays one JSON
    object per line for a log shipper."""
    if format != "json":
        return say

    @functools.wraps(say)
    def logged(*args: P.args, **kwargs: P.kwargs) -> R:
        lines = _Lines(logging.getLogger(logger))
        with redirect_stderr(lines):
            try:
                return say(*args, **kwargs)
            finally:
                lines.flush()

    return logged
