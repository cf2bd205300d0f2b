"""Reading the EHR's FHIR server when prefetch did not bring what the rules need.

Only servers on the configured allowlist are contacted (SSRF), with short connect and read
timeouts inside the hook call's deadline, a bounded number of pages and bytes, and no
redirects. The access token goes in the Authorization header and nowhere else, and only to a
URL under the fhirServer's base, itself under an allowed base, both compared in the canonical
form of service/urls.py (dot segments, percent-encodings, userinfo, ports). The check is made on
the URL exactly as requests prepared it for the wire.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from urllib.parse import urljoin

import requests

from . import metrics, urls
from .deadline import Deadline
from .hook_request import FhirAccess

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirUnavailable(Exception):
    """The data could not be had. `reason` is a short phrase safe to log and to answer; `kind`, for a
    read of the FHIR server that failed here, is counted (service/metrics.py, FHIR_FAILURES)."""

    def __init__(self, reason: str, kind: str | None = None):
        self.reason = reason
        if kind is not None:
            metrics.fhir_fetch_failed(kind)
        super().__init__(reason)


class FhirServerPolicy:
    """Which servers may be read, and the limits every read keeps."""

    def __init__(self, allowlist, connect_timeout: float, read_timeout: float,
                 max_pages: int, max_bytes: int):
        self.allowlist = tuple(urls.base(u) for u in allowlist)  # UnsafeUrl: the settings check it
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self._session = requests.Session()
        # No proxies, no .netrc credentials from the environment: we talk to the EHR directly.
        self._session.trust_env = False

    def allows(self, server: str | None) -> bool:
        return bool(server) and bool(self.allowlist) and urls.is_under(server, self.allowlist)

    def reader(self, access: FhirAccess, deadline: Deadline) -> "FhirReader | None":
        if not self.allows(access.server):
            if access.server:
                metrics.fhir_fetch_failed("not_allowed")
            return None
        return FhirReader(self, access, deadline)


class FhirReader:
    """One hook call's reads: shares its deadline and its byte budget."""

    def __init__(self, policy: FhirServerPolicy, access: FhirAccess, deadline: Deadline):
        self.policy = policy
        self.access = access
        self.base = urls.base(access.server)  # allowed, so canonical
        self.deadline = deadline
        self.bytes_read = 0

    # ------------------------------------------------------------------ public
    def read(self, relative: str) -> dict | None:
        """A read (`Type/id`): the resource, or None when the server says it does not exist."""
        return self._get_json(self._resolve(relative), missing_is_none=True)

    def search(self, relative: str) -> dict:
        """A search: one searchset Bundle with the entries of every page (bounded)."""
        bundle = self._get_json(self._resolve(relative))
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FhirUnavailable("search did not return a Bundle", "unexpected_resource")
        return self.follow_pages(bundle)

    def follow_pages(self, bundle: dict) -> dict:
        entries = [e for e in _list(bundle.get("entry"))]
        pages = 1
        next_url = _next_link(bundle)
        while next_url:
            if pages >= self.policy.max_pages:
                raise FhirUnavailable(f"more than {self.policy.max_pages} pages", "too_many_pages")
            page = self._get_json(self._resolve(next_url))
            if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
                raise FhirUnavailable("a next page was not a Bundle", "unexpected_resource")
            entries.extend(_list(page.get("entry")))
            pages += 1
            next_url = _next_link(page)
        merged = {k: v for k, v in bundle.items() if k not in ("entry", "link")}
        merged["entry"] = entries
        return merged

    def read_binary(self, url: str) -> tuple[str, bytes]:
        """An attachment's url (usually `Binary/id`): its content type and bytes."""
        resource = self._get_json(self._resolve(url))
        if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
            raise FhirUnavailable("attachment url did not return a Binary", "unexpected_resource")
        try:
            data = base64.b64decode(resource.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise FhirUnavailable("Binary.data is not valid base64", "invalid_base64") from None
        return resource.get("contentType") or "", data

    # ----------------------------------------------------------------- private
    def _resolve(self, url: str) -> str:
        """`url` (relative to the base, or absolute) in canonical form, when under the base."""
        try:
            urls.check_characters(url)  # before urljoin, which reads a backslash its own way
            absolute = urls.canonical(urljoin(self.base, url))
        except urls.UnsafeUrl as exc:
            raise FhirUnavailable(f"a URL outside the FHIR server was refused ({exc})", "url_refused") from None
        if not urls.is_under(absolute, (self.base,)):
            raise FhirUnavailable("a URL outside the FHIR server was refused", "url_refused")
        return absolute

    def _get_json(self, url: str, missing_is_none: bool = False):
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise FhirUnavailable("deadline reached", "deadline")
        budget = self.policy.max_bytes - self.bytes_read
        session = self.policy._session
        prepared = session.prepare_request(
            requests.Request("GET", url, headers={"Accept": FHIR_JSON, **self.access.headers}))
        # What goes on the wire is what was checked: requests re-quotes, so check its URL again.
        if prepared.url != url or not urls.is_under(prepared.url, (self.base,)):
            raise FhirUnavailable("a URL outside the FHIR server was refused", "url_refused")
        try:
            with session.send(
                prepared,
                timeout=(min(self.policy.connect_timeout, remaining), min(self.policy.read_timeout, remaining)),
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if status in (404, 410) and missing_is_none:
                    return None
                if 300 <= status < 400:
                    raise FhirUnavailable(f"redirect ({status}) refused", "redirect")
                if status in (401, 403):
                    raise FhirUnavailable(f"not authorized ({status})", "unauthorized")
                if status != 200:
                    raise FhirUnavailable(f"server answered {status}", "status")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > budget:
                    raise FhirUnavailable("response larger than the byte budget", "too_large")
                chunks, size = [], 0
                for chunk in response.iter_content(chunk_size=65536):
                    size += len(chunk)
                    if size > budget:
                        raise FhirUnavailable("response larger than the byte budget", "too_large")
                    if self.deadline.expired:
                        raise FhirUnavailable("deadline reached", "deadline")
                    chunks.append(chunk)
                self.bytes_read += size
        except requests.Timeout:
            raise FhirUnavailable("timeout", "timeout") from None
        except requests.RequestException as exc:
            raise FhirUnavailable(f"connection failed ({type(exc).__name__})", "connection") from None
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise FhirUnavailable("invalid JSON", "invalid_json") from None


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _next_link(bundle: dict) -> str | None:
    for link in _list(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
