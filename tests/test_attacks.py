"""Token attacks against the served application (gunicorn, 2 workers, over HTTP).

Every forged, replayed or misdirected token is refused with the same bare 401; none is accepted;
the answer says nothing that helps an attacker; keys are fetched only from allowlisted jku URLs,
and a redirecting jku is not followed. Figures go to test-artifacts/attacks.json.
"""
from __future__ import annotations

import base64
import json

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from .served import Gunicorn
from .support import ROOT, FakeFhirServer, fresh, load_fixture
from .test_jwt import FORGERIES, Client

pytestmark = pytest.mark.served
ISS_FILE = "https://ehr-file.test"
ISS_JKU = "https://ehr-jku.test"
SERVICE = "/cds-services/spine-coding-order-sign"
REFUSAL = {"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": "login", "diagnostics": "unauthorized"}]}
FIGURES = {"tried": 0, "refused": 0, "accepted": 0}


@pytest.fixture(scope="module")
def keys_server():
    server = FakeFhirServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def ehr(keys_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("attacks")
    file_client, jku_client = Client(iss=ISS_FILE), Client(iss=ISS_JKU)
    (data / "jwks.json").write_text(json.dumps(file_client.jwks))
    keys_server.route("jwks", jku_client.jwks)
    keys_server.route("jwks-moved", b"", status=302, headers={"Location": f"{keys_server.base}/evil-jwks"})
    keys_server.route("evil-jwks", Client().jwks)
    issuers = [{"iss": ISS_FILE, "jwks_file": str(data / "jwks.json")},
               {"iss": ISS_JKU, "jku": [f"{keys_server.base}/jwks", f"{keys_server.base}/jwks-moved"]}]
    server = Gunicorn(data, env={"SPINE_CDS_TRUSTED_ISSUERS": json.dumps(issuers),
                                 "SPINE_CDS_PUBLIC_BASE_URL": "http://127.0.0.1:0"})
    # the public base URL must be the served one: restart with the port now known
    server.stop()
    server.env["SPINE_CDS_PUBLIC_BASE_URL"] = server.url
    server.start()
    file_client.base = jku_client.base = server.url
    yield server, file_client, jku_client
    server.stop()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "attacks.json").write_text(json.dumps(FIGURES))
    assert "eyJ" not in server.log_text()  # no token (base64url JSON header) in the log


def _call(server, token, path="/cds-services", body=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is None:
        return requests.get(server.url + path, headers=headers, timeout=10)
    return requests.post(server.url + path, json=body, headers=headers, timeout=10)


def _refused(response) -> None:
    FIGURES["tried"] += 1
    if response.status_code == 200:
        FIGURES["accepted"] += 1
    assert response.status_code == 401, response.text[:300]
    assert response.json() == REFUSAL
    assert "WWW-Authenticate" not in response.headers
    FIGURES["refused"] += 1


def test_control_a_valid_token_is_accepted_from_each_issuer(ehr):
    server, file_client, jku_client = ehr
    assert _call(server, file_client.token()).status_code == 200
    assert _call(server, jku_client.token()).status_code == 200


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forgeries_are_refused_by_the_served_app(ehr, name):
    server, file_client, _ = ehr
    _refused(_call(server, FORGERIES[name](file_client)))


def _b64(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


MORE = {
    "alg None (capitalised)": lambda c: f"{_b64({'alg': 'None', 'typ': 'JWT', 'kid': 'ec-1'})}.{_b64(c.claims())}.",
    "alg NONE": lambda c: f"{_b64({'alg': 'NONE', 'typ': 'JWT', 'kid': 'ec-1'})}.{_b64(c.claims())}.",
    "empty signature": lambda c: c.token().rsplit(".", 1)[0] + ".",
    "signature of another token": lambda c: c.token().rsplit(".", 1)[0] + "." + c.token().rsplit(".", 1)[1][::-1],
    "four segments": lambda c: c.token() + ".abc",
    "no alg": lambda c: f"{_b64({'typ': 'JWT', 'kid': 'ec-1'})}.{_b64(c.claims())}.sig",
    "header not JSON": lambda c: "bm90IGpzb24." + _b64(c.claims()) + ".sig",
    "kid path traversal": lambda c: c.token(kid="../../../etc/passwd"),
    "kid SQL": lambda c: c.token(kid="x' UNION SELECT key FROM keys --"),
    "kid null byte": lambda c: c.token(kid="ec-1\x00"),
    "kid of 300 characters": lambda c: c.token(kid="k" * 300),
    "oversized token (20 KB)": lambda c: c.token(padding="p" * 20000),
    "token for the feedback endpoint used on the service": lambda c: c.token(
        aud=c.base + SERVICE + "/feedback"),
    "token for the discovery endpoint used on the service": lambda c: c.token(),
    "other key signs with a trusted kid": lambda c: c.token(key=ec.generate_private_key(ec.SECP384R1())),
    "iss of the other issuer, signed with this one's key": lambda c: c.token(iss=ISS_JKU),
}


@pytest.mark.parametrize("name", list(MORE))
def test_more_forgeries_on_the_service_endpoint(ehr, name):
    server, file_client, _ = ehr
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    _refused(_call(server, MORE[name](file_client), SERVICE, body))


def test_jku_off_the_allowlist_and_redirecting_jku_are_never_followed(ehr, keys_server):
    server, _, jku_client = ehr
    before = list(keys_server.paths())
    _refused(_call(server, jku_client.token(headers={"jku": f"{keys_server.base}/evil-jwks"})))
    _refused(_call(server, jku_client.token(headers={"jku": f"{keys_server.base}/jwks-moved"})))
    after = keys_server.paths()[len(before):]
    assert "/fhir/evil-jwks" not in after  # neither fetched directly nor through the redirect


def test_a_token_replayed_across_workers_is_accepted_once(ehr):
    server, file_client, _ = ehr
    assert len(server.workers_pids()) == 2
    token = file_client.token()
    answers = [_call(server, token).status_code for _ in range(12)]
    assert answers.count(200) == 1 and answers[0] == 200
    for status in answers[1:]:
        FIGURES["tried"] += 1
        assert status == 401
        FIGURES["refused"] += 1


def test_health_and_openapi_stay_open_and_tell_nothing_secret(ehr):
    server, _, _ = ehr
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    document = requests.get(server.url + "/openapi.json", timeout=5).json()
    assert document["paths"][SERVICE]["post"]["security"] == [{"cdsHooksJwt": []}]
    assert "jwks" not in json.dumps(document)


def test_no_attack_was_accepted():
    assert FIGURES["accepted"] == 0 and FIGURES["tried"] == FIGURES["refused"]
