"""CORS for the CDS Hooks endpoints (`/cds-services*`): the browser origins of SPINE_CDS_CORS_ORIGINS.

flask-cors answers the allowed origins (a preflight needs no token). A request to those endpoints
that carries an `Origin` not on the list, and not the service's own, is refused before anything
runs: a 403 OperationOutcome naming the origin and the setting to change, so that a developer
whose browser says only "CORS error" can read why (in the network panel, or with curl), and a
WARNING in the log with the origin only (never a header or a body), at most once per origin a
minute per worker, from a bounded set of origins (a flood of origins cannot fill the log either).
Requests without an `Origin` (an EHR's server, curl) are not concerned.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from urllib.parse import unquote, urlsplit

from flask import Flask, request
from flask_cors import CORS

from .errors import Issue, Problem

log = logging.getLogger(__name__)

SETTING = "SPINE_CDS_CORS_ORIGINS"
PATHS = r"/cds-services*"  # the resources given to flask-cors, matched the same way (re.match)
_PATHS = re.compile(PATHS)
MAX_SHOWN = 200  # an origin longer than this is cut where it is logged or named
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REGEX_HINTS = set("[]?$()\\*^")  # what flask-cors would read as a regular expression


def normalise_origin(value: str) -> str:
    """`*`, or an origin as a browser sends it: scheme://host[:port], lower case, without the default
    port or a trailing slash. ValueError saying how to write it otherwise."""
    text = str(value).strip()
    if text == "*":
        return "*"
    example = "e.g. http://localhost:3000"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} is not an origin (scheme://host[:port], {example})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin: write scheme://host[:port] with http or https, {example}")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment \
            or "#" in text or "?" in text:
        raise ValueError(f"{text!r} is not an origin: no path, query or user, only scheme://host[:port] "
                         f"as the browser sends it ({example})")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")


class RefusalLog:
    """Logs a refused origin at most once per `interval` seconds, remembering at most `capacity`
    origins; beyond them, one line per interval says how many went unlogged."""

    def __init__(self, interval: float = 60.0, capacity: int = 256, clock=time.monotonic):
        self.interval, self.capacity, self.clock = interval, capacity, clock
        self._seen: OrderedDict[str, list] = OrderedDict()  # origin -> [last logged, refused since]
        self._overflow = [float("-inf"), 0]
        self._lock = threading.Lock()

    def refused(self, origin: str, kind: str) -> None:
        now = self.clock()
        with self._lock:
            entry = self._seen.get(origin)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1  # logged within the interval: counted, said the next time
                return
            # Kept in the order they were last logged: the expired ones are at the front (this
            # origin's among them, when it was seen before).
            while self._seen and now - next(iter(self._seen.values()))[0] >= self.interval:
                self._seen.popitem(last=False)
            unlogged = entry[1] if entry is not None else 0
            if len(self._seen) >= self.capacity:
                self._overflow[1] += 1
                if now - self._overflow[0] < self.interval:
                    return
                unlogged, self._overflow = self._overflow[1], [now, 0]
                log.warning("CORS: refused requests from more than %d origins within %d s (answered 403); "
                            "%d refused since this was last said, not logged one by one",
                            self.capacity, self.interval, unlogged)
                return
            self._seen[origin] = [now, 0]
        if unlogged:
            log.warning("CORS: refused a %s from origin %s, not in %s (answered 403; %d more refused "
                        "since it was last logged)", kind, origin, SETTING, unlogged)
        else:
            log.warning("CORS: refused a %s from origin %s, not in %s (answered 403)", kind, origin, SETTING)


def _flask_cors_origin(origin: str):
    """A literal origin for flask-cors, which reads `[` (an IPv6 host) as a regular expression."""
    if _REGEX_HINTS.isdisjoint(origin):
        return origin
    return re.compile(re.escape(origin) + r"\Z", re.IGNORECASE)


def _origin_of(url: str) -> str | None:
    """The origin of a URL (the public base URL may have a path), or None."""
    try:
        parts = urlsplit(url)
        return normalise_origin(f"{parts.scheme}://{parts.netloc}") if parts.scheme and parts.netloc else None
    except ValueError:
        return None


def _shown(origin: str) -> str:
    return origin if len(origin) <= MAX_SHOWN else origin[:MAX_SHOWN] + "…"


def install(app: Flask, settings) -> None:
    """flask-cors on the CDS Hooks endpoints, and the refusal of the origins it does not allow."""
    origins = [normalise_origin(o) for o in settings.cors_origins]
    any_origin = "*" in origins
    CORS(app, resources={PATHS: {}}, origins="*" if any_origin else [_flask_cors_origin(o) for o in origins],
         allow_headers=["Authorization", "Content-Type"], methods=["GET", "POST", "OPTIONS"],
         max_age=86400)
    if any_origin:
        return
    allowed = frozenset(origins)
    listed = ",".join(origins)
    public = _origin_of(settings.public_base_url)
    refusals = RefusalLog()

    def own(origin: str) -> bool:
        """A request from the service's own pages (browsers send Origin on a same-origin POST)."""
        try:
            origin = normalise_origin(origin)
            return origin in (public, _origin_of(f"{request.scheme}://{request.host}"))
        except ValueError:
            return False

    @app.before_request
    def refuse_unlisted_origin():
        origin = request.headers.get("Origin")
        if not origin or not _PATHS.match(unquote(request.path)):
            return None
        if origin.casefold() in allowed or own(origin):
            return None
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        shown = _shown(origin)
        refusals.refused(shown, "preflight" if preflight else "cross-origin request")
        suggestion = f"{listed},{shown}" if listed else shown
        raise Problem(403, [Issue("forbidden", (
            f"the browser origin {shown} may not call this service (CORS): it is not in {SETTING}. "
            f"To allow it, add it, written as the browser sends it (scheme://host[:port], no path), "
            f"to the comma-separated list, e.g. {SETTING}={suggestion}, and restart the service"))],
            headers={"Content-Type": "application/fhir+json", "Vary": "Origin"})
