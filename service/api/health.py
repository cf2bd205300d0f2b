"""Liveness and readiness for orchestrators and the Docker HEALTHCHECK; /readyz also names the
ICD-10-CM release loaded and its validity period."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from .. import code_set as code_sets
from ..errors import Issue, operation_outcome
from .common import runtime

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@blueprint.get("/healthz")
def alive():
    """Alive, whatever the database does; with this worker's queue of records waiting for the
    database (pending, dropped when the queue was full, written late, the last error's type)."""
    return jsonify({"status": "pass", "database": {"writeQueue": runtime().store.queue_status()}})


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
        # The code set: which release, the days it is valid for, whether today is one (a release that
        # does not cover today is no reason to stop routing: the answers say so themselves).
        code_set = rt.release.describe(files=False)  # no file paths on an unauthenticated endpoint
        code_set["coversToday"] = rt.release.covers(code_sets.today())
        return jsonify({"status": "pass", "checks": checks, "codeSet": code_set})
    failing = [name for name, ok in checks.items() if not ok]
    body = operation_outcome([Issue("transient", f"not ready: {name} unavailable") for name in failing])
    return jsonify(body), 503
