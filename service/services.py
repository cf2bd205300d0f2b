"""The CDS services this product offers, each declared once.

Discovery, routing, context validation and prefetch handling are all derived from these
declarations (the HAPI FHIR pattern): adding a service is adding a `CdsService` here.

`SERVICES` is every service the product has (the closed label set of the metrics, the request
models, feedback on cards already issued); `enabled(settings)` is those a deployment offers: an
opt-in service (`enabled_by`, a setting) is in discovery, routing and /openapi.json only when its
setting is on.
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
class CardView:
    """What a service shows of the cards the rules conclude, when not all of them (the CDI review):
    the cards of these kinds only (card contract, `source.topic.code`), each with this indicator.

    The arbitration runs over every candidate first (service/rules/resolve.py), so a card left out
    here still decides what the others say: a specificity card that a critical reroute overrules,
    or a query made moot by it, is not shown either. `encounter_search` names the prefetch key of
    the patient's Encounters from which the current encounter is chosen when the context names none
    (service/cdi_review.py)."""

    kinds: frozenset[str]
    indicator: str
    encounter_search: str | None = None


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str
    context: tuple[ContextField, ...]
    prefetch: tuple[PrefetchKey, ...]
    enabled_by: str | None = None  # the setting (config.Settings field) that offers it; None: always offered
    view: CardView | None = None  # None: every card the arbitration keeps, as its rule words it

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

# The CDI review (opt-in): when a documentation specialist opens a chart. Documentation queries and
# specificity cards only, every one `info`: no reroute, Excludes1 conflict, sequencing, additional
# code or order card, nothing `warning` or `critical` (README, "CDI review at patient-view").
CDI_REVIEW_KINDS = frozenset({"missing-documentation", "specificity"})

CDI_REVIEW = CdsService(
    id="spine-coding-cdi-review",
    hook="patient-view",
    title="Spine coding documentation review (CDI)",
    description=(
        "For clinical documentation integrity (CDI) specialists opening a chart: the documentation "
        "opportunities of the current encounter's spine diagnoses (M43.1- spondylolisthesis, M54.1- "
        "radiculopathy), as info cards only: documentation queries (level, imaging, etiology, trauma "
        "status, radicular findings ...) and more specific codes the documentation supports. No "
        "reroute, Excludes1, sequencing, additional-code or order card, and never warning or critical. "
        "The current encounter is context.encounterId, else the patient's in-progress encounter (else "
        "the latest finished one) in the `encounters` prefetch, else the whole record."
    ),
    usage_requirements=_USAGE + (
        " Opt-in: offered only where the service is configured with SPINE_CDS_CDI_REVIEW=true; register "
        "it for CDI users only."
    ),
    context=(USER, PATIENT, ContextField("encounterId", "id", required=False)),
    prefetch=_RECORD_PREFETCH + (
        PrefetchKey("encounter", "Encounter/{{context.encounterId}}", "Encounter"),
        PrefetchKey("encounters", "Encounter?patient={{context.patientId}}", "Encounter"),
        # every note of the patient: those of another encounter than the current one are read as prior
        PrefetchKey("documentReferences", "DocumentReference?patient={{context.patientId}}", "DocumentReference"),
    ),
    enabled_by="cdi_review",
    view=CardView(CDI_REVIEW_KINDS, "info", encounter_search="encounters"),
)

SERVICES: dict[str, CdsService] = {s.id: s for s in (ORDER_SIGN, ORDER_SELECT, ENCOUNTER_SIGN, ENCOUNTER_DISCHARGE,
                                                     CDI_REVIEW)}


def enabled(settings) -> dict[str, CdsService]:
    """The services these settings offer (discovery, routing, /openapi.json): every service but the
    opt-in ones whose setting is off."""
    return {i: s for i, s in SERVICES.items() if s.enabled_by is None or getattr(settings, s.enabled_by)}


def service_for_hook(hook: str) -> CdsService | None:
    """The first service answering a hook (used by `spine-cds evaluate`)."""
    return next((s for s in SERVICES.values() if s.hook == hook), None)
