"""Step 3 of a hook call: the patient's findings, each with its evidence and its assertion.

From codes: the patient's Conditions (ICD-10-CM, SNOMED CT; status, category, encounter rank),
the studies of DiagnosticReports (LOINC/CPT), Procedures (CPT conservative care), and the draft
orders being signed with their reasons. From text: the findings the reader (`service/nlp/`) reads
in the texts the evidence policy (`evidence_policy.py`) counts as documentation. This module holds
only the domain facts and the queries the rules share.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property

from .care_setting import CARE_SETTINGS, CareSetting
from .deadline import Deadline
from .evidence_policy import evidence_sources
from .nlp.reader import Evidence, Finding, TextReader  # noqa: F401 (Evidence and Finding are the rules' vocabulary)
from .record import PatientRecord
from .snomed import SNOMED_MAP, SnomedConcept
from .terminology import ICD10CM, Terminology
from .valuesets import ValueSets

SNOMED = "http://snomed.info/sct"
NOT_CURRENT = {"inactive", "resolved", "remission"}
INVALID = {"entered-in-error", "refuted"}
SOFT = {"unconfirmed", "provisional", "differential"}
CANCELLED = {"entered-in-error", "cancelled", "revoked"}
ASSERTIONS = ("affirmed", "negated", "uncertain", "historical")

_WEEKS = re.compile(r"\b(\d{1,3})\s*(?:-|\s)?\s*(weeks?|wks?|months?|mos?)\b", re.IGNORECASE)
# Findings of an acute event: read in a note of an earlier encounter, they are that encounter's history.
ACUTE_EVENTS = frozenset({"trauma", "fracture"})
DISCHARGE_SUMMARY = "18842-5"  # LOINC Discharge summary


@dataclass(frozen=True)
class CodedCondition:
    reference: str
    codes: tuple[str, ...]          # ICD-10-CM codes, normalised (M43.11)
    snomed: tuple[str, ...]
    text: str | None
    current: bool                   # not inactive/resolved; not refuted/entered-in-error
    firm: bool                      # current and confirmed (not unconfirmed/provisional/differential)
    category: str | None
    rank: int | None                # Encounter.diagnosis rank (or its order)
    date: str | None
    # Coded in SNOMED CT only: the reviewed concept (knowledge/snomed_map.toml) its ICD-10-CM code
    # `codes` is read from, as a biller maps it; None when the Condition has an ICD-10-CM coding.
    read_from: SnomedConcept | None = None

    @property
    def code(self) -> str | None:
        return self.codes[0] if self.codes else None

    def evidence(self) -> Evidence:
        if self.read_from is not None:
            concept = self.read_from
            return Evidence(self.reference, "code", f"SNOMED CT {concept.sctid} {self.text or concept.term} "
                            f"(read as {self.code})", "affirmed", self.date)
        return Evidence(self.reference, "code", f"{self.code}{' ' + self.text if self.text else ''}",
                        "affirmed", self.date)


@dataclass(frozen=True)
class Study:
    """A DiagnosticReport or Procedure classified by its code (valuesets.toml)."""

    reference: str
    kind: str        # e.g. "mri-cervical", "flexion-extension", "electrodiagnostic", "conservative-care"
    status: str | None
    has_result: bool  # a conclusion or a readable report
    date: str | None
    weeks: float | None = None  # for care with a performed period


@dataclass(frozen=True)
class DraftOrder:
    reference: str
    cpt: tuple[str, ...]
    reason_codes: tuple[str, ...]        # ICD-10-CM reasons, from reasonCode and reasonReference
    reason_conditions: tuple[str, ...]   # Condition references in reasonReference


# --------------------------------------------------------------------- the facts
@dataclass
class Findings:
    """Everything the rules read about one patient, built once per hook call."""

    record: PatientRecord
    conditions: list[CodedCondition] = field(default_factory=list)
    coded: list[Finding] = field(default_factory=list)  # findings read from SNOMED CT codes
    studies: list[Study] = field(default_factory=list)
    orders: list[DraftOrder] = field(default_factory=list)
    read_text: object = None  # () -> Reading: the text is read when a rule first asks
    limits: dict = field(default_factory=dict)  # reading caps reached (name → times), for the answer
    memo: dict = field(default_factory=dict)    # analyses several rules share, computed once per call
    setting: CareSetting | None = None          # the care setting (care_setting.py)
    # The inpatient convention (Section II.H): a diagnosis this encounter's notes document with the
    # Guidelines' uncertainty terms ("likely C2 radiculopathy") counts as affirmed. Its evidence
    # keeps the assertion "uncertain", so a card that rests on it says so and names the convention.
    codes_uncertain: bool = False

    def as_if_established(self) -> "Findings":
        """The same facts read by the inpatient convention (what an outpatient card must not
        propose, and asks about instead). The text is not read again."""
        return dataclasses.replace(self, memo={}, limits=self.limits, codes_uncertain=True)

    def hedged(self) -> list[Finding]:
        """Findings of this encounter's notes that the inpatient convention codes as if established:
        diagnoses documented with the Guidelines' uncertainty terms (not in a report, not in a
        note of an earlier encounter). Empty when the text was never read (no rule needed it)."""
        if "text" not in self.__dict__:
            return []
        if "text" not in self.__dict__:
            return []
        read = self._read()
        if not any(f.hedged for f in read):
            return []
        established = self._established(read)
        return [f for f in read if id(f) in established]

    @cached_property
    def text(self) -> list[Finding]:
        found = self._read()
        if not self.codes_uncertain:
            return found
        promoted = self._established(found)
        if not promoted:
            return found
        return [f._replace(assertion="affirmed") if id(f) in promoted else f for f in found]

    def _established(self, found: list[Finding]) -> set[int]:
        """The hedged diagnoses the inpatient convention codes: those documented at the time of
        discharge (in the discharge summary when the encounter has one, else in its notes), and
        not ruled out anywhere in this encounter's documentation ("possible C1 arch fracture" on
        admission, "no fracture" on CT: disproved, never coded)."""
        diagnoses = CARE_SETTINGS.diagnoses
        hedged = [f for f in found if f.assertion == "uncertain" and _hedged(f, diagnoses)]
        if not hedged:
            return set()
        discharge = self.discharge_summaries
        if discharge:
            hedged = [f for f in hedged if f.evidence.reference in discharge]
        ruled_out = [(f.kind, f.region) for f in found if f.assertion == "negated" and not f.prior]
        return {id(f) for f in hedged
                if not any(kind == f.kind and (region is None or f.region is None or region == f.region)
                           for kind, region in ruled_out)}

    @cached_property
    def discharge_summaries(self) -> set[str]:
        """References of this record's discharge summaries (LOINC 18842-5, or so named)."""
        out = set()
        for reference, resource in self.record.raw.items():
            if not reference.startswith("DocumentReference/") or not isinstance(resource, dict):
                continue
            concept = resource.get("type") if isinstance(resource.get("type"), dict) else {}
            codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
            names = " ".join(str(x) for x in [concept.get("text")] + [c.get("display") for c in codings] if x).lower()
            if any(c.get("code") == DISCHARGE_SUMMARY for c in codings) or "discharge summary" in names:
                out.add(reference)
        return out

    def _read(self) -> list[Finding]:
        """Findings of codes and text. Reading the text is most of a hook call's cost, and a record
        without a spine code or order never needs it: the rules ask for it only after their codes.

        A note of an earlier encounter counts less than this encounter's documentation: where this
        encounter speaks of a finding (in any assertion) the earlier note's word on it is dropped,
        and an acute event it describes (an injury, a fracture) is that encounter's, history now."""
        if not self.read_text:
            return list(self.coded)
        reading = self.read_text()
        self.limits.update(reading.limits)
        found = reading.findings
        if not any(f.prior for f in found):
            return self.coded + found
        current = {f.kind for f in found if not f.prior}
        out = list(self.coded)
        for f in found:
            if f.prior:
                if f.kind in current:
                    continue
                if f.assertion == "affirmed" and (f.kind in ACUTE_EVENTS or "acute" in f.modifiers):
                    f = f._replace(assertion="historical")
            out.append(f)
        return out

    # Queries the rules share.
    def read_from_snomed(self, reference: str | None) -> CodedCondition | None:
        """The Condition `reference` when it is coded in SNOMED CT only (read through the map)."""
        return next((c for c in self.conditions if c.reference == reference and c.read_from is not None), None)

    def current(self, firm: bool = True) -> list[CodedCondition]:
        return self._current_firm if firm else self._current_all

    @cached_property
    def _current_firm(self) -> list[CodedCondition]:
        return [c for c in self.conditions if c.current and c.firm and c.code]

    @cached_property
    def _current_all(self) -> list[CodedCondition]:
        return [c for c in self.conditions if c.current and c.code]

    def coded_with(self, *prefixes: str, firm: bool = True) -> list[CodedCondition]:
        """Current Conditions whose ICD-10-CM code is, or falls under, one of the prefixes."""
        bare = _bare(prefixes)
        # a malformed code from the chart ('M43.1[X](...)') falls under no prefix (TAB-HEADER: invalid)
        return [c for c in self.current(firm) if c.code.replace(".", "").startswith(bare)
                and Terminology.well_formed(c.code)]

    def has_code(self, *prefixes: str) -> bool:
        return bool(self.coded_with(*prefixes, firm=False))

    def of(self, kind: str, *assertions: str) -> list[Finding]:
        wanted = assertions or ("affirmed",)
        return [f for f in self.text if f.kind == kind and f.assertion in wanted]

    def documented(self, kind: str) -> bool:
        """Present, or stated absent: the record speaks of it either way."""
        return bool(self.of(kind, "affirmed", "negated", "historical"))

    def studies_of(self, *kinds: str) -> list[Study]:
        return [s for s in self.studies if s.kind in kinds and s.status not in CANCELLED]



def _hedged(f: Finding, diagnoses: frozenset) -> bool:
    return f.hedged and not f.prior and not f.from_report and f.kind in diagnoses


@functools.lru_cache(maxsize=1024)
def _bare(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.replace(".", "") for p in prefixes)


def gather_findings(record: PatientRecord, reader: TextReader, value_sets: ValueSets,
                    terminology: Terminology, deadline: Deadline | None = None) -> Findings:
    setting = CARE_SETTINGS.of(record.encounter, record.hook)
    findings = Findings(record, setting=setting, codes_uncertain=setting.codes_uncertain)
    ranks = _encounter_ranks(record)
    for condition in record.conditions:
        findings.conditions.append(_coded_condition(condition, ranks, terminology))
        for coding in (condition.code.coding if condition.code else None) or []:
            kind = value_sets.snomed_findings.get(coding.code) if coding.system == SNOMED else None
            if kind and findings.conditions[-1].current:
                ref = f"Condition/{condition.id}"
                text = coding.display or (condition.code.text or kind)
                findings.coded.append(Finding(kind, "affirmed", None, None, False, False, text,
                                              Evidence(ref, "code", text, "affirmed")))
    report_refs = set()
    for report in record.diagnostic_reports:
        ref = f"DiagnosticReport/{report.id}"
        report_refs.add(ref)
        has_result = bool(report.conclusion) or any(t.reference == ref and t.element.startswith("presentedForm")
                                                     for t in record.texts)
        for kind in _kinds_of(report.code, value_sets):
            findings.studies.append(Study(ref, kind, report.status, has_result, _date(report, "effectiveDateTime")))
    for procedure in record.procedures:
        ref = f"Procedure/{procedure.id}"
        for kind in _kinds_of(procedure.code, value_sets):
            findings.studies.append(Study(ref, kind, procedure.status, True, _date(procedure, "performedDateTime"),
                                          _period_weeks(procedure.performedPeriod)))
    for order in record.draft_orders:
        findings.orders.append(_draft_order(order, record, terminology))

    read: list = []  # the reading, once: the facts read by another convention share it

    def read_text():
        if not read:
            if deadline is not None:
                deadline.check()
            read.append(reader.read_all(evidence_sources(record, report_refs), deadline))
        return read[0]

    findings.read_text = read_text
    return findings


def _kinds_of(concept, value_sets: ValueSets) -> list[str]:
    kinds: list[str] = []
    for coding in (concept.coding if concept else None) or []:
        for kind in value_sets.kinds(coding.system, coding.code):
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def _icd_codes(concept, terminology: Terminology) -> tuple[str, ...]:
    return tuple(terminology.normalise(c.code) for c in (concept.coding if concept else None) or []
                 if c.system == ICD10CM and c.code)


def _coded_condition(condition, ranks: dict[str, int], terminology: Terminology) -> CodedCondition:
    clinical = _status(condition.clinicalStatus)
    verification = _status(condition.verificationStatus)
    current = clinical not in NOT_CURRENT and verification not in INVALID
    categories = [c.code for cat in condition.category or [] for c in cat.coding or []]
    ref = f"Condition/{condition.id}"
    codes = _icd_codes(condition.code, terminology)
    read_from = None
    if not codes and condition.code is not None:
        # Coded in SNOMED CT only: read as its ICD-10-CM equivalent by the reviewed map.
        read_from = SNOMED_MAP.reading([{"system": c.system, "code": c.code} for c in condition.code.coding or []])
        if read_from is not None:
            codes = (read_from.icd10cm,)
    return CodedCondition(
        reference=ref,
        codes=codes,
        read_from=read_from,
        snomed=tuple(c.code for c in (condition.code.coding if condition.code else None) or [] if c.system == SNOMED),
        text=condition.code.text if condition.code else None,
        current=current,
        firm=current and verification not in SOFT,
        category=categories[0] if categories else None,
        rank=ranks.get(ref),
        date=_date(condition, "recordedDate") or _date(condition, "onsetDateTime"),
    )


def _status(concept) -> str | None:
    for coding in (concept.coding if concept else None) or []:
        return coding.code
    return None


def _encounter_ranks(record: PatientRecord) -> dict[str, int]:
    ranks: dict[str, int] = {}
    encounter = record.encounter
    for n, diagnosis in enumerate((encounter.diagnosis if encounter else None) or []):
        reference = diagnosis.condition.reference if diagnosis.condition else None
        if reference:
            key = "Condition/" + reference.rsplit("Condition/", 1)[-1]
            ranks[key] = diagnosis.rank if diagnosis.rank is not None else n + 1
    return ranks


def _draft_order(order, record: PatientRecord, terminology: Terminology) -> DraftOrder:
    cpt = tuple(c.code for c in (order.code.coding if order.code else None) or [] if c.code)
    reasons: list[str] = []
    for concept in order.reasonCode or []:
        reasons.extend(_icd_codes(concept, terminology))
    conditions = []
    by_ref = {f"Condition/{c.id}": c for c in record.conditions}
    for reference in order.reasonReference or []:
        ref = reference.reference or ""
        key = "Condition/" + ref.rsplit("Condition/", 1)[-1] if "Condition/" in ref else ref
        conditions.append(key)
        if key in by_ref:
            reasons.extend(c for c in _icd_codes(by_ref[key].code, terminology) if c not in reasons)
    return DraftOrder(f"ServiceRequest/{order.id}", cpt, tuple(dict.fromkeys(reasons)), tuple(conditions))


def _date(resource, attribute: str) -> str | None:
    value = getattr(resource, attribute, None)
    if isinstance(value, (datetime, date)):
        return value.isoformat()[:10]
    return str(value)[:10] if value else None


def _period_weeks(period) -> float | None:
    if period is None or period.start is None or period.end is None:
        return None
    start, end = period.start, period.end
    start = start.date() if isinstance(start, datetime) else start
    end = end.date() if isinstance(end, datetime) else end
    try:
        return (end - start).days / 7.0
    except TypeError:
        return None


def weeks_in(text: str) -> float | None:
    """The longest duration written in a phrase ("12 weeks", "3 months"), in weeks."""
    best = None
    for number, unit in _WEEKS.findall(text):
        weeks = float(number) * (4.345 if unit.lower().startswith("mo") else 1.0)
        best = weeks if best is None else max(best, weeks)
    return best
