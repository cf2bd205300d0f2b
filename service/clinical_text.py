"""The text of reports and notes: attachments decoded, markup stripped.

Text comes from `DiagnosticReport.presentedForm` and `DocumentReference.content.attachment`
(base64 `data`, or a `url` to a Binary on the FHIR server), as text/plain or text/html.
Other content types (PDF, images) are reported as unread, not guessed at.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re

from turbohtml.saxparse import SaxHandler, sax_parse

from .deadline import DeadlineExceeded

log = logging.getLogger(__name__)

READABLE_TYPES = ("text/plain", "text/html", "application/xhtml+xml")


# Markup to text with turbohtml's WHATWG parser (C, MIT, tox-dev), read through its SAX events: the tree
# the parser built (implied tags, misnested tags, foster parenting) without a Python object per node.
# Chosen over the home-made scanner it replaces and over selectolax, lxml, html5lib and justhtml by
# `bench/worst_case.py --html-only` (figures in the README): it caps open-element nesting at 512 as browsers
# do (selectolax/lexbor is quadratic in the depth: 200 KB of "<div>" 8.9 s; lxml/libxml2 drops the
# whole text past depth 256), and it reads "pain < 5" as text (the scanner dropped it). Block tags
# become line breaks, the content of script/style/head/title and comments is dropped, character
# references are decoded, whitespace is kept as written (runs of spaces made one) for the sentence
# splitter. The parse of one document is one C call: the markup is cut at MAX_MARKUP_CHARS first (a
# bounded parse, at most about 0.2 s for the megabyte), the deadline is checked before it and every 4096
# events of the walk, and any error of the parser ends the text there instead of raising.
BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "td", "th",
                        "ul", "ol", "table", "hr", "pre", "blockquote", "dt", "dd"})
SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})
MAX_MARKUP_CHARS = 1024 * 1024  # HTML read per attachment (bytes, and characters); record.py reports a longer one
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_CHECK_EVERY = 4096


class _Text(SaxHandler):
    """Collects the text of the SAX events; checks the deadline every _CHECK_EVERY elements."""

    def __init__(self, deadline):
        self.parts: list[str] = []
        self.skipping = 0
        self.events = 0
        self.deadline = deadline

    def characters(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)

    def start_element(self, tag: str, attrs) -> None:
        self.events += 1
        if self.deadline is not None and self.events % _CHECK_EVERY == 0:
            self.deadline.check()
        if self.skipping or tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def end_element(self, tag: str) -> None:
        if self.skipping:
            self.skipping -= 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")


def html_to_text(markup: str, deadline=None) -> str:
    """The text of an HTML document, whatever its markup: never raises but DeadlineExceeded."""
    if not isinstance(markup, str):
        return ""
    markup = markup[:MAX_MARKUP_CHARS]
    try:
        markup.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text, and the JSON of a card could not carry them
        markup = markup.encode("utf-8", errors="replace").decode("utf-8")
    if deadline is not None:
        deadline.check()
    handler = _Text(deadline)
    try:
        sax_parse(markup, handler)
    except DeadlineExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - a parser failure ends the text there; never the hook
        log.warning("HTML parser stopped: %s", type(exc).__name__)
    if deadline is not None:
        deadline.check()
    text = "".join(handler.parts)
    text = _SPACES.sub(" ", text)
    return _BLANK_LINES.sub("\n", text).strip()


def media_type(content_type: str | None) -> tuple[str, str]:
    """('text/html', 'utf-8') from 'text/html; charset=UTF-8'."""
    if not content_type:
        return "", "utf-8"
    main, _, params = content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return main.strip().lower(), charset


def decode_text(content_type: str | None, data: bytes, deadline=None) -> str | None:
    """The readable text of an attachment's bytes, or None when its type is not text."""
    kind, charset = media_type(content_type)
    if kind not in READABLE_TYPES:
        return None
    if kind != "text/plain":
        data = data[:MAX_MARKUP_CHARS]  # bytes: a cut character decodes as U+FFFD
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = data.decode("utf-8", errors="replace")
    if kind == "text/plain":
        return text.strip()
    return html_to_text(text, deadline)


def is_html(content_type: str | None) -> bool:
    return media_type(content_type)[0] in READABLE_TYPES[1:]


def decode_base64(value: str) -> bytes | None:
    """Strict base64: invalid data is reported, not silently turned into empty text."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate line breaks inside the base64, as many EHRs send it
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
