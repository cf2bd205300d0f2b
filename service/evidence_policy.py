"""Which texts of a record are documentation, and how much each counts.

Between the record and the reader: the texts of the record, minus those that are not evidence.
- A report or note that is cancelled, entered in error, superseded or replaced is not evidence
  (DiagnosticReport.status, DocumentReference.status and docStatus, relatesTo "replaces").
- A newer final report of the same study (or its amended / corrected / appended version)
  supersedes an older or preliminary one: only the newest final counts.
- The Condition's own `code.text` is what the coder wrote, not what the chart documents; an
  order's reason text is the claim being checked. Neither is read.
- A note of an earlier encounter (copied forward, carried over) is read as `prior`: weaker than
  this encounter's documentation (Findings decides what that means for each finding).
"""
from __future__ import annotations

from .nlp.reader import Source
from .record import PatientRecord

NOT_EVIDENCE_STATUS = {"entered-in-error", "cancelled", "superseded", "revoked"}
FINAL = {"final", "amended", "corrected", "appended"}
PRELIMINARY = {"registered", "partial", "preliminary"}


def evidence_sources(record: PatientRecord, report_refs: set[str]) -> list[Source]:
    """The texts the reader reads, in record order."""
    excluded = _excluded(record)
    prior = _prior_notes(record)
    sources = []
    for text in record.texts:
        if text.reference in excluded:
            continue
        if text.element == "code.text" and text.reference.startswith("Condition/"):
            continue  # the coder's own label of the code
        if text.reference.startswith("ServiceRequest/"):
            continue  # an order's reason is the claim being checked, not evidence for it
        sources.append(Source(text.reference, text.element, text.text, text.date, text.reference in report_refs,
                              text.reference in prior))
    return sources


def _excluded(record: PatientRecord) -> set[str]:
    out = set()
    for reference, resource in record.raw.items():
        kind = resource.get("resourceType")
        if kind in ("DiagnosticReport", "DocumentReference", "Procedure", "Condition") and \
                resource.get("status") in NOT_EVIDENCE_STATUS:
            out.add(reference)
        if kind == "DocumentReference":
            if resource.get("docStatus") == "entered-in-error":
                out.add(reference)
            for relation in resource.get("relatesTo") or []:
                if isinstance(relation, dict) and relation.get("code") == "replaces":
                    target = (relation.get("target") or {}).get("reference") if isinstance(relation.get("target"), dict) else None
                    if isinstance(target, str) and "DocumentReference/" in target:
                        out.add("DocumentReference/" + target.rsplit("DocumentReference/", 1)[-1])
        if kind == "Condition":
            verification = _code_of(resource.get("verificationStatus"))
            if verification == "entered-in-error":
                out.add(reference)
    out |= _superseded_reports(record)
    return out


def _superseded_reports(record: PatientRecord) -> set[str]:
    """Reports of a study superseded by a newer final one (or by its final version)."""
    by_study: dict[tuple, list[tuple[str, str, str]]] = {}
    for reference, resource in record.raw.items():
        if resource.get("resourceType") != "DiagnosticReport":
            continue
        study = _study_key(resource)
        if study is None:
            continue
        by_study.setdefault(study, []).append((_when(resource), resource.get("status") or "", reference))
    out = set()
    for reports in by_study.values():
        finals = [r for r in reports if r[1] in FINAL]
        if not finals:
            continue
        newest = max(finals)
        for when, status, reference in reports:
            if reference == newest[2]:
                continue
            if status in PRELIMINARY or when <= newest[0]:
                out.add(reference)
    return out


def _study_key(resource: dict):
    code = resource.get("code")
    if not isinstance(code, dict):
        return None
    codings = tuple(sorted((c.get("system") or "", c.get("code") or "") for c in code.get("coding") or []
                           if isinstance(c, dict) and c.get("code")))
    return codings or ((code.get("text") or "").strip().lower() or None)


def _when(resource: dict) -> str:
    for key in ("effectiveDateTime", "issued"):
        if isinstance(resource.get(key), str):
            return resource[key]
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return period["start"]
    return ""


def _code_of(concept) -> str | None:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict):
                return coding.get("code")
    return None


def _prior_notes(record: PatientRecord) -> set[str]:
    """Notes whose encounter is not this one (when this one is known)."""
    out = set()
    if record.encounter_id:
        current = f"Encounter/{record.encounter_id}"
        for reference, resource in record.raw.items():
            if resource.get("resourceType") != "DocumentReference":
                continue
            context = resource.get("context")
            encounters = context.get("encounter") if isinstance(context, dict) else None
            refs = [e.get("reference") for e in encounters or [] if isinstance(e, dict)
                    and isinstance(e.get("reference"), str)]
            if refs and not any(r == current or r.endswith("/" + current) for r in refs):
                out.add(reference)
    return out
