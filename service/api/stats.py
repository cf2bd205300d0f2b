"""GET /stats: what the service has done, in counts (cards by rule, feedback, timeouts)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from .common import require_jwt, runtime

blueprint = Blueprint("stats", __name__)
blueprint.before_request(require_jwt)


@blueprint.get("/stats")
def stats():
    return jsonify(runtime().store.stats())
