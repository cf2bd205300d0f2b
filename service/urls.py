"""One canonical form for every URL the service checks against an allowlist before sending a
token or fetching keys (a FHIR server's base, an attachment `url`, a Bundle's `next` link, a JWT
`jku`).

The form is RFC 3986 §6.2.2 syntax-based normalisation plus §6.2.3 scheme-based normalisation:
scheme and host lower-cased, the default port dropped, a host's one trailing dot dropped, an
IPv6 literal in its compressed form, percent-encodings of unreserved characters decoded and the
others upper-cased, characters that must be encoded encoded, dot segments removed (§5.2.4), the
fragment dropped. What no honest server sends is refused rather than guessed at: userinfo
(`user:pass@`), backslashes, control characters and whitespace, an encoded slash or backslash
(`%2F`, `%5C`) or a double encoding (`%25`) in the path, a segment that becomes `.` or `..` once decoded (`%2e%2e`) or once a
`;parameter` is cut (Tomcat's `..;`), malformed percent-encodings, IPv6 zone ids, hosts that are
not plain ASCII names or IP literals.

A URL is under an allowed base when its canonical form starts with the base's canonical form
ending in `/`: `http://host/fhirX/` is not under `http://host/fhir/`.

Why not a library: the `rfc3986` package normalises case and dot segments but neither decodes
unreserved percent-encodings (so `%2e%2e` survives to the server) nor drops default ports, and it
is not a dependency; urllib3 (what requests sends with) removes dot segments only before requests
decodes `%2e` into `.`. So this module does the explicit steps on top of urllib.parse, and
`fhir_server` checks the URL requests has prepared, which is the one that goes on the wire.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

MAX_URL_LENGTH = 4096
DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stand unencoded in a path segment (pchar) or a query, besides %XX.
_PCHAR = _UNRESERVED | frozenset("!$&'()*+,;=:@")
_QUERY = _PCHAR | frozenset("/?")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"  # "_": container names
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")


class UnsafeUrl(ValueError):
    """Why a URL was refused: a short phrase, safe to log (it never quotes the URL)."""


def check_characters(url: str) -> None:
    """UnsafeUrl when `url` (absolute or relative) holds what no honest server sends: checked on a
    relative reference before it is resolved too, as resolving could drop the evidence."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("not a URL")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl("URL too long")
    if FORBIDDEN.search(url):
        raise UnsafeUrl("control character, space or backslash in the URL")
    if _PERCENT.search(url):
        raise UnsafeUrl("malformed percent-encoding")


def canonical(url: str) -> str:
    """The canonical form of an absolute http(s) URL, or UnsafeUrl."""
    check_characters(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("malformed host or port") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("not an http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeUrl("userinfo in the URL")
    host = _host(parts.netloc, parts.hostname)
    if port == 0:
        raise UnsafeUrl("port 0")
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = remove_dot_segments(_path(parts.path or "/"))
    query = _encode(parts.query, _QUERY)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def base(url: str) -> str:
    """An allowlist entry's canonical form, ending in `/` (no query)."""
    value = canonical(url)
    if "?" in value:
        raise UnsafeUrl("a base URL has no query")
    return value if value.endswith("/") else value + "/"


def is_under(url: str, bases) -> bool:
    """Whether the canonical form of `url` is one of `bases` (canonical, from `base`) or below one."""
    try:
        value = canonical(url)
    except UnsafeUrl:
        return False
    path_end = value.split("?", 1)[0]
    return any(path_end == b[:-1] or value.startswith(b) for b in bases)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, for an absolute path."""
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    result = "/" + "/".join(output)
    if output and path.rsplit("/", 1)[-1] in (".", ".."):
        result += "/"  # "/a/b/.." is "/a/", a folder
    return result


def _host(netloc: str, hostname: str | None) -> str:
    if not hostname:
        raise UnsafeUrl("no host")
    if netloc.startswith("["):
        if "%" in hostname:
            raise UnsafeUrl("IPv6 zone id")
        try:
            return f"[{ipaddress.IPv6Address(hostname).compressed}]"
        except ValueError:
            raise UnsafeUrl("malformed IPv6 literal") from None
    name = hostname[:-1] if hostname.endswith(".") else hostname
    if not _HOSTNAME.fullmatch(name) or len(name) > 253:
        raise UnsafeUrl("host is not a plain ASCII name or IP address")
    return name


def _path(raw: str) -> str:
    segments = []
    for segment in raw.split("/"):
        decoded_dots = segment.replace("%2e", ".").replace("%2E", ".")
        if decoded_dots != segment and decoded_dots.split(";", 1)[0] in (".", ".."):
            raise UnsafeUrl("percent-encoded dot segment")
        if segment not in (".", "..") and segment.split(";", 1)[0] in (".", ".."):
            raise UnsafeUrl("dot segment with a parameter")
        segments.append(_encode(segment, _PCHAR, forbid="/\\%"))
    return "/".join(segments)


def _encode(text: str, allowed: frozenset, forbid: str = "") -> str:
    """Percent-encodings of unreserved characters decoded, others upper-cased; the rest of what
    is not allowed encoded (UTF-8)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            decoded = chr(int(text[i + 1:i + 3], 16))
            if decoded in forbid:  # "%25": a server that decodes twice would see what we did not
                raise UnsafeUrl("percent-encoded slash, backslash or percent sign in the path")
            out.append(decoded if decoded in _UNRESERVED else "%" + text[i + 1:i + 3].upper())
            i += 3
            continue
        out.append(ch if ch in allowed else "".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        i += 1
    return "".join(out)
