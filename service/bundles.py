"""A FHIR Bundle (a patient's record, an export's slice) as a CDS Hooks request.

Used by the playground (a pasted Bundle) and by the batch audit (each patient and encounter)."""
from __future__ import annotations

import uuid


def hook_request_from_bundle(bundle: dict, hook: str) -> dict:
    """A FHIR Bundle (a patient's export) as a hook request: its resources become the prefetch,
    draft ServiceRequests the draftOrders."""
    resources = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
    resources = [r for r in resources if isinstance(r, dict) and isinstance(r.get("resourceType"), str)]
    by_type: dict[str, list] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    patient = (by_type.get("Patient") or [{}])[0].get("id") or _subject_id(resources) or "unknown"
    encounter = (by_type.get("Encounter") or [{}])[0].get("id")

    def searchset(kind):
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"resource": r} for r in by_type.get(kind, [])]}

    prefetch = {"conditions": searchset("Condition"), "procedures": searchset("Procedure"),
                "diagnosticReports": searchset("DiagnosticReport"),
                "documentReferences": searchset("DocumentReference")}
    if by_type.get("Patient"):
        prefetch["patient"] = by_type["Patient"][0]
    prefetch["encounter"] = by_type["Encounter"][0] if encounter else None
    context = {"userId": "Practitioner/playground", "patientId": patient}
    if encounter:
        context["encounterId"] = encounter
    if hook in ("order-sign", "order-select"):
        drafts = [r for r in by_type.get("ServiceRequest", []) if r.get("status") == "draft"]
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in drafts]}
        if hook == "order-select":  # every draft order of the bundle is the one selected
            context["selections"] = [f"ServiceRequest/{r['id']}" for r in drafts if isinstance(r.get("id"), str)]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, "prefetch": prefetch}


def _subject_id(resources) -> str | None:
    for resource in resources:
        reference = (resource.get("subject") or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return reference.split("/", 1)[1]
    return None
