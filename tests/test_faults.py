"""Failing FHIR servers on loopback, against the served application (gunicorn, 2 workers).

Each fault is answered within the hook's budget, with a 412 (required data) or a degraded answer
that says so (optional data); no worker hangs or dies; memory stays bounded. A fhirServer or jku
off the allowlist is never contacted: a listening socket that would see it receives nothing.
Figures go to test-artifacts/faults.json.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from .served import Gunicorn
from .support import ROOT, FakeFhirServer, fresh, load_fixture, searchset

pytestmark = pytest.mark.served
SERVICE = "/cds-services/spine-coding-order-sign"
BUDGET = 1.5
FIGURES = {"faults": 0, "answered_in_budget": 0, "hangs": 0, "worker_restarts": 0}


class BlackHole:
    """Accepts connections and never answers (nor closes): the worst FHIR server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.received = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class Listener:
    """A socket that records whether anything ever connected to it (SSRF canary)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self._stop = True
        self.sock.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The fake FHIR server, the black hole, the SSRF canary, and a server requiring JWTs whose
    issuer's only jku is the black hole (for the jku tests). The fault tests use `open_server`."""
    fhir, hole, canary = FakeFhirServer(), BlackHole(), Listener()
    hole_base = f"http://127.0.0.1:{hole.port}/fhir"
    data = tmp_path_factory.mktemp("faults")
    server = Gunicorn(data, env={
        "SPINE_CDS_FHIR_ALLOWLIST": f"{fhir.base},{hole_base}",
        "SPINE_CDS_HOOK_DEADLINE": str(BUDGET), "SPINE_CDS_FHIR_READ_TIMEOUT": "0.5",
        "SPINE_CDS_FHIR_CONNECT_TIMEOUT": "0.5", "SPINE_CDS_FHIR_MAX_BYTES": "2000000",
        "SPINE_CDS_FHIR_MAX_PAGES": "5",
        "SPINE_CDS_TRUSTED_ISSUERS": json.dumps([{"iss": "https://ehr.test",
                                                  "jku": [f"http://127.0.0.1:{hole.port}/jwks"]}]),
        "SPINE_CDS_PUBLIC_BASE_URL": "http://cds.test"})
    yield server, fhir, hole_base, canary
    server.stop()
    fhir.close()
    hole.close()
    canary.close()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "faults.json").write_text(json.dumps(FIGURES))


def _record_routes(fhir, **override):
    prefetch = load_fixture("order-sign_c1-c2-slip_coded-m43.10.json")["prefetch"]
    routes = {"Patient/pt-1001": prefetch["patient"], "Encounter/enc-2001": prefetch["encounter"],
              "Condition": prefetch["conditions"], "Procedure": prefetch["procedures"],
              "DiagnosticReport": prefetch["diagnosticReports"], "DocumentReference": prefetch["documentReferences"]}
    for path, body in routes.items():
        fhir.route(path, body)
    for path, spec in override.items():
        fhir.route(path.replace("_", "/"), *spec)


def _body(base: str) -> dict:
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    del body["prefetch"]
    body["fhirServer"] = base
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 60,
                                 "scope": "patient/*.read", "subject": "cds"}
    return body


def _post(server, body):
    return requests.post(server.url + SERVICE, json=body, timeout=30)


@pytest.fixture(scope="module")
def open_server(env, tmp_path_factory):
    _, fhir, hole_base, _ = env
    data = tmp_path_factory.mktemp("faults-open")
    server = Gunicorn(data, env={
        "SPINE_CDS_FHIR_ALLOWLIST": f"{fhir.base},{hole_base}",
        "SPINE_CDS_HOOK_DEADLINE": str(BUDGET), "SPINE_CDS_FHIR_READ_TIMEOUT": "0.5",
        "SPINE_CDS_FHIR_CONNECT_TIMEOUT": "0.5", "SPINE_CDS_FHIR_MAX_BYTES": "2000000",
        "SPINE_CDS_FHIR_MAX_PAGES": "5"})
    pids = server.workers_pids()
    yield server, pids
    server.stop()


def _huge_bundle():
    resources = [{"resourceType": "Condition", "id": f"c{n}", "subject": {"reference": "Patient/pt-1001"},
                  "note": [{"text": "x" * 2000}]} for n in range(2000)]
    return searchset(*resources)


FAULTS = {
    "slow beyond the read timeout": ("Condition", (searchset(), 200, 5.0), 412, "timeout"),
    "500": ("Condition", ({"resourceType": "OperationOutcome"}, 500), 412, "server answered 500"),
    "401": ("Condition", ({"resourceType": "OperationOutcome"}, 401), 412, "not authorized (401)"),
    "403": ("Condition", ({"resourceType": "OperationOutcome"}, 403), 412, "not authorized (403)"),
    "invalid JSON": ("Condition", (b"{oops", 200), 412, "invalid JSON"),
    "huge bundle (4 MB)": ("Condition", (_huge_bundle(), 200), 412, "byte budget"),
    "redirect to another host": ("Condition", (b"", 302, 0, {"Location": "http://127.0.0.2:9/x"}), 412, "redirect"),
    "optional data failing (500 on reports)": ("DiagnosticReport", ({"resourceType": "OperationOutcome"}, 500),
                                              200, "server answered 500"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_is_answered_within_the_budget(env, open_server, name):
    server, _ = open_server
    _, fhir, _, _ = env
    path, route, status, reason = FAULTS[name]
    _record_routes(fhir)
    fhir.route(path, *route)
    started = time.monotonic()
    response = _post(server, _body(fhir.base))
    elapsed = time.monotonic() - started
    FIGURES["faults"] += 1
    assert response.status_code == status, response.text[:300]
    assert reason in response.text
    assert elapsed < BUDGET + 1.0, f"{name} took {elapsed:.2f} s"
    FIGURES["answered_in_budget"] += 1


def test_endless_next_links_are_bounded(env, open_server):
    server, _ = open_server
    _, fhir, _, _ = env
    _record_routes(fhir)
    fhir.route("Condition", searchset(next_url=f"{fhir.base}/Condition"))
    response = _post(server, _body(fhir.base))
    FIGURES["faults"] += 1
    assert response.status_code == 412 and "pages" in response.text
    FIGURES["answered_in_budget"] += 1


def test_a_server_that_never_answers_does_not_hang_a_worker(env, open_server):
    server, pids = open_server
    _, _, hole_base, _ = env
    started = time.monotonic()
    responses = []

    def call():
        responses.append(_post(server, _body(hole_base)))

    threads = [threading.Thread(target=call) for _ in range(4)]  # more calls than workers
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    FIGURES["faults"] += 1
    if any(t.is_alive() for t in threads):
        FIGURES["hangs"] += 1
    assert [r.status_code for r in responses] == [412] * 4
    assert elapsed < 4 * (BUDGET + 0.5)
    FIGURES["answered_in_budget"] += 1
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert server.workers_pids() == pids  # no worker killed by gunicorn's timeout


def test_memory_stays_bounded_after_huge_answers(env, open_server):
    server, pids = open_server
    _, fhir, _, _ = env

    def rss() -> int:
        return sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) * 4096 for p in server.workers_pids())

    _record_routes(fhir)
    fhir.route("Condition", _huge_bundle())
    _post(server, _body(fhir.base))
    before = rss()
    for _ in range(10):
        assert _post(server, _body(fhir.base)).status_code == 412
    assert rss() - before < 50 * 1024 * 1024
    FIGURES["worker_restarts"] = int(server.workers_pids() != pids)


def test_fhir_server_off_the_allowlist_is_never_contacted_when_open(open_server, env):
    server, _ = open_server
    _, _, _, canary = env
    response = _post(server, _body(f"http://127.0.0.1:{canary.port}/fhir"))
    assert response.status_code == 412
    time.sleep(0.3)
    assert canary.connections == 0


def test_jku_off_the_allowlist_is_never_contacted(env):
    server, _, _, canary = env
    header = {"alg": "ES384", "typ": "JWT", "kid": "k", "jku": f"http://127.0.0.1:{canary.port}/jwks"}
    import base64

    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    token = f"{b64(header)}.{b64({'iss': 'https://ehr.test', 'aud': 'x'})}.c2ln"
    response = requests.get(server.url + "/cds-services", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 401
    time.sleep(0.3)
    assert canary.connections == 0
