"""GET /stats: what the service has done, in counts (cards by rule, feedback, timeouts): EHR traffic,
and the playground's runs too with ?include=playground (`origins` in the answer says which)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..analytics import include_playground
from .common import require_jwt, runtime

blueprint = Blueprint("stats", __name__)
blueprint.before_request(require_jwt)


@blueprint.get("/stats")
def stats():
    return jsonify(runtime().store.stats(include_playground(request.args)))
