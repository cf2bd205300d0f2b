"""The CDS services this product offers, each declared once.

Discovery, routing, context validation and prefetch handling are all derived from these
declarations (the HAPI FHIR pattern): adding a service is adding a `CdsService` here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Context field kinds and how they are checked (protocol.md, CDS Hooks library hook pages).
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR `id`
USER_PATTERN = re.compile(r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]{1,64}$")
TOKEN_PATTERN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


@dataclass(frozen=True)
class ContextField:
    name: str
    kind: str  # "id" | "user" | "bundle" | "references" (an array of "Type/id", each an entry of `refers_to`)
    required: bool = True
    description: str = ""
    refers_to: str | None = None  # for "references": the bundle field whose entries they must name


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template and what to do when its data cannot be had.

    required: no usable data (absent and not fetchable, or fetch failed) → 412. Optional keys
    degrade: the record lists them as unavailable, and rules that would claim something is
    *missing* from the record stay silent about what they could not read.
    """

    key: str
    template: str
    resource_type: str
    required: bool = False

    @property
    def is_search(self) -> bool:
        return "?" in self.template

    def tokens(self) -> list[str]:
        return TOKEN_PATTERN.findall(self.template)

    def render(self, context: dict) -> str | None:
        """The relative FHIR URL for this context, or None when a token has no value."""
        missing = False

        def substitute(match: re.Match) -> str:
            nonlocal missing
            value = context.get(match.group(1))
            if not isinstance(value, str) or not value:
                missing = True
                return ""
            return value

        url = TOKEN_PATTERN.sub(substitute, self.template)
        return None if missing else url


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str
    context: tuple[ContextField, ...]
    prefetch: tuple[PrefetchKey, ...]

    def discovery_entry(self) -> dict:
        return {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": {p.key: p.template for p in self.prefetch},
            "usageRequirements": self.usage_requirements,
        }


USER = ContextField("userId", "user", description="Practitioner/… or PractitionerRole/…")
PATIENT = ContextField("patientId", "id")

_RECORD_PREFETCH = (
    PrefetchKey("patient", "Patient/{{context.patientId}}", "Patient"),
    PrefetchKey("conditions", "Condition?patient={{context.patientId}}", "Condition", required=True),
    PrefetchKey("procedures", "Procedure?patient={{context.patientId}}", "Procedure"),
    PrefetchKey("diagnosticReports", "DiagnosticReport?patient={{context.patientId}}", "DiagnosticReport"),
)

_USAGE = (
    "Reads the patient's Conditions (ICD-10-CM or SNOMED CT), Procedures, DiagnosticReports and "
    "clinical notes, by prefetch or from the FHIR server (fhirServer on the service's allowlist, "
    "with fhirAuthorization when the server needs it). Without Conditions it answers 412. "
    "Cards follow the card contract of Spine Coding CDS (extension `spine-coding-cds`)."
)

ORDER_SIGN = CdsService(
    id="spine-coding-order-sign",
    hook="order-sign",
    title="Spine coding check at order signing",
    description=(
        "Checks that the diagnosis behind a signed order for cervical imaging, C1-C2 injections or "
        "craniocervical surgery is the specific, billable ICD-10-CM code the record supports "
        "(M43.11 spondylolisthesis and M54.11 radiculopathy of the occipito-atlanto-axial region, "
        "their sibling codes, fractures, congenital and occipital neuralgia reroutes)."
    ),
    usage_requirements=_USAGE,
    context=(USER, PATIENT, ContextField("encounterId", "id", required=False),
             ContextField("draftOrders", "bundle")),
    prefetch=_RECORD_PREFETCH + (
        PrefetchKey("encounter", "Encounter/{{context.encounterId}}", "Encounter"),
        PrefetchKey("documentReferences", "DocumentReference?patient={{context.patientId}}", "DocumentReference"),
    ),
)

ORDER_SELECT = CdsService(
    id="spine-coding-order-select",
    hook="order-select",
    title="Spine coding check when an order is selected",
    description=(
        "When an imaging or procedure order is selected, before it is signed, checks that its reason "
        "is the specific, billable ICD-10-CM code the record supports (M43.11 spondylolisthesis and "
        "M54.11 radiculopathy of the occipito-atlanto-axial region for cervical imaging, C1-C2 "
        "injections and craniocervical surgery), that the procedure's level matches the diagnosis, and "
        "what a fusion order lacks. Cards only about the orders in `selections`, with a suggestion "
        "that updates the draft order's reason; reasons given in SNOMED CT are read through a reviewed "
        "map of the concepts the rules need."
    ),
    usage_requirements=_USAGE,
    context=(USER, PATIENT, ContextField("encounterId", "id", required=False),
             ContextField("selections", "references", refers_to="draftOrders",
                          description="the selected orders, each an entry of draftOrders: ServiceRequest/<id>"),
             ContextField("draftOrders", "bundle")),
    prefetch=ORDER_SIGN.prefetch,
)

_ENCOUNTER_CONTEXT = (USER, PATIENT, ContextField("encounterId", "id"))
_ENCOUNTER_PREFETCH = _RECORD_PREFETCH + (
    PrefetchKey("encounter", "Encounter/{{context.encounterId}}", "Encounter", required=True),
    PrefetchKey(
        "documentReferences",
        "DocumentReference?patient={{context.patientId}}&encounter={{context.encounterId}}",
        "DocumentReference",
    ),
)

ENCOUNTER_SIGN = CdsService(
    id="spine-coding-encounter-sign",
    hook="encounter-sign",
    title="Spine coding check at encounter signing",
    description=(
        "When a clinician signs an encounter, checks its spine diagnoses against the notes and "
        "reports: more specific codes, reroutes, missing documentation, additional or re-sequenced "
        "codes and Excludes1 conflicts. `encounter-sign` is not a catalogue hook: configure your EHR "
        "to fire it on encounter signing with the context of encounter-discharge "
        "(userId, patientId, encounterId)."
    ),
    usage_requirements=_USAGE,
    context=_ENCOUNTER_CONTEXT,
    prefetch=_ENCOUNTER_PREFETCH,
)

ENCOUNTER_DISCHARGE = CdsService(
    id="spine-coding-encounter-discharge",
    hook="encounter-discharge",
    title="Spine coding check at discharge",
    description=(
        "The encounter-sign checks on the catalogue hook encounter-discharge, for EHRs that fire "
        "only catalogue hooks."
    ),
    usage_requirements=_USAGE,
    context=_ENCOUNTER_CONTEXT,
    prefetch=_ENCOUNTER_PREFETCH,
)

SERVICES: dict[str, CdsService] = {s.id: s for s in (ORDER_SIGN, ORDER_SELECT, ENCOUNTER_SIGN, ENCOUNTER_DISCHARGE)}


def service_for_hook(hook: str) -> CdsService | None:
    """The first service answering a hook (used by `spine-cds evaluate`)."""
    return next((s for s in SERVICES.values() if s.hook == hook), None)
