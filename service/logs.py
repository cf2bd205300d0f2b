"""Logging that never carries clinical text, JWTs or access tokens.

Loggers of this package write only identifiers (hookInstance, service id, resource references),
counts, codes of outcome and durations. Exceptions are logged by type and traceback frames
only: exception messages (pydantic's among them) can quote the input, so they are dropped.
Every message is formatted by `escaping.EscapingFormatter`: control characters in any argument
(a resource id with a newline, say) are escaped, so that no value forges a log line.
"""
from __future__ import annotations

import logging
import sys
import traceback

from .escaping import EscapingFormatter, LogLines

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_spine_cds", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(FORMAT))
        handler._spine_cds = True
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party loggers that could echo URLs with patient ids or headers stay quiet.
    for noisy in ("urllib3", "requests", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def safe_exception(exc: BaseException) -> LogLines:
    """Type and frames of an exception, without its message (lines of ours: kept as lines)."""
    frames = traceback.format_tb(exc.__traceback__)
    return LogLines(f"{type(exc).__name__} (message withheld)\n" + "".join(frames).rstrip("\n"))
