"""Logging, configured once by the cli: readable on a terminal, one clean line per event elsewhere.

Three renderings of the same structlog events, all on stderr:
- console: coloured, aligned, for a person at a terminal (`run --foreground`, `scan`);
- journal: under systemd (stderr is the journal stream), a `<N>` syslog priority prefix and
  logfmt, no colours and no timestamp, because journald adds both;
- json: one JSON object a line (orjson), for log shippers, or when asked with `--log-format json`.
Library logging (watchdog, asyncio) goes through the same processors via ProcessorFormatter.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, TextIO

import orjson

# structlog's package imports structlog.dev and .tracebacks, which import rich when it is
# installed: 20-30 ms of every start (scan's included) for pretty tracebacks this project does not
# use (ConsoleRenderer gets plain_traceback). A None in sys.modules makes that `import rich` fail
# as if rich were absent, for structlog only: it is taken out again at once (issue 14).
_hide_rich = "rich" not in sys.modules
if _hide_rich:
    sys.modules["rich"] = None  # type: ignore[assignment]
try:
    import structlog
    from structlog.typing import EventDict, Processor, WrappedLogger
finally:
    if _hide_rich:
        del sys.modules["rich"]

LogFormat = Literal["auto", "console", "json", "journal"]
LEVELS = ("debug", "info", "warning", "error", "critical")

# syslog priorities as journald reads them from a "<N>" line prefix (sd-daemon.h)
_PRIORITY = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warning": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}


def journal_attached(stream: TextIO = sys.stderr) -> bool:
    """True when `stream` is the journal stream systemd set up ($JOURNAL_STREAM is its dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def resolve_format(requested: LogFormat, stream: TextIO = sys.stderr) -> LogFormat:
    if requested != "auto":
        return requested
    if journal_attached(stream):
        return "journal"
    return "console" if stream.isatty() else "json"


def _priority_prefix(_: WrappedLogger, method: str, event: EventDict) -> EventDict:
    event["_priority"] = _PRIORITY.get(event.get("level", method), 6)
    return event


def _render_journal(_: WrappedLogger, __: str, event: EventDict) -> str:
    priority = event.pop("_priority", 6)
    event.pop("level", None)
    text = event.pop("event", "")
    rest = structlog.processors.LogfmtRenderer()(_, __, event) if event else ""
    return f"<{priority}>{text}" + (f" {rest}" if rest else "")


def _render_json(_: WrappedLogger, __: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


def configure(
    requested: LogFormat = "auto", level: str = "info", stream: TextIO = sys.stderr
) -> LogFormat:
    """Configure structlog and stdlib logging; return the format chosen."""
    chosen = resolve_format(requested, stream)
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Processor
    if chosen == "console":
        shared.append(structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=False))
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    elif chosen == "journal":
        shared.append(_priority_prefix)
        renderer = _render_journal
    else:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        renderer = _render_json

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # not cached: a reload may reconfigure, and cached loggers would ignore it
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    logging.getLogger("watchdog").setLevel(max(numeric_level, logging.INFO))
    logging.captureWarnings(True)
    return chosen


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """The logger of module `name`, taken once at module level: `log = get_logger(__name__)`.

    Lazy: it is assembled from the configuration at each call, so a logger taken at import time,
    before the cli runs `configure`, still logs the way `configure` said. (One bound eagerly, as
    this function once did, kept structlog's defaults: console text on stdout, into `scan`'s
    NDJSON.) `.bind()` on it gives a concrete logger, for per-file context.
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **context)
    return logger
