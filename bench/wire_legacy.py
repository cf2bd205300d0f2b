"""The hand-written request and feedback checks as they stood before service/wire.py (commit 484008a),
frozen here for two uses only: bench/wire.py measures them against the model-derived checks, and
tests/test_wire.py compares their OperationOutcomes on a corpus of malformed requests.
Not used by the service."""
from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from service.errors import Issue, Problem
from service.hook_request import FhirAccess, HookRequest
from service.services import ID_PATTERN, USER_PATTERN, CdsService

def parse_hook_request(body, service: CdsService) -> HookRequest:
    issues: list[Issue] = []

    def bad(expression: str, message: str, code: str = "invalid") -> None:
        issues.append(Issue(code, message, expression))

    if not isinstance(body, dict):
        raise Problem.of(400, "structure", "the request body must be a JSON object", "$")
    for name in ("hook", "hookInstance", "context", "fhirServer", "fhirAuthorization", "prefetch", "extension"):
        if name in body and body[name] is None:
            # CDS Hooks: an element "SHALL NOT be null"; an optional one without a value is omitted
            bad(name, f"{name} must not be null: omit it when it has no value")

    hook = body.get("hook")
    if "hook" not in body:
        bad("hook", "hook is required", "required")
    elif not isinstance(hook, str) or not hook:
        bad("hook", "hook must be a non-empty string")
    elif hook != service.hook:
        bad("hook", f"service {service.id} answers the hook {service.hook!r}, not {hook!r}", "not-supported")

    instance = body.get("hookInstance")
    if "hookInstance" not in body:
        bad("hookInstance", "hookInstance is required", "required")
    elif not _is_uuid(instance):
        bad("hookInstance", "hookInstance must be a UUID string")

    fhir_server = body.get("fhirServer")
    if fhir_server is not None or "fhirServer" in body:
        if not isinstance(fhir_server, str) or urlsplit(fhir_server).scheme not in ("http", "https") \
                or not urlsplit(fhir_server).netloc:
            bad("fhirServer", "fhirServer must be an absolute http(s) URL")
            fhir_server = None

    token = None
    authz = body.get("fhirAuthorization")
    if authz is not None or "fhirAuthorization" in body:
        if not isinstance(authz, dict):
            bad("fhirAuthorization", "fhirAuthorization must be an object")
        else:
            if "fhirServer" not in body:
                bad("fhirServer", "fhirServer is required when fhirAuthorization is given", "required")
            token = authz.get("access_token")
            if not isinstance(token, str) or not token:
                bad("fhirAuthorization.access_token", "access_token must be a non-empty string", "required")
                token = None
            token_type = authz.get("token_type")
            if not isinstance(token_type, str) or token_type.lower() != "bearer":
                bad("fhirAuthorization.token_type", "token_type must be 'Bearer'")
            if "expires_in" in authz and (not isinstance(authz["expires_in"], int)
                                          or isinstance(authz["expires_in"], bool)):
                bad("fhirAuthorization.expires_in", "expires_in must be an integer number of seconds")
            for name in ("scope", "subject", "patient"):
                if name in authz and not isinstance(authz[name], str):
                    bad(f"fhirAuthorization.{name}", f"{name} must be a string")

    context = body.get("context")
    if "context" not in body:
        bad("context", "context is required", "required")
        context = {}
    elif not isinstance(context, dict):
        bad("context", "context must be an object")
        context = {}
    else:
        _check_context(service, context, bad)

    if "extension" in body and not isinstance(body["extension"], dict):
        # its content is ignored, but CDS Hooks fixes its form: "a pre-coordinated JSON object"
        bad("extension", "extension must be an object")

    prefetch = body.get("prefetch")
    if prefetch is None:  # absent (a null was refused above)
        prefetch = {}
    elif not isinstance(prefetch, dict):
        bad("prefetch", "prefetch must be an object of prefetch keys")
        prefetch = {}
    else:
        for key, value in prefetch.items():
            if value is not None and not (isinstance(value, dict) and isinstance(value.get("resourceType"), str)):
                bad(f"prefetch.{key}", "a prefetch value must be a FHIR resource, a Bundle, an OperationOutcome or null")

    if issues:
        raise Problem(400, issues)
    return HookRequest(
        service=service,
        hook_instance=instance,
        context=context,
        prefetch=prefetch,
        fhir=FhirAccess(server=fhir_server, access_token=token),
    )


def _check_context(service: CdsService, context: dict, bad) -> None:
    for spec in service.context:
        where = f"context.{spec.name}"
        if spec.name not in context:
            if spec.required:
                bad(where, f"{spec.name} is required by the {service.hook} hook", "required")
            continue
        if context[spec.name] is None:
            bad(where, f"{spec.name} must not be null: omit it when it has no value")
            continue
        value = context[spec.name]
        if spec.kind == "id":
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                bad(where, f"{spec.name} must be a FHIR id (letters, digits, '-', '.'; at most 64)")
        elif spec.kind == "user":
            if not isinstance(value, str) or not USER_PATTERN.match(value):
                bad(where, f"{spec.name} must be Practitioner/<id> or PractitionerRole/<id>")
        elif spec.kind == "bundle":
            # Bundle.type is often missing in the wild (cds-hooks/docs#517): not required here.
            if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
                bad(where, f"{spec.name} must be a FHIR Bundle")
            elif "entry" in value and not isinstance(value["entry"], list):
                bad(f"{where}.entry", "Bundle.entry must be an array")
            else:
                for n, entry in enumerate(value.get("entry") or []):
                    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict) \
                            or not isinstance(entry["resource"].get("resourceType"), str):
                        bad(f"{where}.entry[{n}]", "each entry needs a resource with a resourceType")


def _is_uuid(value) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


OUTCOMES = ("accepted", "overridden")
MAX_ITEMS, MAX_COMMENT, MAX_CODING_CHARS, MAX_SUGGESTIONS, MAX_ISSUES = 100, 2000, 512, 64, 50


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
