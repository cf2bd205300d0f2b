"""Spinal levels however written, and the region each one places a finding in.

"C1-C2", "C1/2", "C1 on C2", "C0-C1", "C5-6", "L4 on L5", "C1–2" are segments between two
vertebrae; "C2" alone is a vertebra or a nerve root; "atlantoaxial", "craniocervical junction",
"odontoid", "dens", "atlas" name the occipito-atlanto-axial region (C0–C2); "cervical",
"upper cervical", "lumbar" … name a region without a level. "Occipital headache" is no level.

The region depends on what is measured (rules.md §2): a slip of C2 on C3 is cervical (the
C2-C3 segment), while a C2 nerve root is occipito-atlanto-axial (M54.11 covers the C1–C2 roots,
M54.12 C3 and below).
"""
from __future__ import annotations

import bisect
import re
from typing import NamedTuple

from .concepts import lower_same_length

OAA = "occipito-atlanto-axial"
CERVICAL = "cervical"
CERVICOTHORACIC = "cervicothoracic"
THORACIC = "thoracic"
THORACOLUMBAR = "thoracolumbar"
LUMBAR = "lumbar"
LUMBOSACRAL = "lumbosacral"
SACRAL = "sacral"
MULTIPLE = "multiple"
REGIONS = (OAA, CERVICAL, CERVICOTHORACIC, THORACIC, THORACOLUMBAR, LUMBAR, LUMBOSACRAL, SACRAL, MULTIPLE)

_MAX = {"C": 8, "T": 12, "L": 5, "S": 5}
_VERTEBRA = r"(?:(?P<{n}l>[CTLS])\s?(?P<{n}n>\d{{1,2}})|(?P<{n}o>occiput|O|Oc))"
_PAIR = re.compile(
    r"\b" + _VERTEBRA.format(n="a") +
    r"\s*(?:-|\u2013|\u2014|/|\bto\b|\bon\b|\bover\b|\bthrough\b)\s*(?:(?P<bl>[CTLS])\s?)?(?P<bn>\d{1,2})\b"
)
# T1/T2 are MRI weightings and S1/S2 heart sounds far more often than levels in those phrases.
_SINGLE = re.compile(
    r"(?<!S1 and )(?<!S1, )(?<!S1 )\b(?P<l>[CTLS])\s?(?P<n>\d{1,2})\b"
    r"(?!\s*(?:-?weighted|W\b|signal|hyper|hypo|images?|sequences?|and\s+S2|,\s*S2|\s*S2))"
)
# Matched on the lower-cased sentence (same length), with the word boundary before a match checked
# after it: case-insensitive matching and a leading \b made these two a third of the level cost.
_NAMED_OAA = re.compile(
    r"(?:occipito-?atlanto-?axial|atlanto-?axial|atlantoaxial|atlanto-?occipital|atlantooccipital|"
    r"occipito-?cervical|occipitocervical|cranio-?cervical\s+junction|craniocervical|cranio-?vertebral\s+junction|"
    r"craniovertebral|odontoid|dens|atlas|c0|lateral\s+mass(?:es)?\s+of\s+c1|"
    r"(?<=atlas\sand\s)axis|\(axis\))\b"
)
_GENERIC = re.compile(r"(?:cervicothoracic|thoracolumbar|lumbosacral|cervical|thoracic|lumbar|sacral|sacrococcygeal|"
                      r"neck)\b")
_GENERIC_UPPER = re.compile(r"\b(upper|high|mid|lower)\s*$")


class LevelMention(NamedTuple):
    start: int
    end: int
    text: str
    segment_region: str | None  # the region of a slip, disc or stenosis at this level
    root_region: str | None     # the region of a nerve root at this level
    specific: bool              # a named level (C1-C2, odontoid) rather than a region word
    upper_cervical: bool = False  # "upper/high cervical": not a C0-C2 level (M50.x1 is C2-C4)


def _vertebra(letter: str, number: int) -> tuple[str, int] | None:
    letter = letter.upper()
    if letter == "C" and number == 0:
        return ("C", 0)
    if 1 <= number <= _MAX[letter]:
        return (letter, number)
    return None


def _vertebra_region(v: tuple[str, int]) -> str:
    letter, n = v
    if letter == "C":
        return OAA if n <= 2 else CERVICAL
    return {"T": THORACIC, "L": LUMBAR, "S": SACRAL}[letter]


def _root_region(v: tuple[str, int]) -> str:
    letter, n = v
    if letter == "C":
        return OAA if n <= 2 else CERVICAL
    if letter == "S":
        return LUMBOSACRAL if n == 1 else SACRAL
    return {"T": THORACIC, "L": LUMBAR}[letter]


def _segment_region(upper: tuple[str, int], lower: tuple[str, int]) -> str | None:
    (ul, _), (ll, ln) = upper, lower
    if ul == "C" and ll == "C":
        return OAA if ln <= 2 else CERVICAL
    pair = (ul, ll)
    return {("C", "T"): CERVICOTHORACIC, ("T", "T"): THORACIC, ("T", "L"): THORACOLUMBAR,
            ("L", "L"): LUMBAR, ("L", "S"): LUMBOSACRAL, ("S", "S"): SACRAL}.get(pair)


_LEVEL_DIGIT = re.compile(r"[CTLSctls]\s?\d|[Oo](?:cciput|c)?\s*(?:-|\u2013|/|to|on)\s*[Cc]?\d")
_NAMED_HINTS = ("atlant", "occipit", "cranio", "odontoid", "dens", "atlas", "c0", "lateral mass", "axis")
_GENERIC_HINTS = ("cervic", "thorac", "lumb", "sacr", "neck")


def find_levels(sentence: str) -> list[LevelMention]:
    """Every level mention of a sentence. Each pattern runs only when the sentence has what it
    needs (a digit, or one of its words): most sentences have none, and the tests are cheaper."""
    mentions: list[LevelMention] = []
    taken: list[tuple[int, int]] = []  # sorted, not overlapping: a look-up is a bisection
    lowered = lower_same_length(sentence)
    has_digit = _LEVEL_DIGIT.search(sentence) is not None  # a vertebra's letter and number, not any date
    has_named = any(h in lowered for h in _NAMED_HINTS)
    has_generic = any(h in lowered for h in _GENERIC_HINTS)

    def free(start: int, end: int) -> bool:
        i = bisect.bisect_left(taken, (start, start))
        if i < len(taken) and taken[i][0] < end:
            return False
        return not (i > 0 and taken[i - 1][1] > start)

    def take(start: int, end: int) -> None:
        bisect.insort(taken, (start, end))

    for m in _PAIR.finditer(sentence) if has_digit else ():
        if m.group("ao"):
            upper = ("C", 0)
        else:
            upper = _vertebra(m.group("al"), int(m.group("an")))
        lower_letter = (m.group("bl") or (m.group("al") or "C")).upper()
        lower = _vertebra(lower_letter, int(m.group("bn")))
        if upper is None or lower is None:
            continue
        if m.group("ao") and lower_letter != "C":
            continue
        region = _segment_region(upper, lower)
        if region is None:
            continue
        # A root named by its segment (C5-6 radiculopathy) takes the segment's region.
        mentions.append(LevelMention(m.start(), m.end(), m.group(), region, region, True))
        take(m.start(), m.end())

    for m in _NAMED_OAA.finditer(lowered) if has_named or has_digit else ():
        if m.start() and lowered[m.start() - 1].isalnum() and lowered[m.start()] != "(":
            continue  # inside a word ("addens")
        if free(m.start(), m.end()):
            mentions.append(LevelMention(m.start(), m.end(), sentence[m.start():m.end()], OAA, OAA, True))
            take(m.start(), m.end())

    for m in _SINGLE.finditer(sentence) if has_digit else ():
        if not free(m.start(), m.end()):
            continue
        vertebra = _vertebra(m.group("l"), int(m.group("n")))
        if vertebra is None:
            continue
        mentions.append(LevelMention(m.start(), m.end(), m.group(), _vertebra_region(vertebra),
                                     _root_region(vertebra), True))
        take(m.start(), m.end())

    for m in _GENERIC.finditer(lowered) if has_generic else ():
        if m.start() and (lowered[m.start() - 1].isalnum() or lowered[m.start() - 1] == "_"):
            continue
        before = _GENERIC_UPPER.search(lowered, max(0, m.start() - 7), m.start())
        start = before.start() if before else m.start()
        if not free(start, m.end()):
            continue
        word = m.group()
        region = CERVICAL if word == "neck" else (SACRAL if word == "sacrococcygeal" else word)
        if word == "neck" and not before:
            continue  # "neck pain" places nothing
        upper = before is not None and before.group(1) in ("upper", "high") and region == CERVICAL
        mentions.append(LevelMention(start, m.end(), sentence[start:m.end()], region, region, False, upper))
        take(start, m.end())
    return sorted(mentions, key=lambda x: x.start)
