"""URL tricks against the FHIR allowlist and the jku allowlist (issue 11), over real HTTP.

With `<fake>/fhir/` allowed, every trick is tried through the real hook path (a prefetch-less
hook call with fhirServer and fhirAuthorization): as a DocumentReference attachment url, as a
searchset's `next` link, and as the fhirServer itself. Two witnesses:
- the fake FHIR server logs every request line as it arrived: none may be outside `/fhir/`
  once read as a server would (percent-decoded, dot segments removed, `;params` cut), and the
  "secret" it keeps at `/admin/secret` and `/fhirX/` is never asked for;
- a canary socket (a listening loopback socket standing for another host) accepts no
  connection at all, so no request and no Authorization header reach it.
Tricks that merely spell an allowed URL differently (case, default port, trailing dot, `.`
segments, `%6E` for `n`) are normalised: read from the allowed server, at the canonical path.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import requests
from hypothesis import given, settings as hyp_settings, strategies as st

from service import urls

from .support import fresh, load_fixture, searchset

pytestmark = pytest.mark.served

PATIENT = "pt-1001"
TOKEN = "opaque-access-token-allowlist"
SERVICE = "/cds-services/spine-coding-order-sign"
FIXTURE = "order-sign_c1-c2-slip_coded-m43.10.json"
NOTE = "Assessment: C1-C2 radiculopathy with occipital scalp numbness."
SECRET = "SECRET ADMIN DOCUMENT"


class Canary:
    """A listening loopback socket standing for a host outside the allowlist: records every
    connection and the bytes it was sent, answers nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(0.3)
            try:
                self.received.append(conn.recv(65536))
            except OSError:
                self.received.append(b"")
            conn.close()

    def close(self):
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def canary():
    c = Canary()
    yield c
    c.close()


def _binary(text: str) -> dict:
    return {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}


@pytest.fixture
def world(make_app, serve, fhir_server, canary):
    """The served app, the fake FHIR server with its secrets, and the canary."""
    prefetch = load_fixture(FIXTURE)["prefetch"]
    fhir_server.route(f"Patient/{PATIENT}", prefetch["patient"])
    fhir_server.route("Encounter/enc-2001", prefetch["encounter"])
    fhir_server.route("Condition", prefetch["conditions"])
    fhir_server.route("Procedure", prefetch["procedures"])
    fhir_server.route("DiagnosticReport", prefetch["diagnosticReports"])
    fhir_server.route("DocumentReference", prefetch["documentReferences"])
    fhir_server.route("Binary/note-1", _binary(NOTE))
    for outside in ("/admin/secret", "/admin", "/fhirX/Binary/note-1", "/secret"):
        fhir_server.routes[outside] = (200, _binary(SECRET), 0, {})
    app = serve(make_app(fhir_allowlist=[fhir_server.base + "/"], hook_deadline=3.0,
                         fhir_read_timeout=0.5, fhir_connect_timeout=0.5))
    return app, fhir_server, canary


def _call(app, fhir_base: str, prefetch: dict | None = None):
    body = fresh(load_fixture(FIXTURE))
    body.pop("prefetch")
    if prefetch:
        body["prefetch"] = prefetch
    body["fhirServer"] = fhir_base
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "spine-cds"}
    response = requests.post(app.url + SERVICE, json=body, timeout=15)
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    assert response.status_code != 500, response.text[:300]
    assert TOKEN not in response.text
    return response


def _as_a_server_reads_it(raw_path: str) -> str:
    """How a lenient server could read a request target: decoded, backslashes as slashes,
    `;params` cut, dot segments removed."""
    path = unquote(raw_path.split("?", 1)[0]).replace("\\", "/")
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    return urls.remove_dot_segments(path if path.startswith("/") else "/" + path)


def _assert_nothing_outside(fhir_server, canary):
    assert canary.received == [], "the canary host was contacted"
    for request in fhir_server.requests:
        seen = _as_a_server_reads_it(request["path"])
        assert seen.startswith("/fhir/"), f"{request['path']!r} read outside the base"
        assert request["path"].split("?", 1)[0] == seen, f"{request['path']!r} is not canonical"
    assert not any(r["path"].startswith(("/admin", "/fhirX", "/secret")) for r in fhir_server.requests)


def _tricks(p: int, q: int) -> dict[str, str]:
    """name → URL (absolute or relative to the base); p the FHIR server's port, q the canary's."""
    fhir = f"http://127.0.0.1:{p}/fhir"
    return {
        "dot segments, absolute": f"{fhir}/Binary/../../admin/secret",
        "dot segments, relative": "Binary/../../admin/secret",
        "dot segments above the base": "../admin/secret",
        "encoded dots": f"{fhir}/%2e%2e/admin/secret",
        "encoded dots, relative": "Binary/%2E%2E/%2e%2E/admin/secret",
        "half-encoded dots": "Binary/.%2e/.%2e/admin/secret",
        "encoded dots and slash": f"{fhir}/%2E%2E%2Fadmin%2Fsecret",
        "encoded slashes": "Binary%2F..%2F..%2Fadmin%2Fsecret",
        "encoded backslashes": "Binary%5C..%5C..%5Cadmin%5Csecret",
        "tomcat path parameter": "Binary/..;/..;/admin/secret",
        "backslashes, relative": "Binary\\..\\..\\admin\\secret",
        "backslash before the host": f"http://127.0.0.1:{q}\\@127.0.0.1:{p}/fhir/Binary/note-1",
        "backslashes as the authority": f"\\\\127.0.0.1:{q}/fhir/Binary/note-1",
        "userinfo": f"http://user:pass@127.0.0.1:{p}/fhir/Binary/note-1",
        "userinfo that looks like the host": f"http://127.0.0.1:{p}@127.0.0.1:{q}/fhir/Binary/note-1",
        "another port": f"http://127.0.0.1:{q}/fhir/Binary/note-1",
        "another host with a trailing dot": f"http://127.0.0.1.:{q}/fhir/Binary/note-1",
        "network-path reference": f"//127.0.0.1:{q}/fhir/Binary/note-1",
        "IPv6 literal of another host": f"http://[::ffff:127.0.0.1]:{q}/fhir/Binary/note-1",
        "IPv6 zone id": f"http://[fe80::1%25lo]:{q}/fhir/Binary/note-1",
        "a sibling of the base": f"http://127.0.0.1:{p}/fhirX/Binary/note-1",
        "a sibling of the base, relative": "../fhirX/Binary/note-1",
        "CRLF header injection": "Binary/note-1\r\nX-Forged: 1",
        "space": "Binary/note-1 HTTP/1.1",
        "malformed percent": "Binary/%zz/../../admin",
        "another scheme": "file:///etc/passwd",
        "double encoding": "Binary/%252e%252e/%252e%252e/admin/secret",
    }


NORMALISED = {
    "upper-case scheme": "HTTP://127.0.0.1:{p}/fhir/Binary/note-1",
    "trailing-dot host": "http://127.0.0.1.:{p}/fhir/Binary/note-1",
    "dot segments inside the base": "http://127.0.0.1:{p}/fhir/Binary/x/../note-1",
    "single dot": "./Binary/./note-1",
    "encoded unreserved characters": "Binary/%6Eote%2D1",
    "a fragment": "Binary/note-1#top",
}


def _document(url: str) -> dict:
    return searchset({"resourceType": "DocumentReference", "id": "doc-url", "status": "current",
                      "subject": {"reference": f"Patient/{PATIENT}"},
                      "content": [{"attachment": {"contentType": "text/plain", "url": url}}]})


TRICK_NAMES = list(_tricks(1, 2))


@pytest.mark.parametrize("name", TRICK_NAMES)
def test_an_attachment_url_outside_the_base_is_never_fetched(world, name):
    app, fhir_server, canary = world
    fhir_server.route("DocumentReference", _document(_tricks(fhir_server.server.server_port, canary.port)[name]))
    response = _call(app, fhir_server.base)
    assert response.status_code == 200
    skipped = response.json()["extension"]["spine-coding-cds"]["skipped"]
    assert any("attachment url not read" in s["problem"] for s in skipped), skipped
    _assert_nothing_outside(fhir_server, canary)
    assert f"/fhir/DocumentReference?patient={PATIENT}" in fhir_server.paths()  # the control: it did run


@pytest.mark.parametrize("name", TRICK_NAMES)
def test_a_next_link_outside_the_base_is_never_followed(world, name):
    app, fhir_server, canary = world
    trick = _tricks(fhir_server.server.server_port, canary.port)[name]
    fhir_server.route("Condition", searchset(next_url=trick))
    response = _call(app, fhir_server.base)
    assert response.status_code == 412  # Conditions are required: the search could not be completed
    assert "refused" in response.json()["issue"][0]["diagnostics"], fhir_server.paths()
    _assert_nothing_outside(fhir_server, canary)
    assert f"/fhir/Condition?patient={PATIENT}" in fhir_server.paths()


def test_a_prefetched_page_with_a_tricky_next_link_is_not_completed(world):
    app, fhir_server, canary = world
    prefetch = dict(load_fixture(FIXTURE)["prefetch"])
    prefetch["conditions"] = searchset(next_url="Condition/../../admin/secret")
    response = _call(app, fhir_server.base, prefetch=prefetch)
    assert response.status_code == 412
    _assert_nothing_outside(fhir_server, canary)
    assert fhir_server.requests == []


@pytest.mark.parametrize("server", [
    "http://127.0.0.1:{p}/fhir/../admin", "http://127.0.0.1:{p}/fhir/%2e%2e/admin",
    "http://127.0.0.1:{p}/fhirX", "http://user:pass@127.0.0.1:{p}/fhir", "http://127.0.0.1:{p}@127.0.0.1:{q}/fhir",
    "http://127.0.0.1:{q}/fhir", "http://127.0.0.1:{q}\\@127.0.0.1:{p}/fhir", "http://[::ffff:127.0.0.1]:{q}/fhir",
])
def test_a_fhir_server_outside_the_allowlist_is_never_contacted(world, server):
    app, fhir_server, canary = world
    response = _call(app, server.format(p=fhir_server.server.server_port, q=canary.port))
    assert response.status_code in (400, 412)
    assert fhir_server.requests == [] and canary.received == []


def test_a_fhir_server_spelled_differently_is_read_at_its_canonical_urls(world):
    app, fhir_server, canary = world
    response = _call(app, f"HTTP://127.0.0.1.:{fhir_server.server.server_port}/fhir/./")
    assert response.status_code == 200, response.text
    assert f"/fhir/Condition?patient={PATIENT}" in fhir_server.paths()
    _assert_nothing_outside(fhir_server, canary)


@pytest.mark.parametrize("name", list(NORMALISED))
def test_an_allowed_url_spelled_differently_is_read_at_its_canonical_path(world, name):
    app, fhir_server, canary = world
    url = NORMALISED[name].format(p=fhir_server.server.server_port)
    fhir_server.route("DocumentReference", _document(url))
    response = _call(app, fhir_server.base)
    assert response.status_code == 200
    assert "skipped" not in response.json().get("extension", {}).get("spine-coding-cds", {}), response.json()
    binary = [r for r in fhir_server.requests if "Binary" in r["path"]]
    assert [r["path"] for r in binary] == ["/fhir/Binary/note-1"]
    assert binary[0]["authorization"] == f"Bearer {TOKEN}"
    _assert_nothing_outside(fhir_server, canary)


@pytest.mark.parametrize("location", ["http://127.0.0.1:{q}/fhir/Binary/note-1", "/admin/secret",
                                      "../../admin/secret"])
def test_a_redirect_out_of_the_base_is_not_followed(world, location):
    app, fhir_server, canary = world
    fhir_server.route("Binary/moved", b"", status=302,
                      headers={"Location": location.format(q=canary.port)})
    fhir_server.route("DocumentReference", _document("Binary/moved"))
    response = _call(app, fhir_server.base)
    assert response.status_code == 200
    skipped = response.json()["extension"]["spine-coding-cds"]["skipped"]
    assert any("redirect (302) refused" in s["problem"] for s in skipped), skipped
    _assert_nothing_outside(fhir_server, canary)


# ------------------------------------------------------------------- the jku allowlist
def test_jku_tricks_are_refused_and_the_configured_jku_is_fetched(make_app, fhir_server, canary):
    from .test_jwt import BASE, ISS, Client, _get

    ehr = Client()
    fhir_server.route("jwks", ehr.jwks)
    fhir_server.routes["/evil-jwks"] = (200, Client().jwks, 0, {})
    p, q = fhir_server.server.server_port, canary.port
    jku = f"http://127.0.0.1:{p}/fhir/jwks"
    client = make_app(trusted_issuers=[{"iss": ISS, "jku": [jku]}], public_base_url=BASE).test_client()
    for trick in [f"http://127.0.0.1:{p}/fhir/jwks/../../evil-jwks", f"http://127.0.0.1:{p}/fhir/%2e%2e/evil-jwks",
                  f"http://user@127.0.0.1:{p}/fhir/jwks", f"http://127.0.0.1:{p}@127.0.0.1:{q}/fhir/jwks",
                  f"http://127.0.0.1:{q}/fhir/jwks", f"http://127.0.0.1:{p}/fhir/jwksX", 42, ["x"]]:
        assert _get(client, ehr.token(headers={"jku": trick})).status_code == 401, trick
    assert fhir_server.requests == [] and canary.received == []
    # the same URL spelled differently is the configured one, and that is what is fetched
    assert _get(client, ehr.token(headers={"jku": f"HTTP://127.0.0.1.:{p}/fhir/./jwks"})).status_code == 200
    assert fhir_server.paths() == ["/fhir/jwks"]


# ------------------------------------------------------------------------ canonical form
@pytest.mark.parametrize("url,expected", [
    ("http://host:80/fhir/", "http://host/fhir/"),
    ("https://host:443/fhir/", "https://host/fhir/"),
    ("https://host:80/fhir/", "https://host:80/fhir/"),
    ("HTTP://HOST/fhir/", "http://host/fhir/"),
    ("http://HOST./fhir/", "http://host/fhir/"),
    ("http://[0:0:0:0:0:0:0:1]:8080/fhir/", "http://[::1]:8080/fhir/"),
    ("http://[::FFFF:7F00:1]/fhir/", "http://[::ffff:7f00:1]/fhir/"),
    ("http://host/fhir/a/./b/../c", "http://host/fhir/a/c"),
    ("http://host/fhir/a/b/..", "http://host/fhir/a/"),
    ("http://host/../../fhir/", "http://host/fhir/"),
    ("http://host/fhir/%7e%41%2d", "http://host/fhir/~A-"),
    ("http://host/fhir/%c3%a9", "http://host/fhir/%C3%A9"),
    ("http://host/fhir/é", "http://host/fhir/%C3%A9"),
    ("http://host/fhir/x?a=%2f&b=[1]", "http://host/fhir/x?a=%2F&b=%5B1%5D"),
    ("http://host/fhir/x#frag", "http://host/fhir/x"),
    ("http://host", "http://host/"),
])
def test_canonical_form(url, expected):
    assert urls.canonical(url) == expected
    assert urls.canonical(expected) == expected
    assert requests.Request("GET", expected).prepare().url == expected  # what requests sends


@pytest.mark.parametrize("url", [
    "http://user:pass@host/fhir/", "http://user@host/fhir/", "http://host\\fhir/", "http://host/fhir\\x",
    "http://host/fhir/%2e%2e/x", "http://host/fhir/%2E/x", "http://host/fhir/a%2Fb", "http://host/fhir/a%5cb",
    "http://host/fhir/..;/x", "http://host/fhir/.;x/y", "http://host/fhir/%2", "http://h%6Fst/fhir/",
    "http://[fe80::1%25eth0]/fhir/", "http://[::1/fhir/", "http://host:0/fhir/", "http://host:99999/fhir/",
    "http://host:x/fhir/", "ftp://host/fhir/", "http:///fhir/", "http://hôst/fhir/", "http://ho st/fhir/",
    "http://host/fhir/\x00", "", None, 42, "http://" + "a" * 5000,
])
def test_unsafe_urls_are_refused(url):
    with pytest.raises(urls.UnsafeUrl):
        urls.canonical(url)


@pytest.mark.parametrize("url,under", [
    ("http://host/fhir/Patient/1", True), ("http://host:80/fhir/Patient/1", True), ("http://host/fhir", True),
    ("http://HOST./fhir/x", True), ("http://host/fhirX/", False), ("http://host/fhir/../x", False),
    ("https://host/fhir/x", False), ("http://host:8080/fhir/x", False), ("http://host.evil/fhir/x", False),
    ("http://evil/host/fhir/x", False), ("http://host/FHIR/x", False), ("http://host/fhir/%2e%2e/x", False),
])
def test_is_under(url, under):
    assert urls.is_under(url, (urls.base("http://host/fhir"),)) is under


def test_settings_refuse_an_unusable_allowlist_entry_or_jku():
    from service.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="FHIR_ALLOWLIST.*userinfo"):
        Settings.from_mapping({"fhir_allowlist": ["http://u:p@ehr.test/fhir"]})
    with pytest.raises(ConfigError, match="jku.*backslash"):
        Settings.from_mapping({"trusted_issuers": [{"iss": "https://ehr.test", "jku": ["https://ehr.test\\jwks"]}],
                               "public_base_url": "https://cds.test"})


_SEGMENT = st.lists(st.sampled_from(list("ab./%2eEfF5cC;:@\\?#&=~-é") +
                                    ["%2e", "%2E", "%2f", "%5C", "..", "%41", "%25", "%252e"]),
                    max_size=6).map("".join)


@hyp_settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=6).map("/".join))
def test_whatever_is_accepted_stays_under_the_base_however_a_server_reads_it(relative):
    """The property the allowlist rests on: a URL accepted as under the base is a fixed point of
    what requests sends, and a server that decodes, cuts `;params` and removes dot segments still
    reads a path under the base."""
    base = urls.base("http://host/fhir/")
    try:
        value = urls.canonical(urljoin(base, relative)) if not urls.FORBIDDEN.search(relative) else None
    except (urls.UnsafeUrl, ValueError):
        value = None
    if value is None or not urls.is_under(value, (base,)):
        return
    assert requests.Request("GET", value).prepare().url == value
    assert urls.canonical(value) == value
    parts = urlsplit(value)
    assert parts.netloc == "host" and not parts.fragment
    assert _as_a_server_reads_it(parts.path).startswith("/fhir/") or parts.path == "/fhir"
