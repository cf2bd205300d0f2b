"""Liveness and readiness for orchestrators and the Docker HEALTHCHECK."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from ..errors import Issue, operation_outcome
from .common import runtime

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@blueprint.get("/healthz")
def alive():
    return jsonify({"status": "pass"})


@blueprint.get("/readyz")
def ready():
    rt = runtime()
    checks = {"terminology": rt.terminology.loaded}
    try:
        checks["database"] = rt.store.ping()
    except Exception as exc:  # any driver error means "not ready", never a 500
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        checks["database"] = False
    if all(checks.values()):
        return jsonify({"status": "pass", "checks": checks})
    failing = [name for name, ok in checks.items() if not ok]
    body = operation_outcome([Issue("transient", f"not ready: {name} unavailable") for name in failing])
    return jsonify(body), 503
