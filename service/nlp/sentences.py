"""Sentences of clinical text as EHRs send it: hard-wrapped lines, lists, headers, level lines.

A line break is a sentence end only where the document says so: a blank line, a list item or a
level line ("C5-C6: ...") or a section header starting the next line, or a line that ends its
sentence (". ! ?", a header's ":"). A line that stops mid-sentence (EHR text wraps at about 80
characters: "... acquired; no⏎   trauma hx.") runs on into the next. Within a line, ". ! ?" end a
sentence unless they belong to an abbreviation or a number, and "; C4-C5: ..." starts a new one
(radiology level lines joined into one line).

Cost: one pass over the lines and one over the full stops, each step bounded (the abbreviation
look-back reads at most a few characters), so splitting is linear in the text. A sentence longer
than `max_chars` is cut at its last clause break before the limit, and the cut is counted: the
reader reports it (no silent truncation).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Abbreviations whose dot never ends a sentence ("Dr. Smith", "e.g. the"), and those whose dot ends
# one only before a capital ("denies trauma hx. MRI shows ...", but "hx. of falls").
_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "fig", "st", "cf", "incl", "b.i.d", "t.i.d",
                  "q.d", "p.r.n"}
_ABBREVIATIONS_AT_END = {"no", "pt", "pts", "etc", "hx", "fx", "yo", "y.o", "a.m", "p.m", "sx", "dx", "tx"}
_ABBREVIATION_LOOKBACK = 8  # longest abbreviation with its inner dots ("p.r.n"): the look-back is bounded
# A full stop (or ! ?) that may end a sentence: followed by white space or the end of the text.
_STOP = re.compile(r"[.!?]+(?=\s|$)")
# A list item or a level line at the start of a line: "- ", "* ", "• ", "1. ", "2) ", "a) ", "C5-C6:", "At C1-C2,".
_ITEM = re.compile(r"(?:[-*\u2022\u00b7>]\s|\(?\d{1,2}[.)]\s|\(?[a-hA-H][.)]\s|\[\s?[xX ]?\s?\]\s)")
LEVEL_LABEL = re.compile(
    r"(?:(?:at|At|AT)\s+(?:the\s+)?)?"
    r"(?:[CTLS]\s?\d{1,2}\s?(?:-|\u2013|/)\s?[CTLS]?\s?\d{1,2}|[Oo]cciput\s?-\s?C1|C0\s?-\s?C1|"
    r"[Cc]raniocervical junction|CCJ|[Aa]tlanto-?axial(?: joint| articulation)?|[Aa]tlanto-?occipital(?: joint)?)"
    r"(?:\s+(?:level|disc space|interspace))?\s*(?::|,|\s-\s|\.\s)")
# "; C4-C5:" inside a line: a level line joined to the one before.
_JOINED_LEVEL = re.compile(r";\s*(?=" + LEVEL_LABEL.pattern + ")")
# Words a sentence does not end with: a line ending in one runs on.
_RUN_ON_WORDS = {"no", "not", "of", "the", "a", "an", "and", "or", "with", "without", "to", "for", "at", "in",
                 "on", "by", "from", "denies", "denied", "negative", "positive", "is", "are", "was", "were",
                 "has", "have", "had", "but", "than", "as", "into", "which", "that", "including", "includes",
                 "possible", "probable", "likely", "mild", "moderate", "severe", "left", "right", "bilateral",
                 "w/", "w/o", "s/p", "h/o", "no.", "vs", "versus", "due", "secondary", "status", "post"}
_WRAP_WIDTH = 50  # a line at least this long that stops without punctuation was wrapped by the EHR


@dataclass
class Splitting:
    """Sentence spans of a text and what the splitter had to cut."""

    spans: list[tuple[int, int]] = field(default_factory=list)
    long_sentences_cut: int = 0


def split_sentences(text: str, headers: list[tuple[int, int]] | None = None, max_chars: int = 1500,
                    deadline=None) -> list[tuple[int, int]]:
    return split(text, headers, max_chars, deadline).spans


def split(text: str, headers: list[tuple[int, int]] | None = None, max_chars: int = 1500,
          deadline=None) -> Splitting:
    """Spans (start, end) of the sentences of `text`, white space trimmed, empty ones dropped.
    `headers` are (start, end) spans of section headers (the sectionizer's): each ends a sentence
    and is left out of every sentence."""
    breaks = _line_breaks(text, headers or [], deadline)
    breaks.extend(_stops(text, deadline))
    breaks.extend((m.start(), m.start() + 1) for m in _JOINED_LEVEL.finditer(text))
    for start, end in headers or []:
        breaks.append((start, end))
    breaks.sort()
    out = Splitting()
    position = 0
    for start, end in breaks:
        if start < position:
            position = max(position, end)
            continue
        _emit(text, position, start, max_chars, out)
        position = end
    _emit(text, position, len(text), max_chars, out)
    return out


def _line_breaks(text: str, headers: list[tuple[int, int]], deadline) -> list[tuple[int, int]]:
    """The line breaks that end a sentence, as (start, end) spans of the break itself."""
    header_starts = {s for s, _ in headers}
    header_ends = {e for _, e in headers}
    out = []
    lines = text.split("\n")
    position = 0
    previous = None  # (stripped text, start offset) of the last non-blank line
    blank_since = False
    for n, line in enumerate(lines):
        if deadline is not None and n % 2048 == 2047:
            deadline.check()
        start = position
        position += len(line) + 1
        stripped = line.strip()
        if not stripped:
            blank_since = True
            continue
        first = start + (len(line) - len(line.lstrip()))
        if previous is not None:
            prev_text, prev_end = previous
            if blank_since or _starts_new(stripped, first, header_starts) or _ends_sentence(prev_text, prev_end,
                                                                                             header_ends):
                out.append((prev_end, first))
        previous = (stripped, first + len(stripped))
        blank_since = False
    return out


def _starts_new(line: str, offset: int, header_starts: set[int]) -> bool:
    if offset in header_starts or _ITEM.match(line) or LEVEL_LABEL.match(line):
        return True
    # A line in capitals ("IMPRESSION", "FINDINGS") or a "Label: value" field starts a new sentence.
    head = line[:40]
    if head.isupper() and any(c.isalpha() for c in head):
        return True
    colon = line.find(":", 0, 40)
    return colon > 0 and line[0].isupper() and len(line[:colon].split()) <= 4 and not line[:colon].endswith("http")


def _ends_sentence(line: str, end: int, header_ends: set[int]) -> bool:
    if end in header_ends or line.endswith((".", "!", "?", ":", ";")):
        return True
    words = line.rsplit(None, 1)
    last = words[-1].lower() if words else ""
    if last in _RUN_ON_WORDS or last.endswith(","):
        return False
    # A short line that ends without punctuation is a list entry or a label ("Neck pain"), unless
    # the next line continues it; a long one was wrapped by the EHR.
    return len(line) < _WRAP_WIDTH


def _stops(text: str, deadline=None) -> list[tuple[int, int]]:
    out = []
    for n, m in enumerate(_STOP.finditer(text)):
        if deadline is not None and n % 4096 == 4095:
            deadline.check()
        if m.group() == "." and _is_abbreviation(text, m.start()):
            continue
        if m.group()[0] in "?!" and (m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in ")]")):
            continue  # a "?" before a finding ('"? C2 radiculopathy"') questions it, it ends nothing
        if m.group() == "." and _is_list_number(text, m.start()):
            continue
        out.append((m.end(), m.end()))
    return out


def _emit(text: str, start: int, end: int, max_chars: int, out: Splitting) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    while end - start > max_chars:
        cut = _clause_cut(text, start, start + max_chars)
        out.spans.append((start, cut))
        out.long_sentences_cut += 1
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        out.spans.append((start, end))


def _clause_cut(text: str, start: int, limit: int) -> int:
    """Where a sentence over the length cap is cut: after its last ';' or ',' before the cap, else
    at its last space, else at the cap."""
    for mark in (";", ",", " "):
        i = text.rfind(mark, start + 1, limit)
        if i > start:
            return i + 1
    return limit


def _is_abbreviation(text: str, dot: int) -> bool:
    word_start = dot
    floor = max(0, dot - _ABBREVIATION_LOOKBACK)
    while word_start > floor and (text[word_start - 1].isalpha() or text[word_start - 1] == "."):
        word_start -= 1
    if word_start > 0 and word_start == floor and (text[word_start - 1].isalpha()):
        return False  # a long word: no abbreviation of ours is that long
    word = text[word_start:dot].lower()
    if word in _ABBREVIATIONS_AT_END:
        following = text[dot + 1:dot + 3].lstrip()[:1]
        return not following[:1].isupper()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and word not in "ai")


def _is_list_number(text: str, dot: int) -> bool:
    """The dot of a list number at the start of a line ("1. Degenerative ..."): no sentence end."""
    i = dot
    while i > 0 and dot - i < 3 and text[i - 1].isdigit():
        i -= 1
    if i == dot:
        return False
    j = i
    while j > 0 and text[j - 1] in " \t":
        j -= 1
    return j == 0 or text[j - 1] == "\n"
