"""The text of reports and notes: attachments decoded, markup stripped.

Text comes from `DiagnosticReport.presentedForm` and `DocumentReference.content.attachment`
(base64 `data`, or a `url` to a Binary on the FHIR server), as text/plain, text/html, RTF
(`text/rtf`, `application/rtf`, through striprtf) or PDF with a text layer (`application/pdf`,
through pypdf). A scanned PDF (images, no text layer) is reported as unread, never OCRed; other
content types (images, CDA) are reported as unread, not guessed at. Every reader is bounded (bytes,
pages, content per page, the hook's deadline) and never raises but DeadlineExceeded: what it could
not read is said in `Reading.problems`, fixed phrases without content.
"""
from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import warnings
from dataclasses import dataclass, field

import pypdf
from pypdf.errors import LimitReachedError, PdfReadWarning
from striprtf.striprtf import rtf_to_text
from turbohtml.saxparse import SaxHandler, sax_parse

from .deadline import DeadlineExceeded

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
RTF_TYPES = ("text/rtf", "application/rtf")
PDF_TYPES = ("application/pdf",)
READABLE_TYPES = ("text/plain", *HTML_TYPES, *RTF_TYPES, *PDF_TYPES)
# Several attachments of one document (DocumentReference.content[], DiagnosticReport.presentedForm[]:
# the same document in several formats) are read in this order, the first that gives text only.
PREFERENCE = {"text/plain": 0, "text/html": 1, "application/xhtml+xml": 1, "text/rtf": 2, "application/rtf": 2,
              "application/pdf": 3}


@dataclass
class Reading:
    """An attachment's text (None: nothing read) and what could not be read of it (fixed phrases with
    the caps' numbers, never content: they go to the answer and to the log)."""

    text: str | None
    problems: list[str] = field(default_factory=list)


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


def media_type(content_type: str | None) -> tuple[str, str | None]:
    """('text/html', 'utf-8') from 'text/html; charset=UTF-8'; the charset is None when not given."""
    if not content_type:
        return "", None
    main, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').strip("'").lower()
    return main.strip().lower(), charset


# Labels EHRs write for what is in fact Windows-1252 (the WHATWG Encoding Standard maps them so: the
# C1 controls of ISO-8859-1 are never what a note means, Windows-1252's quotes and dashes are).
_WINDOWS_1252 = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii",
                           "windows-1252", "cp1252", "x-cp1252"})
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_charset(data: bytes, charset: str | None, default: str = "utf-8") -> str:
    """Bytes to text: a byte-order mark first (it says what the bytes are), then the declared charset
    (ISO-8859-1 and US-ASCII read as Windows-1252), then `default`; undecodable bytes become U+FFFD."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    codec = charset or default
    if codec in _WINDOWS_1252:
        codec = "cp1252"
    try:
        return data.decode(codec, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode(default, errors="replace")


def read_attachment(content_type: str | None, data: bytes, deadline=None) -> Reading:
    """The readable text of an attachment's bytes (None when its type is not read, or nothing could
    be read), with what was not read. Never raises but DeadlineExceeded."""
    kind, charset = media_type(content_type)
    if kind == "text/plain":
        return Reading(decode_charset(data, charset).strip())
    if kind in HTML_TYPES:
        problems = []
        if len(data) > MAX_MARKUP_CHARS:
            problems.append(f"HTML attachment over {MAX_MARKUP_CHARS} bytes: only its beginning read")
            data = data[:MAX_MARKUP_CHARS]  # bytes: a cut character decodes as U+FFFD
        return Reading(html_to_text(decode_charset(data, charset), deadline), problems)
    if kind in RTF_TYPES:
        return rtf_reading(data, charset, deadline)
    if kind in PDF_TYPES:
        return pdf_reading(data, deadline)
    return Reading(None)


def decode_text(content_type: str | None, data: bytes, deadline=None) -> str | None:
    """The readable text of an attachment's bytes, or None when its type is not text."""
    return read_attachment(content_type, data, deadline).text


def is_html(content_type: str | None) -> bool:
    return media_type(content_type)[0] in HTML_TYPES


def preference(content_type: str | None) -> int:
    """Where an attachment of this type comes among the formats of one document (lower first)."""
    return PREFERENCE.get(media_type(content_type)[0], len(PREFERENCE))


# ------------------------------------------------------------------------------------------ RTF
# striprtf (pure Python, BSD, maintained): one regex tokenizer over the document, destinations (font
# and colour tables, pictures, fields' instructions, \* groups) skipped, \'hh decoded in the
# document's code page, \uN read. Measured (fhir_fixtures/ehr/measure_readers.py) it is linear on
# every shape but two whose regexes backtrack on one long line: a font table never closed, and a flood
# of field starts. Both are defused before it runs, without changing the text: a line break (which RTF
# ignores) goes before every group, so no regex scans past one; a font table over MAX_RTF_FONT_TABLE
# characters, or never closed, is refused. Picture and object groups (the bulk of large RTF) are cut
# out first; the rest is read up to MAX_RTF_CHARS (one call the deadline cannot interrupt: bounded by
# that cap instead, the deadline checked before and after).
MAX_RTF_BYTES = 4 * 1024 * 1024     # an RTF attachment over this is not read (pictures included)
MAX_RTF_CHARS = 256 * 1024          # of RTF markup once pictures are cut out: the rest is not read
MAX_RTF_FONT_TABLE = 16 * 1024
_RTF_BINARY_GROUPS = re.compile(r"\{(?:\\\*)?\\(?:pict|object|shppict|nonshppict|blipuid|datastore|themedata|"
                                r"colorschememapping|bin)\b")
_BRACES = re.compile(r"\\[\\{}]|[{}]")
_GROUP_START = re.compile(r"(?<!\\)\{")
_BIG_UNICODE = re.compile(r"\\u(-?\d+)")
_FONT_ENTRY = re.compile(r"\\f(?=\d)")


def _group_end(text: str, start: int) -> int:
    """The index after the group that opens at `start` (its closing brace), or -1 if never closed."""
    depth = 0
    for match in _BRACES.finditer(text, start):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.end()
    return -1


def _without_binary_groups(text: str) -> str:
    parts, position = [], 0
    while True:
        match = _RTF_BINARY_GROUPS.search(text, position)
        if match is None:
            break
        end = _group_end(text, match.start())
        parts.append(text[position:match.start()] + "{}")  # an empty group: a control word before it stays one
        if end < 0:
            return "".join(parts)  # an unclosed picture runs to the end: nothing after it is text
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _unicode_in_range(match: re.Match) -> str:
    value = int(match.group(1)) if len(match.group(1)) <= 6 else 1 << 20
    return match.group() if -32768 <= value <= 65535 else "\\u63"  # \uN is a signed 16-bit number; else "?"


def rtf_reading(data: bytes, charset: str | None = None, deadline=None) -> Reading:
    if len(data) > MAX_RTF_BYTES:
        return Reading(None, [f"RTF attachment over {MAX_RTF_BYTES} bytes: not read"])
    if deadline is not None:
        deadline.check()
    # RTF is 7-bit with escapes; raw 8-bit bytes some writers leave are read as Windows-1252
    markup = decode_charset(data, charset, default="cp1252")
    if not markup.lstrip().startswith("{\\rtf"):
        return Reading(None, ["RTF without its {\\rtf header: not read"])
    problems = []
    try:
        markup = _without_binary_groups(markup)
        if len(markup) > MAX_RTF_CHARS:
            problems.append(f"RTF over {MAX_RTF_CHARS} characters (pictures aside): only its beginning read")
            markup = markup[:MAX_RTF_CHARS]
        table = markup.find("\\fonttbl")
        if table >= 0:
            start = markup.rfind("{", 0, table)
            end = _group_end(markup, start) if start >= 0 else -1
            if end < 0 or end - start > MAX_RTF_FONT_TABLE:
                return Reading(None, problems + [f"RTF font table unclosed or over {MAX_RTF_FONT_TABLE} "
                                                 "characters: not read"])
            markup = markup[:start] + _FONT_ENTRY.sub("\n\\\\f", markup[start:end]) + markup[end:]
        markup = _BIG_UNICODE.sub(_unicode_in_range, markup)
        # a closing brace last: striprtf decodes a run of \'hh escapes only when a token follows it
        markup = _GROUP_START.sub("\n{", markup) + "}"
        text = rtf_to_text(markup, encoding="cp1252", errors="replace")
    except DeadlineExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed RTF is reported, never the hook's failure
        log.warning("RTF reader stopped: %s", type(exc).__name__)
        return Reading(None, problems + ["RTF could not be read (malformed)"])
    if deadline is not None:
        deadline.check()
    text = _clean(text)
    if not text:
        return Reading(None, problems + ["RTF without text: nothing read"])
    return Reading(text, problems)


# ------------------------------------------------------------------------------------------ PDF
# pypdf (pure Python, BSD, maintained, explicit resource limits): the text layer page by page, in
# content-stream order, with a blank line where the page leaves one (the sentence splitter reads
# paragraph breaks). Bounded: the attachment's bytes (MAX_PDF_BYTES), pages read (MAX_PDF_PAGES),
# decoded content per page (MAX_PDF_PAGE_CONTENT: parsing a content stream is one pypdf call, about
# 1.4 ms per KB), pypdf's own decompression and parsing limits made tighter (_PDF_LIMITS: a 1 GB flate
# bomb stops at 8 MB), and the deadline checked between pages and every 256 operators. pypdfium2 was
# faster (PDFium) but inflated a 1 MB flate bomb to 2.9 GB in 16 s inside one C call, and pdfminer.six
# recursed to a RecursionError on a thousand overlapping lines; figures in the README.
MAX_PDF_BYTES = 4 * 1024 * 1024
MAX_PDF_PAGES = 30
MAX_PDF_PAGE_CONTENT = 64 * 1024
_PDF_LIMITS = {
    "maximum_declared_stream_length": 8_000_000,
    "array_based_stream_maximum_output_length": 8_000_000,
    "zlib_maximum_output_length": 8_000_000,
    "lzw_maximum_output_length": 8_000_000,
    "run_length_maximum_output_length": 8_000_000,
    "brotli_maximum_output_length": 8_000_000,
    "jbig2_maximum_output_length": 8_000_000,
    "image_maximum_buffer_size": 8_000_000,
    "stream_decoding_work_maximum_length": 32_000_000,
    "stream_parsing_work_maximum_count": 200_000,
    "array_maximum_element_count": 50_000,
    "dictionary_maximum_element_count": 20_000,
    "page_tree_maximum_entries": 10_000,
    "page_tree_maximum_depth": 32,
    "page_tree_maximum_page_entries": 200_000,
    "xform_maximum_invocations_per_extraction": 200,
    "jbig2dec_binary": None,  # never run an external program on a document
}
_CHECK_OPERATORS = 256
# pypdf says what it tolerates in a malformed file through warnings and its logger, now and then with
# bytes of the file: neither may reach the log (clinical text).
logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)
warnings.filterwarnings("ignore", category=PdfReadWarning)


def _content_bytes(page) -> int:
    """The decoded size of a page's content streams (each decode bounded by _PDF_LIMITS)."""
    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, list) else [contents]
    total = 0
    for stream in streams[:64]:
        stream = stream.get_object()
        if hasattr(stream, "get_data"):
            total += len(stream.get_data())
        if total > MAX_PDF_PAGE_CONTENT:
            break
    return total


class _PageText:
    """Collects a page's text through pypdf's visitors: a blank line where the text jumps down by
    more than 1.9 lines of its font, the deadline every _CHECK_OPERATORS operators."""

    def __init__(self, deadline):
        self.parts: list[str] = []
        self.deadline = deadline
        self.operators = 0
        self.last_y = None

    def operator(self, *_):
        self.operators += 1
        if self.deadline is not None and self.operators % _CHECK_OPERATORS == 0:
            self.deadline.check()

    def text(self, text, cm, tm, _font, size):
        if not text:
            return
        if text.strip():
            try:
                y = tm[5] * cm[3] + tm[4] * cm[1] + cm[5]
                height = abs(size * tm[3] * cm[3]) or abs(size) or 10.0
            except (TypeError, IndexError):
                y, height = None, 10.0
            if y is not None and self.last_y is not None and self.last_y - y > 1.9 * height:
                if self.parts and not self.parts[-1].endswith("\n"):
                    self.parts.append("\n")
                self.parts.append("\n")
            if y is not None:
                self.last_y = y
        self.parts.append(text)


def pdf_reading(data: bytes, deadline=None) -> Reading:
    if len(data) > MAX_PDF_BYTES:
        return Reading(None, [f"PDF attachment over {MAX_PDF_BYTES} bytes: not read"])
    if deadline is not None:
        deadline.check()
    problems: list[str] = []
    pages_text: list[str] = []
    over_content = 0
    try:
        with pypdf.apply_configuration(**_PDF_LIMITS):
            reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                return Reading(None, ["PDF encrypted: not read"])
            count = len(reader.pages)
            if count > MAX_PDF_PAGES:
                problems.append(f"PDF over {MAX_PDF_PAGES} pages: only its first {MAX_PDF_PAGES} read")
            for number in range(min(count, MAX_PDF_PAGES)):
                if deadline is not None:
                    deadline.check()
                page = reader.pages[number]
                try:
                    size = _content_bytes(page)
                except LimitReachedError:  # a content stream inflating past _PDF_LIMITS
                    size = MAX_PDF_PAGE_CONTENT + 1
                if size > MAX_PDF_PAGE_CONTENT:
                    over_content += 1
                    continue
                collector = _PageText(deadline)
                page.extract_text(visitor_operand_before=collector.operator, visitor_text=collector.text)
                pages_text.append("".join(collector.parts))
    except DeadlineExceeded:
        raise
    except LimitReachedError:  # a stream inflating past _PDF_LIMITS (a flate bomb), a structure too large
        log.warning("PDF reader stopped: %s", "LimitReachedError")
        problems.append("PDF over the reader's limits (stream size or structure)" +
                        (": not read" if not pages_text else ": read up to that page"))
    except Exception as exc:  # noqa: BLE001 - a malformed PDF is reported, never the hook's failure
        log.warning("PDF reader stopped: %s", type(exc).__name__)
        problems.append("PDF could not be read (malformed)" if not pages_text else
                        "PDF could not be read past a malformed page")
    if over_content:
        problems.append(f"PDF pages with over {MAX_PDF_PAGE_CONTENT} bytes of content not read: {over_content}")
    if deadline is not None:
        deadline.check()
    text = _clean("\n\n".join(pages_text))
    if not text:
        if pages_text and not problems:
            problems.append("PDF without a text layer (scanned images): not read, no OCR")
        elif not problems:
            problems.append("PDF without pages: nothing read")
        return Reading(None, problems)
    return Reading(text, problems)


_TRAILING_SPACES = re.compile(r"[ \t\f\v]+\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def _clean(text: str) -> str:
    """Line ends made LF, trailing spaces and runs of blank lines dropped (one blank line kept)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACES.sub("\n", text)
    return _MANY_BLANK_LINES.sub("\n\n", text).strip()


def decode_base64(value: str) -> bytes | None:
    """Strict base64: invalid data is reported, not silently turned into empty text."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # tolerate line breaks inside the base64, as many EHRs send it
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
