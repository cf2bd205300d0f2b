"""Feedback on cards: POST /cds-services/{id}/feedback (CDS Hooks 2.0 §Feedback).

Each item is checked (card, outcome, acceptedSuggestions for accepted, overrideReason,
outcomeTimestamp) against the feedback model of service/wire.py; a request with any invalid item
stores nothing and answers 400 naming every problem. Valid feedback is stored once (duplicates are idempotent); feedback on a card
uuid we never issued is stored and flagged. An item that accepts a card we showed, or overrides it
with a reason, suppresses that card for the patient, subject and rule within the window
(SPINE_CDS_SUPPRESSION_WINDOW, service/suppression.py); the answer's body is unchanged by it.
"""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from .. import wire
from ..errors import Problem
from ..services import SERVICES
from .common import json_body, require_jwt, runtime
from .metrics import feedback_stored

blueprint = Blueprint("feedback", __name__)
blueprint.before_request(require_jwt)
log = logging.getLogger(__name__)

MAX_ITEMS = wire.FEEDBACK_MAX_ITEMS      # defaults of SPINE_CDS_FEEDBACK_MAX_ITEMS and SPINE_CDS_FEEDBACK_MAX_COMMENT
MAX_COMMENT = wire.FEEDBACK_MAX_COMMENT
MAX_CODING_CHARS = wire.MAX_CODING_CHARS  # overrideReason.reason system, code, display
MAX_SUGGESTIONS = wire.MAX_SUGGESTIONS    # acceptedSuggestions per item
MAX_ISSUES = wire.MAX_ISSUES


@blueprint.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str):
    if service_id not in SERVICES:
        raise Problem.of(404, "not-found", f"no CDS service with id {service_id!r}")
    settings = runtime().settings
    items = parse_feedback(json_body(), settings.feedback_max_items, settings.feedback_max_comment)
    summary = runtime().store.store_feedback(service_id, items)
    suppressions = summary.pop("suppressions", 0)
    feedback_stored(service_id, items, summary)
    log.info("feedback service=%s received=%d stored=%d duplicates=%d unknown_cards=%d suppressions=%d",
             service_id, summary["received"], summary["stored"], summary["duplicates"],
             len(summary["unknownCards"]), suppressions)
    return jsonify(summary)


def parse_feedback(body, max_items: int = MAX_ITEMS, max_comment: int = MAX_COMMENT) -> list[dict]:
    """The valid items, or a Problem: 413 over `max_items` (SPINE_CDS_FEEDBACK_MAX_ITEMS), 400 naming
    every invalid item (a comment over `max_comment` characters among them); at most MAX_ISSUES issues.
    The checks are the feedback model (`wire.feedback_model`, the one /openapi.json documents)."""
    if not isinstance(body, dict):
        raise Problem.of(400, "required", wire.FEEDBACK_BODY, "feedback")
    issues = wire.feedback_model(max_items, max_comment).validate(body, root="feedback")
    if issues:
        over = [i for i in issues if i.expression == "feedback" and i.code == "too-long"]
        raise Problem(413, over) if over else Problem(400, issues)
    items = body["feedback"]
    for item in items:
        item["_outcome_at"] = wire.parse_timestamp(item["outcomeTimestamp"])
    return items
