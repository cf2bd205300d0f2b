"""ICD-10-CM from the CDC tabular (simple-icd-10-cm 1.5.0 = FY2026, April 1 2026), loaded once.

The import costs about 1.8 s and 175 MB (engineering-notes.md): `serve` loads it before
gunicorn forks its workers, never per request. Lookups are memoised per code.

What the rules need from the tabular:
- `is_billable`: a leaf code (the only kind a card may propose; `S12.100` is valid but not a leaf);
- `display`: the tabular title a proposed coding carries;
- `excludes1_between`: the Excludes1 notes of a code and of its ancestors (notes sit on
  ancestors: `M54.1` holds those of `M54.11`), parsed into code references and ranges;
- `with_seventh`: a fracture or dislocation code completed with placeholder X and 7th character.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
_CODE = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?"
_RANGE = re.compile(rf"^({_CODE})\s*[-\u2013]\s*({_CODE})$")
_PREFIX = re.compile(rf"^({_CODE})\.?-$")
_EXACT = re.compile(rf"^({_CODE})$")
_WELL_FORMED = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
NOT_IN_TABULAR = "not in the ICD-10-CM tabular"
_PARENS = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class CodeReference:
    """A code, a code with all its descendants, or a range, as written in a tabular note."""

    first: str
    last: str | None = None  # set for ranges

    def covers(self, code: str) -> bool:
        bare = code.replace(".", "")
        first = self.first.replace(".", "")
        if self.last is None:
            return bare.startswith(first)
        last = self.last.replace(".", "")
        # A range covers its end points' descendants too (M50-M51 includes M51.16).
        return first <= bare[:len(first)] and bare[:len(last)] <= last


@dataclass(frozen=True)
class Excludes1:
    """One Excludes1 note: where it sits, its text, and the codes it names."""

    on: str
    note: str
    references: tuple[CodeReference, ...]


def parse_references(note: str) -> tuple[CodeReference, ...]:
    refs = []
    for group in _PARENS.findall(note):
        for token in group.split(","):
            token = token.strip().upper()
            if match := _RANGE.match(token):
                refs.append(CodeReference(match.group(1).rstrip("."), match.group(2).rstrip(".")))
            elif match := _PREFIX.match(token):
                refs.append(CodeReference(match.group(1).rstrip(".")))
            elif match := _EXACT.match(token):
                refs.append(CodeReference(match.group(1).rstrip(".")))
    return tuple(refs)


class Terminology:
    def __init__(self):
        self._cm = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    def load(self) -> "Terminology":
        with self._lock:
            if self._cm is None:
                started = time.perf_counter()
                import simple_icd_10_cm as cm  # noqa: PLC0415 - deliberately loaded on demand
                self._cm = cm
                self.load_seconds = time.perf_counter() - started
        return self

    @property
    def loaded(self) -> bool:
        return self._cm is not None

    release = "ICD-10-CM FY2026 (April 1, 2026), CDC tabular via simple-icd-10-cm 1.5.0"

    def _tabular(self):
        if self._cm is None:
            self.load()
        return self._cm

    # ------------------------------------------------------------------ codes
    @staticmethod
    def normalise(code: str) -> str:
        """'m4311 ' → 'M43.11' (EHRs send codes with and without the dot)."""
        code = code.strip().upper()
        if "." not in code and len(code) > 3:
            code = code[:3] + "." + code[3:]
        return code

    @staticmethod
    def well_formed(code: str) -> bool:
        """The shape of an ICD-10-CM code (letter, digit, alphanumeric, then a dot and up to four):
        a code from the chart that is not ('M43.1[X](...)', 'M43.1\\n# x') falls under no category."""
        return bool(_WELL_FORMED.fullmatch(code))

    def exists(self, code: str) -> bool:
        return self.well_formed(code) and self._tabular().is_valid_item(code)

    def is_billable(self, code: str) -> bool:
        cm = self._tabular()
        return cm.is_valid_item(code) and cm.is_leaf(code)

    def display(self, code: str) -> str:
        """The tabular's title of a code; for a code not in the tabular (never proposed, but a
        current code can be anything), a fixed wording instead of an exception."""
        return self._tabular().get_description(code) if self.exists(code) else NOT_IN_TABULAR

    def ancestors(self, code: str) -> list[str]:
        return list(self._tabular().get_ancestors(code)) if self.exists(code) else []

    def is_within(self, code: str, prefix: str) -> bool:
        """M43.11 is within M43.1 and within M43.11 (string hierarchy of ICD-10-CM codes)."""
        return self.well_formed(code) and code.replace(".", "").startswith(prefix.replace(".", ""))

    # --------------------------------------------------------------- Excludes1
    def excludes1(self, code: str) -> tuple[Excludes1, ...]:
        return _excludes1_of(self, code) if self.exists(code) else ()

    def excludes1_between(self, a: str, b: str) -> list[Excludes1]:
        """The Excludes1 notes (of a and its ancestors, or of b and its ancestors) naming the other."""
        return list(_between(self, a, b))

    # ----------------------------------------------------------- 7th character
    def seventh_characters(self, code: str) -> dict[str, str]:
        cm = self._tabular()
        for candidate in [code] + self.ancestors(code):
            definition = cm.get_seven_chr_def(candidate)
            if definition:
                return dict(definition)
        return {}

    def with_seventh(self, code: str, seventh: str) -> str | None:
        """S12.14 + A → S12.14XA, when that is a billable code of the tabular."""
        category, _, rest = code.partition(".")
        full = f"{category}.{rest.ljust(3, 'X')}{seventh}"
        return full if self.is_billable(full) else None


@lru_cache(maxsize=4096)
def _excludes1_cached(cm_id: int, code: str, cm) -> tuple[Excludes1, ...]:
    notes = []
    for holder in [code] + list(cm.get_ancestors(code)):
        for note in cm.get_excludes1(holder):
            refs = parse_references(note)
            if refs:
                notes.append(Excludes1(holder, note, refs))
    return tuple(notes)


@lru_cache(maxsize=65536)
def _between_cached(a: str, b: str, cm_id: int, terminology: "Terminology") -> tuple[Excludes1, ...]:
    found = [n for n in terminology.excludes1(a) if any(r.covers(b) for r in n.references)]
    found += [n for n in terminology.excludes1(b) if any(r.covers(a) for r in n.references)]
    return tuple(found)


def _between(terminology: Terminology, a: str, b: str) -> tuple[Excludes1, ...]:
    return _between_cached(a, b, id(terminology._tabular()), terminology)


def _excludes1_of(terminology: Terminology, code: str) -> tuple[Excludes1, ...]:
    cm = terminology._tabular()
    return _excludes1_cached(id(cm), code, cm)
