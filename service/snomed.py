"""The SNOMED CT concepts the rules read in an order's reason (knowledge/snomed_map.toml).

Loaded and schema-checked once at import: a malformed map stops the service at start with a
LexiconError naming the entry. A concept is matched by system and code only, character for
character (`http://snomed.info/sct` and its SCTID); the display an EHR sends is never read. That
every target is a billable code of the tabular whose region agrees with the entry's is checked by
tests/test_snomed_map.py against the loaded tabular.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .nlp.concepts import KNOWLEDGE, LexiconError, finding_kinds as concept_kinds, read_toml
from .nlp.levels import REGIONS

SNOMED = "http://snomed.info/sct"
PATH = KNOWLEDGE / "snomed_map.toml"

_KEYS = {"sctid", "fsn", "term", "finding", "region", "icd10cm", "source", "target"}
_SCTID = re.compile(r"[1-9][0-9]{5,17}")
_FSN = re.compile(r".+ \((?:disorder|finding)\)")
_ICD = re.compile(r"[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})?")
# A concept's partition identifier (the two digits before the check digit): 00 in the core release's
# short format, 10 in an extension's namespace (SNOMED CT Technical Implementation Guide, 6.5).
_CONCEPT_PARTITIONS = ("00", "10")

# Verhoeff's dihedral-group tables (the SCTID check digit).
_D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
      [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
      [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
      [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
      [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
      [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]


def verhoeff_valid(digits: str) -> bool:
    """Whether the last digit is the Verhoeff check digit of the others (as every SCTID's is)."""
    check = 0
    for n, char in enumerate(reversed(digits)):
        check = _D[check][_P[n % 8][int(char)]]
    return check == 0


def is_concept_id(sctid: str) -> bool:
    """A well-formed SNOMED CT concept identifier: digits, a concept partition, a valid check digit."""
    return bool(_SCTID.fullmatch(sctid)) and sctid[-3:-1] in _CONCEPT_PARTITIONS and verhoeff_valid(sctid)


@dataclass(frozen=True)
class SnomedConcept:
    """One reviewed concept: what it is (SCTID, FSN), what the rules read it as, and why."""

    sctid: str
    fsn: str
    term: str
    finding: str          # a finding of knowledge/concepts.toml
    region: str | None    # the region its name gives (nlp.levels), None for none: a region word, never a level
    icd10cm: str          # the ICD-10-CM code it reads as
    source: str
    target: str

    def coding(self) -> dict:
        return {"system": SNOMED, "code": self.sctid, "display": self.fsn}


class SnomedMap:
    """The concepts of knowledge/snomed_map.toml, by SCTID."""

    def __init__(self, path: Path = PATH, finding_kinds: set[str] | None = None):
        name = Path(path).name
        data = read_toml(path)
        if set(data) != {"concept"} or not isinstance(data["concept"], list) or not data["concept"]:
            raise LexiconError(f"{name}: needs [[concept]] entries and nothing else, has {sorted(data)}")
        kinds = concept_kinds() if finding_kinds is None else finding_kinds
        self.concepts: dict[str, SnomedConcept] = {}
        for n, entry in enumerate(data["concept"]):
            where = f"{name}: [[concept]] {n + 1}"
            if not isinstance(entry, dict):
                raise LexiconError(f"{where}: must be a table")
            if set(entry) != _KEYS:
                raise LexiconError(f"{where}: needs exactly {sorted(_KEYS)}, has {sorted(entry)}")
            if not all(isinstance(v, str) for v in entry.values()):
                raise LexiconError(f"{where}: every value must be a string")
            sctid = entry["sctid"]
            where = f"{name}: concept {sctid}"
            if not is_concept_id(sctid):
                raise LexiconError(f"{where}: not a SNOMED CT concept id (digits, partition 00/10, Verhoeff check digit)")
            if sctid in self.concepts:
                raise LexiconError(f"{where}: listed twice")
            if not _FSN.fullmatch(entry["fsn"]):
                raise LexiconError(f"{where}: fsn must be the term with its semantic tag, e.g. 'Neck pain (finding)'")
            for key in ("term", "source", "target"):
                if not entry[key].strip():
                    raise LexiconError(f"{where}: {key} must not be empty")
            if entry["finding"] not in kinds:
                raise LexiconError(f"{where}: finding {entry['finding']!r} is not a finding of concepts.toml")
            if entry["region"] and entry["region"] not in REGIONS:
                raise LexiconError(f"{where}: region {entry['region']!r} is not one of {REGIONS} (or \"\" for none)")
            if not _ICD.fullmatch(entry["icd10cm"]):
                raise LexiconError(f"{where}: icd10cm {entry['icd10cm']!r} is not an ICD-10-CM code with its dot")
            self.concepts[sctid] = SnomedConcept(
                sctid=sctid, fsn=entry["fsn"], term=entry["term"], finding=entry["finding"],
                region=entry["region"] or None, icd10cm=entry["icd10cm"], source=entry["source"],
                target=entry["target"])

    def get(self, system, code) -> SnomedConcept | None:
        """The concept of a Coding's system and code, exactly as sent; None when not listed."""
        if system != SNOMED or not isinstance(code, str):
            return None
        return self.concepts.get(code)

    def reading(self, codings) -> SnomedConcept | None:
        """The concept a CodeableConcept's codings stand for: the one reading its listed SNOMED CT
        codings agree on; None when none is listed or two listed ones read differently."""
        found = {}
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict):
                concept = self.get(coding.get("system"), coding.get("code"))
                if concept is not None:
                    found[concept.icd10cm] = concept
        return next(iter(found.values())) if len(found) == 1 else None


SNOMED_MAP = SnomedMap()
