"""Step 2 of a hook call: the patient's FHIR record, from prefetch or from the FHIR server.

Prefetch semantics (CDS Hooks 2.0 §Prefetch, protocol.md):
- key absent → fetch it from `fhirServer` (when on the allowlist), following `next` links;
- key null → the EHR has no such data;
- an OperationOutcome in place of data → the EHR's own fetch failed: fetch it ourselves if we
  can, else the data is unavailable;
- a searchset with a `next` link → the rest is fetched (bounded).

Required data that cannot be had → 412. Resources are parsed with fhir.resources (R4B) one at a
time: an invalid one is skipped and reported (by reference and field path, never content).

ICD-10-CM codings are written one way here, once, before anything reads them: under any system
`knowledge/code_systems.toml` lists for ICD-10-CM (its URL, its OID), with or without the dot, in
any case, they become the URL and the dotted upper-case code, in the models the rules read and in
the resource a card's action updates; the concept's other codings (SNOMED CT) are kept as sent.
The text of a report or note is read once: of its attachments (the same document in several
formats), the first of text/plain, HTML, RTF, PDF that gives text.

An order's reason given in SNOMED CT only (a reasonCode without an ICD-10-CM coding whose SNOMED CT
codings `knowledge/snomed_map.toml` lists) is read as the ICD-10-CM code of its concept: the model
the rules read carries that code beside the SNOMED CT coding, and `PatientRecord.read_reasons` says
where it came from; the resource a card's action updates stays as the EHR sent it.
"""
from __future__ import annotations

import hashlib
import logging
import re
from .caches import BoundedCache
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .clinical_text import decode_base64, preference
from .clinical_text import read_attachment as decode_text  # the attachment reader (a test substitutes it)
from .deadline import Deadline
from .errors import Issue, Problem
from .fhir_server import FhirReader, FhirUnavailable
from .hook_request import HookRequest
from .nlp.concepts import KNOWLEDGE, LexiconError, read_toml
from .snomed import SNOMED_MAP, SnomedConcept
from .terminology import ICD10CM, Terminology

log = logging.getLogger(__name__)

CODE_SYSTEMS = KNOWLEDGE / "code_systems.toml"
_OID_URI = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+")


def load_icd10cm_systems(path: Path = CODE_SYSTEMS) -> frozenset[str]:
    """The Coding.system values read as ICD-10-CM (code_systems.toml, schema-checked: LexiconError
    names what is wrong)."""
    name = Path(path).name
    data = read_toml(path)
    if set(data) != {"icd10cm"} or not isinstance(data["icd10cm"], dict):
        raise LexiconError(f"{name}: needs exactly one table [icd10cm], has {sorted(data)}")
    table = data["icd10cm"]
    if set(table) != {"canonical", "aliases"}:
        raise LexiconError(f"{name}: [icd10cm] needs exactly canonical and aliases, has {sorted(table)}")
    if table["canonical"] != ICD10CM:
        raise LexiconError(f"{name}: [icd10cm] canonical must be {ICD10CM!r}, the system the cards write")
    aliases = table["aliases"]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and _OID_URI.fullmatch(a) for a in aliases):
        raise LexiconError(f"{name}: [icd10cm] aliases must be a list of OID URIs (urn:oid:2.16.840...)")
    if len(set(aliases)) != len(aliases) or ICD10CM in aliases:
        raise LexiconError(f"{name}: [icd10cm] aliases repeat a system")
    return frozenset([ICD10CM, *aliases])


ICD10CM_SYSTEMS = load_icd10cm_systems()
# The elements whose codings the rules read as ICD-10-CM.
_ICD_ELEMENTS = {"Condition": ("code",), "ServiceRequest": ("reasonCode",)}


def is_icd10cm(system) -> bool:
    """Whether a Coding.system means ICD-10-CM (exactly as HL7 writes it: code_systems.toml)."""
    return isinstance(system, str) and system in ICD10CM_SYSTEMS


def _normalised_concept(concept):
    """The CodeableConcept with its ICD-10-CM codings as the URL and the dotted upper-case code (an
    exact repeat of one dropped); the same object when nothing changes."""
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return concept
    codings, seen, changed = [], set(), False
    for coding in concept["coding"]:
        if isinstance(coding, dict) and is_icd10cm(coding.get("system")) and isinstance(coding.get("code"), str):
            code = Terminology.normalise(coding["code"])
            if code in seen:
                changed = True
                continue
            seen.add(code)
            if coding["system"] != ICD10CM or code != coding["code"]:
                coding = dict(coding, system=ICD10CM, code=code)
                changed = True
        codings.append(coding)
    return dict(concept, coding=codings) if changed else concept


def normalise_codings(resource: dict) -> dict:
    """The resource with the ICD-10-CM codings the rules read written one way (a shallow copy where
    something changes: the EHR's JSON is never modified in place)."""
    elements = _ICD_ELEMENTS.get(resource.get("resourceType"))
    if not elements:
        return resource
    out = None
    for name in elements:
        value = resource.get(name)
        if isinstance(value, list):
            new = [_normalised_concept(c) for c in value]
            changed = any(a is not b for a, b in zip(new, value))
        else:
            new = _normalised_concept(value)
            changed = new is not value
        if changed:
            out = dict(resource) if out is None else out
            out[name] = new
    return resource if out is None else out

@dataclass(frozen=True)
class ReadReason:
    """An order's reason read through the SNOMED CT map: reasonCode[`index`] of the draft order
    has no ICD-10-CM coding, and its SNOMED CT coding is `concept`, read as `concept.icd10cm`."""

    index: int
    concept: SnomedConcept

    @property
    def code(self) -> str:
        return self.concept.icd10cm


def read_snomed_reasons(resource: dict, snomed_map=SNOMED_MAP) -> tuple[dict, tuple[ReadReason, ...]]:
    """(the ServiceRequest as the rules read it, its reasons read through the SNOMED CT map): each
    reasonCode without an ICD-10-CM coding whose SNOMED CT codings the map reads as one concept gets
    that concept's ICD-10-CM code as a coding beside them. A shallow copy where something is read;
    the resource itself when nothing is (no reason, an ICD-10-CM one, a concept not in the map)."""
    reasons = resource.get("reasonCode")
    if not isinstance(reasons, list):
        return resource, ()
    out, read = [], []
    for n, concept in enumerate(reasons):
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if isinstance(codings, list) and not any(isinstance(c, dict) and is_icd10cm(c.get("system")) for c in codings):
            entry = snomed_map.reading(codings)
            if entry is not None:
                read.append(ReadReason(n, entry))
                concept = dict(concept, coding=codings + [{"system": ICD10CM, "code": entry.icd10cm}])
        out.append(concept)
    return (dict(resource, reasonCode=out), tuple(read)) if read else (resource, ())


# Resource types the rules read; anything else in a bundle is ignored without parsing.
RECORD_TYPES = ("Patient", "Encounter", "Condition", "Procedure", "DiagnosticReport",
                "DocumentReference", "ServiceRequest")
_MODELS = {name: get_fhir_model_class(name) for name in RECORD_TYPES}
# The JSON keys each model knows ("class", "_status" ...): any other key makes the entry invalid.
_KNOWN_KEYS = {name: {f.alias or n for n, f in model.model_fields.items()} | {"resourceType"}
               for name, model in _MODELS.items()}
# What the rules read from the models (texts and attachments are read from the raw JSON). Only
# these are validated by the model: the rest of a resource costs nothing to parse, and a value
# no rule reads cannot make a card wrong. Unknown keys are still refused (above).
_READ = {
    "Patient": {"id"},
    "Condition": {"id", "clinicalStatus", "verificationStatus", "category", "code", "recordedDate",
                  "onsetDateTime", "subject", "encounter"},
    "DiagnosticReport": {"id", "status", "code", "conclusion", "effectiveDateTime", "subject"},
    "Procedure": {"id", "status", "code", "performedDateTime", "performedPeriod", "subject"},
    "DocumentReference": {"id", "status", "subject", "content"},
    "Encounter": {"id", "status", "class", "type", "diagnosis", "subject", "period"},
    "ServiceRequest": {"id", "status", "intent", "code", "subject", "reasonCode", "reasonReference"},
}


@dataclass(frozen=True)
class TextSource:
    """A piece of clinical text and exactly where it came from (for a card's evidence)."""

    reference: str  # e.g. "DiagnosticReport/mri-1"
    element: str    # e.g. "conclusion", "presentedForm[0]", "content[0].attachment"
    text: str
    date: str | None = None


@dataclass(frozen=True)
class RecordProblem:
    """Something in the record we could not use. Never holds clinical content; `problem` (in the
    answer) may name the request's elements, `logged` is what the log says instead: a fixed phrase
    and counts, so that no element name from the request reaches the log."""

    reference: str
    problem: str
    log_as: str | None = None

    @property
    def logged(self) -> str:
        return self.log_as or self.problem


@dataclass
class PatientRecord:
    hook: str
    hook_instance: str
    patient_id: str
    encounter_id: str | None
    patient: object | None = None
    encounter: object | None = None
    conditions: list = field(default_factory=list)
    procedures: list = field(default_factory=list)
    diagnostic_reports: list = field(default_factory=list)
    document_references: list = field(default_factory=list)
    draft_orders: list = field(default_factory=list)  # ServiceRequests being signed (or selected: all, as context)
    # order-select: the orders the cards may be about ("ServiceRequest/<id>"); None: every draft order
    selected: frozenset[str] | None = None
    read_reasons: dict[str, tuple[ReadReason, ...]] = field(default_factory=dict)  # "ServiceRequest/id" → SNOMED CT reasons read
    texts: list[TextSource] = field(default_factory=list)
    skipped: list[RecordProblem] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # prefetch key → reason
    fetched: list[str] = field(default_factory=list)  # prefetch keys read from the FHIR server
    raw: dict[str, dict] = field(default_factory=dict)  # "Type/id" → the resource as the EHR sent it

    def has(self, key: str) -> bool:
        """False when the data of a prefetch key could not be read: absence proves nothing then."""
        return key not in self.unavailable


_LISTS = {
    "Condition": "conditions",
    "Procedure": "procedures",
    "DiagnosticReport": "diagnostic_reports",
    "DocumentReference": "document_references",
}


def build_record(request: HookRequest, reader: FhirReader | None, deadline: Deadline) -> PatientRecord:
    record = PatientRecord(
        hook=request.service.hook,
        hook_instance=request.hook_instance,
        patient_id=request.patient_id,
        encounter_id=request.encounter_id,
        selected=request.selections,
    )
    failures: list[Issue] = []
    for spec in request.service.prefetch:
        try:
            data, fetched = _obtain(spec, request, reader)
        except FhirUnavailable as exc:
            record.unavailable[spec.key] = exc.reason
            if spec.required:
                failures.append(Issue(
                    "not-found",
                    f"required data {spec.key!r} ({spec.resource_type}) could not be obtained: {exc.reason}",
                    f"prefetch.{spec.key}",
                ))
            continue
        if fetched:
            record.fetched.append(spec.key)
        _add(record, spec, data, reader, deadline)
    if failures:
        raise Problem(412, failures)

    for n, resource in enumerate(request.draft_orders):
        if resource.get("resourceType") == "ServiceRequest":
            resource = normalise_codings(resource)
            readable, read = read_snomed_reasons(resource)
            model = _parse(record, readable, f"context.draftOrders.entry[{n}]")
            if model is not None:
                reference = f"ServiceRequest/{resource.get('id', n)}"
                record.draft_orders.append(model)
                record.raw[reference] = resource
                if read:
                    record.read_reasons[reference] = read
                _collect_texts(record, resource, reader, deadline)
    return record


def _obtain(spec, request: HookRequest, reader: FhirReader | None) -> tuple[dict | None, bool]:
    """The key's data (a resource, a Bundle, or None for no data) and whether we fetched it.

    Raises FhirUnavailable when the data cannot be had.
    """
    if spec.key in request.prefetch:
        value = request.prefetch[spec.key]
        if value is None:
            return None, False
        if value.get("resourceType") == "OperationOutcome":
            if reader is None:
                raise FhirUnavailable("the EHR's prefetch failed and the FHIR server is not reachable")
            return _fetch(spec, request, reader), True
        if value.get("resourceType") == "Bundle" and reader is not None and _has_next(value):
            return reader.follow_pages(value), True
        return value, False
    if spec.render(request.context) is None:
        return None, False  # a token with no value (no encounterId at order-sign): nothing to read
    if reader is None:
        raise FhirUnavailable("not in prefetch, and no FHIR server on the allowlist to fetch it from")
    return _fetch(spec, request, reader), True


def _fetch(spec, request: HookRequest, reader: FhirReader) -> dict | None:
    url = spec.render(request.context)
    if url is None:
        return None
    return reader.search(url) if spec.is_search else reader.read(url)


def listed(value) -> list:
    """An element that should be an array, as one: anything else (a string, a number, an object
    sent by a broken client) counts as no items rather than breaking the call."""
    return value if isinstance(value, list) else []


def _has_next(bundle: dict) -> bool:
    return any(isinstance(link, dict) and link.get("relation") == "next" for link in listed(bundle.get("link")))


def _add(record: PatientRecord, spec, data: dict | None, reader: FhirReader | None, deadline: Deadline) -> None:
    if data is None:
        return
    resource_type, patient_id = spec.resource_type, record.patient_id
    if data.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in listed(data.get("entry")) if isinstance(e, dict)]
        if _has_next(data):
            record.unavailable.setdefault(spec.key, "only the first page was available")
    else:
        resources = [data]
    for n, resource in enumerate(resources):
        if n % 64 == 63:
            deadline.check()  # thousands of resources must not keep the call past its budget
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            continue  # included resources, search outcomes, other types: not ours to read here
        where = f"{resource_type}/{resource.get('id', f'#{n}')}"
        resource = normalise_codings(resource)
        if not _belongs_to(resource, patient_id):
            record.skipped.append(RecordProblem(where, "belongs to another patient"))
            continue
        model = _parse(record, resource, where)
        if model is None:
            continue
        record.raw[where] = resource
        if resource_type in _LISTS:
            getattr(record, _LISTS[resource_type]).append(model)
        elif resource_type == "Patient":
            record.patient = model
        elif resource_type == "Encounter":
            record.encounter = model
        _collect_texts(record, resource, reader, deadline)


def _belongs_to(resource: dict, patient_id: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") in (None, patient_id)
    subject = resource.get("subject") or resource.get("patient")
    if not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
        return True  # nothing says otherwise
    reference = subject["reference"]
    return reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")


class _ParseCache:
    """Parsed models by the content of the resource (EHRs send the same record at several hooks).

    Keyed by a digest of the resource's JSON, so any change in content is a new entry; bounded
    by entries and by bytes (the JSON's size: a 5 MB report conclusion is charged 5 MB); the
    models are never mutated by the rules."""

    def __init__(self, size: int = 2048, max_bytes: int = 64 << 20):
        self._models = BoundedCache(size, max_bytes)

    @staticmethod
    def key(resource: dict) -> tuple[bytes, int]:
        data = orjson.dumps(resource)
        return hashlib.blake2b(data, digest_size=16).digest(), len(data)

    def get(self, key: tuple[bytes, int]):
        return self._models.get(key[0])

    def put(self, key: tuple[bytes, int], model) -> None:
        self._models.put(key[0], model, 2 * key[1] + 2048)


_CACHE = _ParseCache()


def _as_validated(resource: dict) -> dict:
    """The part of the resource the model validates: the elements the rules read, without
    attachment `data` (the text is read from the raw JSON by a strict decoder; the model's is
    lenient and cost half the parse)."""
    read = _READ[resource["resourceType"]]
    resource = {k: v for k, v in resource.items() if k in read or k == "resourceType"}
    if resource.get("resourceType") == "DiagnosticReport" and resource.get("presentedForm"):
        resource = dict(resource)
        resource["presentedForm"] = [{k: v for k, v in a.items() if k != "data"} if isinstance(a, dict) else a
                                     for a in resource["presentedForm"]]
    elif resource.get("resourceType") == "DocumentReference" and resource.get("content"):
        resource = dict(resource)
        resource["content"] = [
            dict(c, attachment={k: v for k, v in c["attachment"].items() if k != "data"})
            if isinstance(c, dict) and isinstance(c.get("attachment"), dict) else c
            for c in resource["content"]]
    return resource


def _parse(record: PatientRecord, resource: dict, where: str):
    model_class = _MODELS.get(resource.get("resourceType"))
    if model_class is None:
        return None
    try:
        key = _CACHE.key(resource)
    except (TypeError, orjson.JSONEncodeError):
        key = None
    model = _CACHE.get(key) if key else None
    if model is not None:
        return model
    unknown = sorted(k for k in resource if k not in _KNOWN_KEYS[resource["resourceType"]])
    if unknown:
        record.skipped.append(RecordProblem(where, "invalid FHIR R4: unknown element " + ", ".join(unknown[:5]),
                                            f"invalid FHIR R4: {len(unknown)} unknown element(s)"))
        return None
    try:
        model = model_class.model_validate(_as_validated(resource))
    except ValidationError as exc:
        # Field paths and error types only: pydantic's messages quote the input values.
        paths = sorted({".".join(str(p) for p in err["loc"]) or "(resource)" for err in exc.errors()})
        problem = "invalid FHIR R4: " + ", ".join(paths[:5]) + (" …" if len(paths) > 5 else "")
        record.skipped.append(RecordProblem(where, problem, f"invalid FHIR R4: {len(paths)} invalid element(s)"))
        return None
    except (ValueError, TypeError, RecursionError) as exc:
        record.skipped.append(RecordProblem(where, f"invalid FHIR R4 ({type(exc).__name__})"))
        return None
    if key:
        _CACHE.put(key, model)
    return model


# ---------------------------------------------------------------------- text
def _collect_texts(record: PatientRecord, resource: dict, reader: FhirReader | None, deadline=None) -> None:
    """Narrative of a resource, from the raw JSON (the models decode base64 leniently)."""
    rtype = resource.get("resourceType")
    ref = f"{rtype}/{resource.get('id', '?')}"
    date = _date_of(resource)
    seen: set[str] = set()

    def add(element: str, text) -> None:
        if isinstance(text, str) and text.strip():
            key = " ".join(text.split())
            if key in seen:
                return  # the same text twice in one resource is read once
            seen.add(key)
            record.texts.append(TextSource(ref, element, text.strip(), date))

    code = resource.get("code")
    if isinstance(code, dict):
        add("code.text", code.get("text"))
    for n, note in enumerate(listed(resource.get("note"))):
        if isinstance(note, dict):
            add(f"note[{n}].text", note.get("text"))
    if rtype == "DiagnosticReport":
        add("conclusion", resource.get("conclusion"))
        forms = [(f"presentedForm[{n}]", a) for n, a in enumerate(listed(resource.get("presentedForm")))]
        add(*_document_text(record, ref, forms, reader, deadline))
    elif rtype == "DocumentReference":
        add("description", resource.get("description"))
        contents = [(f"content[{n}].attachment", c.get("attachment"))
                    for n, c in enumerate(listed(resource.get("content"))) if isinstance(c, dict)]
        add(*_document_text(record, ref, contents, reader, deadline))
    elif rtype == "ServiceRequest":
        for n, reason in enumerate(listed(resource.get("reasonCode"))):
            if isinstance(reason, dict):
                add(f"reasonCode[{n}].text", reason.get("text"))


def _document_text(record: PatientRecord, ref: str, attachments: list[tuple[str, object]], reader,
                   deadline=None) -> tuple[str, str | None]:
    """(element, text) of the one attachment read of a document's several (DocumentReference.content,
    DiagnosticReport.presentedForm: the same document in several formats, R4): text/plain first, then
    HTML, RTF, PDF, other types last, in record order among equals; the next is tried only when one
    gives no text (its problem reported), so the same text is never read twice."""
    def rank(item) -> int:
        content_type = item[1].get("contentType") if isinstance(item[1], dict) else None
        return preference(content_type if isinstance(content_type, str) else None)

    ranked = sorted(attachments, key=rank)  # stable: record order among equals
    for element, attachment in ranked:
        text = _attachment_text(record, ref, element, attachment, reader, deadline)
        if isinstance(text, str) and text.strip():
            return element, text
    return "", None


def _attachment_text(record: PatientRecord, ref: str, element: str, attachment, reader, deadline=None) -> str | None:
    if not isinstance(attachment, dict):
        return None
    content_type = attachment.get("contentType")
    if isinstance(attachment.get("data"), str):
        data = decode_base64(attachment["data"])
        if data is None:
            record.skipped.append(RecordProblem(f"{ref}#{element}", "attachment data is not valid base64"))
            return None
    elif isinstance(attachment.get("url"), str):
        if reader is None:
            record.skipped.append(RecordProblem(f"{ref}#{element}", "attachment url not read: no FHIR server access"))
            return None
        try:
            binary_type, data = reader.read_binary(attachment["url"])
        except FhirUnavailable as exc:
            record.skipped.append(RecordProblem(f"{ref}#{element}", f"attachment url not read: {exc.reason}"))
            return None
        content_type = content_type or binary_type
    else:
        return None
    reading = decode_text(content_type if isinstance(content_type, str) else None, data, deadline)
    for problem in reading.problems:  # fixed phrases and the caps' numbers: fit for the log as they are
        record.skipped.append(RecordProblem(f"{ref}#{element}", problem))
    if reading.text is None and not reading.problems:
        record.skipped.append(RecordProblem(f"{ref}#{element}", f"attachment type {content_type or 'unknown'} not read",
                                            "attachment type not read"))
    return reading.text


def _date_of(resource: dict) -> str | None:
    for key in ("effectiveDateTime", "issued", "date", "recordedDate", "performedDateTime",
                "onsetDateTime", "authoredOn"):
        if isinstance(resource.get(key), str):
            return resource[key]
    for key in ("effectivePeriod", "performedPeriod", "period"):
        period = resource.get(key)
        if isinstance(period, dict) and isinstance(period.get("start"), str):
            return period["start"]
    return None
