"""structlog JSON lines on stdout (journald keeps them), library logs routed into the same stream.

Event names are stable (``snake_case``); an installer greps for them at 2 a.m. The catalogue of
event names is in the README ("Logs").
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from agent.secrets import redact_processor

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(level: str = "info", *, stream: Any = None) -> None:
    """One JSON object per line; pymodbus and aiomqtt/paho logs go through the same renderer."""
    numeric = _LEVELS.get(level, logging.INFO)
    shared: list[Any] = [
        redact_processor,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logging.basicConfig(handlers=[handler], level=numeric, force=True)
    # pymodbus logs every timeout at ERROR; the bus scheduler reports them as structured events.
    logging.getLogger("pymodbus").setLevel(max(numeric, logging.CRITICAL))
