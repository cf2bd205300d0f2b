"""Step 1 of a hook call: the CDS Hooks request, checked field by field against its model
(service/wire.py, from the service's declaration: the model /openapi.json documents).

Every problem found is reported at once, each naming its field, as a 400 OperationOutcome
(protocol.md "Requests"). Unknown fields and `extension` objects are ignored, not rejected.
Only the envelope is checked here: the resources are parsed once, in record.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import wire
from .errors import Problem
from .services import SERVICES, CdsService


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
    def selections(self) -> frozenset[str] | None:
        """The orders the call is about (order-select's `selections`, "ServiceRequest/<id>", each an
        entry of draftOrders: checked with the request); None for a hook without selections, whose
        cards may be about every draft order (order-sign)."""
        selections = self.context.get("selections")
        return frozenset(selections) if isinstance(selections, list) else None

    @property
    def draft_orders(self) -> list[dict]:
        """The draft order resources (any request type, any status: order-sign may re-sign). At
        order-select those not in `selections` are context only."""
        bundle = self.context.get("draftOrders") or {}
        out = []
        for entry in bundle.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out.append(entry["resource"])
        return out


def parse_hook_request(body, service: CdsService) -> HookRequest:
    """The request, or a 400 Problem naming every problem: the checks are the service's request
    model (`wire.hook_request_model`, the same that /openapi.json documents)."""
    if not isinstance(body, dict):
        raise Problem.of(400, "structure", "the request body must be a JSON object", "$")
    issues = wire.hook_request_model(service).validate(body)
    if issues:
        raise Problem(400, issues)
    authorization = body.get("fhirAuthorization") or {}
    return HookRequest(
        service=service,
        hook_instance=body["hookInstance"],
        context=body["context"],
        prefetch=body.get("prefetch") or {},  # key → resource, Bundle, OperationOutcome or None
        fhir=FhirAccess(server=body.get("fhirServer"), access_token=authorization.get("access_token")),
    )


for _service in SERVICES.values():  # the request models built once, before gunicorn forks the workers
    wire.hook_request_model(_service)
