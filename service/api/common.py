"""What every endpoint shares: the runtime, JSON bodies, JWT checks."""
from __future__ import annotations

import json
import logging

from flask import current_app, request

from ..auth import Unauthorized
from ..errors import Problem

log = logging.getLogger("service.auth")


def runtime():
    return current_app.extensions["spine_cds"]


def json_body():
    """The request's JSON: 415 when it is not JSON, 413 when too large, 400 when malformed."""
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise Problem.of(415, "not-supported",
                         f"the body must be application/json, not {request.mimetype or 'unspecified'}")
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH → RequestEntityTooLarge (413)
    if not raw:
        raise Problem.of(400, "structure", "the request body is empty", "$")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise Problem.of(400, "structure", "the body is not valid UTF-8", "$") from None
    except json.JSONDecodeError as exc:
        raise Problem.of(400, "structure",
                         f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                         "$") from None
    except (ValueError, RecursionError):
        raise Problem.of(400, "structure", "the body is not valid JSON (nesting too deep or bad number)",
                         "$") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def require_jwt() -> None:
    """Before a discovery, service or feedback call: a valid JWT when issuers are configured."""
    rt = runtime()
    if request.method == "OPTIONS" or rt.verifier is None:
        return
    audience = rt.settings.public_base_url.rstrip("/") + request.path.rstrip("/")
    try:
        rt.verifier.verify(request.headers.get("Authorization"), audience)
    except Unauthorized as exc:
        # The reason, never the token.
        log.warning("refused a request to %s: %s", request.path, exc)
        raise Problem.of(401, "login", "unauthorized",
                         ) from None
