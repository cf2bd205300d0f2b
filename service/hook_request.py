"""Step 1 of a hook call: the CDS Hooks request, checked field by field.

Every problem found is reported at once, each naming its field, as a 400 OperationOutcome
(protocol.md "Requests"). Unknown fields and `extension` objects are ignored, not rejected.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import Issue, Problem
from .services import ID_PATTERN, USER_PATTERN, CdsService


@dataclass(frozen=True)
class FhirAccess:
    """Where and how we may read the EHR's FHIR server. The token is never logged or stored."""

    server: str | None
    access_token: str | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}


@dataclass(frozen=True)
class HookRequest:
    service: CdsService
    hook_instance: str
    context: dict
    prefetch: dict  # key → resource, Bundle, OperationOutcome or None; absent keys are absent
    fhir: FhirAccess

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]

    @property
    def encounter_id(self) -> str | None:
        return self.context.get("encounterId")

    @property
    def draft_orders(self) -> list[dict]:
        """The draft order resources (any request type, any status: order-sign may re-sign)."""
        bundle = self.context.get("draftOrders") or {}
        out = []
        for entry in bundle.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out.append(entry["resource"])
        return out


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
