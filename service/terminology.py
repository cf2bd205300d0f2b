"""ICD-10-CM from the CDC tabular (simple-icd-10-cm 1.5.0 = FY2026, April 1 2026), loaded once.

The import costs about 175 MB and 0.8 s, the garbage collector paused (1.8 s with it running,
engineering-notes.md): `serve` loads it before gunicorn forks its workers, never per request.
Excludes1 lookups are memoised per code.

What the rules need from the tabular:
- `is_billable`: a leaf code (the only kind a card may propose; `S12.100` is valid but not a leaf);
- `display`: the tabular title a proposed coding carries;
- `excludes1_between`: the Excludes1 notes of a code and of its ancestors (notes sit on
  ancestors: `M54.1` holds those of `M54.11`), parsed into code references and ranges;
- `with_seventh`: a fracture or dislocation code completed with placeholder X and 7th character.

Which release: the one simple-icd-10-cm packages (the default), or a CDC release given by path
(SPINE_CDS_TABULAR_XML and SPINE_CDS_CODE_LIST), with its validity period (`Release`): stated by
SPINE_CDS_TABULAR_EFFECTIVE, else derived from the files (the XML's <version> is the fiscal year,
October 1 to September 30; a file name that says April is the April 1 update, April 1 to
September 30). A release given by path is loaded into a copy of the library of its own (the library
keeps its tabular in module globals): loading it never changes the packaged one, which other apps
of the process (a test's) may be using.
"""
from __future__ import annotations

import gc
import importlib.util
import itertools
import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

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


# ------------------------------------------------------------------ releases
PACKAGE = "simple_icd_10_cm"
PACKAGED_FILES = ("icd10c-tabular-April-1-2026.xml", "code-list-April-2026.txt")  # simple-icd-10-cm 1.5.0
XML_SETTING, LIST_SETTING, EFFECTIVE_SETTING = "SPINE_CDS_TABULAR_XML", "SPINE_CDS_CODE_LIST", "SPINE_CDS_TABULAR_EFFECTIVE"
TABULAR_ROOT = "ICD10CM.tabular"
# A code list line starts with a chapter number, a block (A00-A09) or a code, with or without its dot
# (the April 2026 release has categories such as QA0: letter and two alphanumerics).
_LISTED = re.compile(r"\d{1,2}|[A-Z][0-9A-Z]{2}(?:-[A-Z][0-9A-Z]{2}|\.?[0-9A-Z]{0,4})")


class ReleaseError(ValueError):
    """A release that cannot be used, one problem per entry, each naming its setting."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Period:
    """The days a release is valid for, both ends included."""

    start: date
    end: date

    def covers(self, first: date, last: date | None = None) -> bool:
        """Whether every day from `first` to `last` (a partial date is a range of days) is in it."""
        return self.start <= first and (last or first) <= self.end

    def to_json(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"


def parse_period(text: str) -> Period:
    """'2026-10-01/2027-09-30' → Period (ISO dates, START/END, both included)."""
    start, sep, end = str(text).strip().partition("/")
    try:
        if not sep:
            raise ValueError
        period = Period(date.fromisoformat(start.strip()), date.fromisoformat(end.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not START/END in ISO dates, e.g. 2026-10-01/2027-09-30") from None
    if period.start > period.end:
        raise ValueError(f"{text!r}: the start is after the end")
    return period


@dataclass(frozen=True)
class Release:
    """One CDC ICD-10-CM release: its two files, its version and the days it is valid for."""

    tabular_xml: Path
    code_list: Path
    packaged: bool
    version: str | None            # the tabular's <version>: the fiscal year
    april_update: bool             # the April 1 update of that fiscal year (its file name says April)
    period: Period | None
    period_from: str               # how the period is known: "stated", "derived" or "unknown"

    @property
    def fiscal_year(self) -> int | None:
        return int(self.version) if self.version and re.fullmatch(r"\d{4}", self.version) else None

    @property
    def title(self) -> str:
        year = self.fiscal_year
        if year is None:
            return f"ICD-10-CM (tabular version {self.version!r})" if self.version else "ICD-10-CM (tabular without a version)"
        return f"ICD-10-CM FY{year}, April 1 {year} update" if self.april_update else f"ICD-10-CM FY{year}"

    @property
    def source(self) -> str:
        return ("CDC tabular packaged with simple-icd-10-cm 1.5.0" if self.packaged
                else f"CDC tabular {self.tabular_xml} and code list {self.code_list}")

    @property
    def period_explained(self) -> str:
        if self.period_from == "stated":
            return f"stated by {EFFECTIVE_SETTING}"
        if self.period_from == "derived":
            kind = (f"the April 1 update (the tabular's file name says April): April 1 to September 30"
                    if self.april_update else "a fiscal-year release: October 1 to September 30")
            return f"derived from the release: FY{self.fiscal_year} (the tabular's <version>), {kind}"
        return (f"unknown: the tabular's <version> is not a year; state it with {EFFECTIVE_SETTING}")

    def covers(self, day: date) -> bool:
        return self.period is not None and self.period.covers(day)

    def describe(self, files: bool = True) -> dict:
        """What /readyz (files=False: no paths on an open endpoint) and check-config say of it."""
        out = {"release": self.title, "source": "packaged" if self.packaged else "configured"}
        out["effective"] = self.period.to_json() if self.period else "unknown"
        out["effectiveFrom"] = self.period_explained
        if files:
            out["tabularXml"], out["codeList"] = str(self.tabular_xml), str(self.code_list)
        return out

    def cache_key(self) -> tuple:
        """The files as they are on disk: the same files load once per process."""
        stats = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (self.tabular_xml, self.code_list)]
        return (self.packaged, *stats)


def _packaged_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it (no tabular parsed)
    if spec is None or not spec.submodule_search_locations:
        raise ReleaseError([f"{PACKAGE} is not installed (pip install simple-icd-10-cm==1.5.0)"])
    return Path(list(spec.submodule_search_locations)[0])


def _tabular_header(path: Path, setting: str) -> str | None:
    """The tabular's <version>, from its first lines (the rest is read when it is loaded). A file that
    is not a CDC tabular (its root, then <version> and <introduction>, which the library skips
    unread) is a problem naming the setting."""
    depth, root, children, version = 0, None, [], None
    try:
        for event, element in ET.iterparse(path, events=("start", "end")):
            if event == "start":
                depth += 1
                if depth == 1:
                    root = element.tag
                elif depth == 2:
                    children.append(element.tag)
            else:
                if depth == 2 and element.tag == "version":
                    version = (element.text or "").strip()
                depth -= 1
                if depth == 1 and len(children) == 2:
                    break
    except ET.ParseError as exc:
        raise ReleaseError([f"{setting}: {path} is not XML ({exc})"]) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ReleaseError([f"{setting}: {path} cannot be read ({type(exc).__name__}: {exc})"]) from None
    if root != TABULAR_ROOT or children != ["version", "introduction"]:
        found = f"<{root}>" + (f" starting with {', '.join(f'<{c}>' for c in children)}" if children else "")
        raise ReleaseError([f"{setting}: {path} is not a CDC ICD-10-CM tabular (<{TABULAR_ROOT}> starting with "
                            f"<version> and <introduction>; found {found})"])
    return version


def _check_code_list(path: Path, setting: str) -> None:
    """One code a line, the first word of each (the CDC's icd10cm-codes-YYYY.txt, or the library's list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ReleaseError([f"{setting}: {path} cannot be read as UTF-8 text ({type(exc).__name__})"]) from None
    count = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        first = line.split()[0]
        if not _LISTED.fullmatch(first):
            raise ReleaseError([f"{setting}: line {number} of {path} does not start with an ICD-10-CM code "
                                f"({line[:40]!r}): the code list has one code a line, as the CDC's "
                                f"icd10cm-codes-YYYY.txt"])
        count += 1
    if count == 0:
        raise ReleaseError([f"{setting}: {path} lists no code"])


def _readable(value: str, setting: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ReleaseError([f"{setting}: no file {value}"])
    if not os.access(path, os.R_OK):
        raise ReleaseError([f"{setting}: {value} is not readable by this user"])
    return path


def read_release(tabular_xml: str = "", code_list: str = "", effective: str = "") -> Release:
    """The release the settings name (both files, or neither: the packaged one), checked from its
    first lines, with its period: `effective` when stated, else derived from the files. Cheap (the
    tabular is parsed by `Terminology.load`); the packaged release's header is read once."""
    if bool(tabular_xml) != bool(code_list):
        raise ReleaseError([f"{XML_SETTING} and {LIST_SETTING}: give both (the tabular XML and the code list "
                            "of one CDC release) or neither (the packaged April 1 2026 release)"])
    problems: list[str] = []
    stated = None
    if effective:
        try:
            stated = parse_period(effective)
        except ValueError as exc:
            problems.append(f"{EFFECTIVE_SETTING}: {exc}")
    if not tabular_xml:
        base = _packaged()
        release = base
    else:
        try:
            xml, listed = _readable(tabular_xml, XML_SETTING), _readable(code_list, LIST_SETTING)
            version = _tabular_header(xml, XML_SETTING)
            _check_code_list(listed, LIST_SETTING)
            release = _with_derived_period(xml, listed, False, version)
        except ReleaseError as exc:
            problems.extend(exc.problems)
            release = None
    if problems:
        raise ReleaseError(problems)
    if stated is not None:
        release = Release(release.tabular_xml, release.code_list, release.packaged, release.version,
                          release.april_update, stated, "stated")
    return release


def _with_derived_period(xml: Path, listed: Path, packaged: bool, version: str | None) -> Release:
    april = "april" in xml.name.lower()
    year = int(version) if version and re.fullmatch(r"\d{4}", version) else None
    if year is None:
        return Release(xml, listed, packaged, version, april, None, "unknown")
    period = Period(date(year, 4, 1), date(year, 9, 30)) if april else Period(date(year - 1, 10, 1), date(year, 9, 30))
    return Release(xml, listed, packaged, version, april, period, "derived")


@lru_cache(maxsize=1)
def _packaged() -> Release:
    folder = _packaged_dir() / "data"
    xml, listed = (folder / name for name in PACKAGED_FILES)
    return _with_derived_period(xml, listed, True, _tabular_header(xml, "the packaged tabular"))


def packaged_release() -> Release:
    return _packaged()


_TABULAR_STRUCTURES = ("_chapter_list", "_code_to_node", "_all_codes_list", "_all_codes_list_no_dots",
                       "_code_to_index_dictionary")  # simple-icd-10-cm 1.5.0's module-level tabular
_COPIES = itertools.count(1)
_COPY_LOCK = threading.Lock()


def _load_tabular(release: Release):
    """The library's module holding this release. The packaged one: the library as imported (it parses
    its packaged files on import, once per process). Another: a copy of the library of its own, under
    its own name, given the release with `change_version` (the library's API for other files); its
    import parses the packaged files first, which the library does not let one skip."""
    if release.packaged:
        import simple_icd_10_cm as cm  # noqa: PLC0415 - deliberately loaded on demand
        return cm
    with _COPY_LOCK:
        name = f"{PACKAGE}_release_{next(_COPIES)}"  # starts with the library's name: its warnings point at us
        folder = _packaged_dir()
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package  # the copy's relative imports find it here, while it is imported
        try:
            spec.loader.exec_module(package)
            module = sys.modules[f"{name}.{PACKAGE}"]
        finally:
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]  # the Terminology holds the copy; nothing else keeps it alive
    # The copy's first tree (the packaged files, parsed by its import) is dropped before the release's is
    # built, so that the two are never in memory together (206 MB at the peak rather than 295 MB): the
    # structures `change_version` itself empties, in this copy only.
    for structure in _TABULAR_STRUCTURES:
        getattr(module, structure, []).clear()
    gc.collect()
    try:
        module.change_version(all_codes_file_path=str(release.code_list),
                              classification_data_file_path=str(release.tabular_xml))
    except (ET.ParseError, ValueError, KeyError, IndexError, AttributeError, TypeError, UnicodeDecodeError,
            OSError, RecursionError) as exc:
        raise ReleaseError([f"{XML_SETTING} and {LIST_SETTING}: {release.tabular_xml} and {release.code_list} "
                            f"could not be loaded as an ICD-10-CM release ({type(exc).__name__}: "
                            f"{str(exc)[:200]})"]) from None
    if not module.get_all_codes():
        raise ReleaseError([f"{XML_SETTING}: {release.tabular_xml} holds no code"])
    return module


class Terminology:
    def __init__(self, release: Release | None = None):
        self._release = release
        self._cm = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None
        # Per release: a code's notes are those of this tabular (another release may differ).
        self._excludes1 = lru_cache(maxsize=4096)(self._excludes1_of)
        self._between = lru_cache(maxsize=65536)(self._between_of)

    @property
    def release(self) -> Release:
        if self._release is None:
            self._release = packaged_release()
        return self._release

    def load(self) -> "Terminology":
        """Parse the tabular (once). A release that cannot be loaded is a ReleaseError naming its settings.

        The garbage collector is paused meanwhile: the parse creates some 600,000 objects, none of them
        garbage, and the collections they set off were most of its cost (packaged: 1.8 s → 0.8 s; a
        release by path, which parses the packaged files first: 4.6 s → 2.2 s, README "Code-set years")."""
        with self._lock:
            if self._cm is None:
                started = time.perf_counter()
                paused = gc.isenabled()
                gc.disable()
                try:
                    self._cm = _load_tabular(self.release)
                finally:
                    if paused:
                        gc.enable()
                self.load_seconds = time.perf_counter() - started
        return self

    @property
    def loaded(self) -> bool:
        return self._cm is not None

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
        return self._excludes1(code) if self.exists(code) else ()

    def excludes1_between(self, a: str, b: str) -> list[Excludes1]:
        """The Excludes1 notes (of a and its ancestors, or of b and its ancestors) naming the other."""
        return list(self._between(a, b))

    def _excludes1_of(self, code: str) -> tuple[Excludes1, ...]:
        cm = self._tabular()
        notes = []
        for holder in [code] + list(cm.get_ancestors(code)):
            for note in cm.get_excludes1(holder):
                refs = parse_references(note)
                if refs:
                    notes.append(Excludes1(holder, note, refs))
        return tuple(notes)

    def _between_of(self, a: str, b: str) -> tuple[Excludes1, ...]:
        found = [n for n in self.excludes1(a) if any(r.covers(b) for r in n.references)]
        found += [n for n in self.excludes1(b) if any(r.covers(a) for r in n.references)]
        return tuple(found)

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
