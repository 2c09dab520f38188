"""structlog setup: one JSON object per line, with the request id bound from context variables."""

from __future__ import annotations

import logging
import sys

import structlog

_debug = False


def debug_enabled() -> bool:
    """Whether debug lines are written: callers skip building one that would be dropped."""
    return _debug


def configure_logging(level: str = "info", fmt: str = "json", service: str = "") -> None:
    """Configure structlog (and the stdlib root logger, for libraries) once per process."""
    global _debug
    numeric = logging.getLevelName(level.upper())
    _debug = numeric <= logging.DEBUG
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # request_id, method: bound per RPC
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
