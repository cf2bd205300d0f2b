"""The text of reports and notes: attachments decoded, markup stripped.

Text comes from `DiagnosticReport.presentedForm` and `DocumentReference.content.attachment`
(base64 `data`, or a `url` to a Binary on the FHIR server), as text/plain or text/html.
Other content types (PDF, images) are reported as unread, not guessed at.
"""
from __future__ import annotations

import base64
import binascii
import html
import re

READABLE_TYPES = ("text/plain", "text/html", "application/xhtml+xml")


# Markup to text in one pass, linear in the markup whatever it holds: the standard library's
# HTMLParser is quadratic on malformed markup ("<a" * n: 70 KB cost 1.2 s, 270 KB 19 s) and raises
# on some ("<![ x"). Tags are dropped (block tags become line breaks), comments and the content of
# script/style/head/title skipped, character references decoded; an unclosed tag or comment ends the
# text, as in a browser. A note needs its words, not a DOM.
BLOCK_TAGS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "td", "th", "ul",
              "ol", "table", "hr", "pre", "blockquote", "dt", "dd"}
SKIPPED_TAGS = ("script", "style", "head", "title")
_TAG_NAME = re.compile(r"</?\s*([A-Za-z][A-Za-z0-9]*)")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(markup: str, deadline=None) -> str:
    parts: list[str] = []
    lowered = markup.lower()
    position, length, steps = 0, len(markup), 0
    while position < length:
        steps += 1
        if deadline is not None and steps % 4096 == 0:
            deadline.check()
        start = markup.find("<", position)
        if start < 0:
            parts.append(html.unescape(markup[position:]))
            break
        parts.append(html.unescape(markup[position:start]))
        if markup.startswith("<!--", start):
            end = markup.find("-->", start + 4)
            position = length if end < 0 else end + 3
            continue
        end = markup.find(">", start + 1)
        if end < 0:
            break  # an unclosed tag: the rest is inside it
        tag = _TAG_NAME.match(markup, start, end)
        position = end + 1
        if tag is None:
            continue  # "<!DOCTYPE ...>", "<![CDATA[", "< 5": not text we read
        name = tag.group(1).lower()
        closing = markup[start + 1:tag.start(1)].strip() == "/"
        if name in BLOCK_TAGS:
            parts.append("\n")
        elif name in SKIPPED_TAGS and not closing:
            close = lowered.find("</" + name, position)
            if close < 0:
                break
            after = markup.find(">", close)
            position = length if after < 0 else after + 1
    text = "".join(parts)
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
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = data.decode("utf-8", errors="replace")
    if kind == "text/plain":
        return text.strip()
    return html_to_text(text, deadline)


def decode_base64(value: str) -> bytes | None:
    """Strict base64: invalid data is reported, not silently turned into empty text."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate line breaks inside the base64, as many EHRs send it
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
