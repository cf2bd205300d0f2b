"""Feedback on cards: POST /cds-services/{id}/feedback (CDS Hooks 2.0 §Feedback).

Each item is checked (card, outcome, acceptedSuggestions for accepted, overrideReason,
outcomeTimestamp); a request with any invalid item stores nothing and answers 400 naming
every problem. Valid feedback is stored once (duplicates are idempotent); feedback on a card
uuid we never issued is stored and flagged. An item that accepts a card we showed, or overrides it
with a reason, suppresses that card for the patient, subject and rule within the window
(SPINE_CDS_SUPPRESSION_WINDOW, service/suppression.py); the answer's body is unchanged by it.
"""
from __future__ import annotations

import logging
from datetime import datetime

from flask import Blueprint, jsonify

from ..errors import Issue, Problem
from ..services import SERVICES
from .common import json_body, require_jwt, runtime

blueprint = Blueprint("feedback", __name__)
blueprint.before_request(require_jwt)
log = logging.getLogger(__name__)

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 100        # defaults of SPINE_CDS_FEEDBACK_MAX_ITEMS and SPINE_CDS_FEEDBACK_MAX_COMMENT
MAX_COMMENT = 2000
MAX_CODING_CHARS = 512  # overrideReason.reason system, code, display
MAX_SUGGESTIONS = 64    # acceptedSuggestions per item
MAX_ISSUES = 50


@blueprint.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str):
    if service_id not in SERVICES:
        raise Problem.of(404, "not-found", f"no CDS service with id {service_id!r}")
    settings = runtime().settings
    items = parse_feedback(json_body(), settings.feedback_max_items, settings.feedback_max_comment)
    summary = runtime().store.store_feedback(service_id, items)
    suppressions = summary.pop("suppressions", 0)
    log.info("feedback service=%s received=%d stored=%d duplicates=%d unknown_cards=%d suppressions=%d",
             service_id, summary["received"], summary["stored"], summary["duplicates"],
             len(summary["unknownCards"]), suppressions)
    return jsonify(summary)


def parse_feedback(body, max_items: int = MAX_ITEMS, max_comment: int = MAX_COMMENT) -> list[dict]:
    """The valid items, or a Problem: 413 over `max_items` (SPINE_CDS_FEEDBACK_MAX_ITEMS), 400 naming
    every invalid item (a comment over `max_comment` characters among them); at most MAX_ISSUES issues."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise Problem.of(400, "required", "the body must be an object with a `feedback` array", "feedback")
    items = body["feedback"]
    if not items:
        raise Problem.of(400, "required", "`feedback` must hold at least one item", "feedback")
    if len(items) > max_items:
        raise Problem.of(413, "too-long", f"{len(items)} feedback items: at most {max_items} per request "
                                          "(SPINE_CDS_FEEDBACK_MAX_ITEMS); send them in several requests", "feedback")
    issues: list[Issue] = []
    for n, item in enumerate(items):
        issues.extend(_item_issues(item, f"feedback[{n}]", max_comment))
        if len(issues) >= MAX_ISSUES:
            issues = issues[:MAX_ISSUES] + [Issue("too-costly", f"more problems not listed (at most {MAX_ISSUES})",
                                                  "feedback")]
            break
    if issues:
        raise Problem(400, issues)
    for item in items:
        item["_outcome_at"] = _parse_timestamp(item["outcomeTimestamp"])
    return items


def _item_issues(item, where: str, max_comment: int = MAX_COMMENT) -> list[Issue]:
    if not isinstance(item, dict):
        return [Issue("structure", "a feedback item must be an object", where)]
    issues = [Issue("invalid", f"{name} must not be null: omit it when it has no value", f"{where}.{name}")
              for name, value in item.items() if value is None]
    card = item.get("card")
    if not isinstance(card, str) or not card or len(card) > 64:
        issues.append(Issue("required", "card must be the card's uuid", f"{where}.card"))
    outcome = item.get("outcome")
    if outcome not in OUTCOMES:
        issues.append(Issue("code-invalid", "outcome must be 'accepted' or 'overridden'", f"{where}.outcome"))
    stamp = item.get("outcomeTimestamp")
    if not isinstance(stamp, str) or _parse_timestamp(stamp) is None:
        issues.append(Issue("invalid", "outcomeTimestamp must be an RFC 3339 date-time with a time zone, e.g. 2026-11-21T10:00:00Z",
                            f"{where}.outcomeTimestamp"))
    accepted = item.get("acceptedSuggestions")
    if outcome == "accepted" and accepted is None:
        issues.append(Issue("required", "acceptedSuggestions is required for accepted outcomes",
                            f"{where}.acceptedSuggestions"))
    if accepted is not None:
        if not isinstance(accepted, list) or not all(
                isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] and len(s["id"]) <= 64
                for s in accepted):
            issues.append(Issue("invalid", "acceptedSuggestions must be a list of {id: suggestion uuid}",
                                f"{where}.acceptedSuggestions"))
        elif len(accepted) > MAX_SUGGESTIONS:
            issues.append(Issue("too-long", f"at most {MAX_SUGGESTIONS} acceptedSuggestions per item",
                                f"{where}.acceptedSuggestions"))
    reason = item.get("overrideReason")
    if reason is not None:
        if not isinstance(reason, dict):
            issues.append(Issue("invalid", "overrideReason must be an object", f"{where}.overrideReason"))
        else:
            issues += [Issue("invalid", f"{name} must not be null", f"{where}.overrideReason.{name}")
                       for name, value in reason.items() if value is None]
            coding = reason.get("reason")
            # display is optional inbound: the spec's own example and the sandbox omit it.
            if coding is not None and not (isinstance(coding, dict) and isinstance(coding.get("code"), str)
                                           and all(isinstance(coding.get(k, ""), str)
                                                   for k in ("system", "display"))):
                issues.append(Issue("invalid", "overrideReason.reason must be a Coding with a code",
                                    f"{where}.overrideReason.reason"))
            elif coding is not None and any(len(coding.get(k, "")) > MAX_CODING_CHARS
                                            for k in ("system", "code", "display")):
                issues.append(Issue("too-long", f"overrideReason.reason system, code and display: at most "
                                                f"{MAX_CODING_CHARS} characters each", f"{where}.overrideReason.reason"))
            if "userComment" in reason and not isinstance(reason["userComment"], str):
                issues.append(Issue("invalid", "userComment must be a string",
                                    f"{where}.overrideReason.userComment"))
            elif len(reason.get("userComment", "")) > max_comment:
                issues.append(Issue("too-long", f"userComment has {len(reason['userComment'])} characters: at most "
                                                f"{max_comment} (SPINE_CDS_FEEDBACK_MAX_COMMENT)",
                                    f"{where}.overrideReason.userComment"))
    return issues


def _parse_timestamp(value: str) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else None
