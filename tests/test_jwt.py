"""Trusting CDS clients: the spec's own token verifies; forged tokens are refused with a bare 401."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.auth import TokenVerifier, Unauthorized
from service.config import Settings
from service.store import Store

from .support import load_example

BASE = "https://cds.test"
DISCOVERY = "/cds-services"
ISS = "https://ehr.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(public_key, kid: str, alg: str) -> dict:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
    jwk.update(kid=kid, use="sig", alg=alg)
    return jwk


class Client:
    """A CDS client with its keys: signs tokens the way an EHR (or an attacker) would."""

    def __init__(self, base: str = BASE, iss: str = ISS, ec_kid: str = "ec-1"):
        self.base, self.iss, self.ec_kid = base, iss, ec_kid
        self.ec_key = ec.generate_private_key(ec.SECP384R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks = {"keys": [_jwk(self.ec_key.public_key(), ec_kid, "ES384"),
                              _jwk(self.rsa_key.public_key(), "rsa-1", "RS384")]}

    def claims(self, **overrides) -> dict:
        """Claims for the discovery endpoint; an override of None drops the claim."""
        now = int(time.time())
        claims = {"iss": self.iss, "aud": self.base + DISCOVERY, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, alg="ES384", kid=None, key=None, headers=None, **claims) -> str:
        key = key or (self.ec_key if alg.startswith("ES") else self.rsa_key)
        kid = kid or (self.ec_kid if alg.startswith("ES") else "rsa-1")
        header = {"kid": kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers=header)


@pytest.fixture
def ehr():
    return Client()


@pytest.fixture
def secured(make_app, tmp_path, ehr):
    jwks_file = tmp_path / "ehr-jwks.json"
    jwks_file.write_text(json.dumps(ehr.jwks))

    def build(**overrides):
        issuers = [{"iss": ISS, "jwks_file": str(jwks_file), "jku": ["https://ehr.test/jwks"]}]
        settings = {"trusted_issuers": issuers, "public_base_url": BASE}
        settings.update(overrides)
        return make_app(**settings).test_client()

    return build


def _get(client, token, path=DISCOVERY):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(path, headers=headers)


# ------------------------------------------------------------ the spec's vector
def _spec_verifier(tmp_path, now):
    (tmp_path / "spec-jwks.json").write_text(json.dumps(load_example("spec2.0.1_jwks_public.json")))
    settings = Settings.from_mapping({
        "trusted_issuers": [{"iss": "https://fhir-ehr.example.com/",
                             "jwks_file": str(tmp_path / "spec-jwks.json"),
                             "jku": ["https://fhir-ehr.example.com/jwk_uri"]}],
        "public_base_url": "https://cds.example.org",
        "jwt_max_lifetime": 10 ** 9,  # the spec's token lives 3.5 years: no short maximum here
    })
    store = Store(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    store.create_schema()
    return TokenVerifier(settings, store, clock=lambda: now)


SPEC_AUD = "https://cds.example.org/cds-services/some-service"


def test_the_specifications_example_token_verifies_with_the_clock_frozen(tmp_path):
    header = load_example("spec2.0.1_jwt_authorization_header.txt").split(": ", 1)[1].strip()
    verifier = _spec_verifier(tmp_path, now=1400000000)  # between its iat (2011) and exp (2015)
    claims = verifier.verify(header, SPEC_AUD)
    assert claims["jti"] == "ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"
    assert claims["tenant"] == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
    with pytest.raises(Unauthorized, match="replayed"):
        verifier.verify(header, SPEC_AUD)


def test_the_specifications_token_is_expired_today(tmp_path):
    header = load_example("spec2.0.1_jwt_authorization_header.txt").split(": ", 1)[1].strip()
    with pytest.raises(Unauthorized, match="expired"):
        _spec_verifier(tmp_path, now=time.time()).verify(header, SPEC_AUD)


def test_the_specifications_token_for_another_endpoint_is_refused(tmp_path):
    header = load_example("spec2.0.1_jwt_authorization_header.txt").split(": ", 1)[1].strip()
    with pytest.raises(Unauthorized, match="audience"):
        _spec_verifier(tmp_path, now=1400000000).verify(header, "https://cds.example.org/cds-services/other")


def test_a_token_signed_with_the_spec_private_key_but_tampered_claims_is_refused(tmp_path):
    header = load_example("spec2.0.1_jwt_authorization_header.txt").split(": ", 1)[1].strip()
    head, payload, signature = header.split(" ", 1)[1].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant"] = "another-tenant"
    forged = f"Bearer {head}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(Unauthorized, match="InvalidSignatureError"):
        _spec_verifier(tmp_path, now=1400000000).verify(forged, SPEC_AUD)


# ----------------------------------------------------------- accepted tokens
@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_valid_tokens_are_accepted_on_every_endpoint(secured, ehr, alg, order_sign_request):
    client = secured()
    assert _get(client, ehr.token(alg)).status_code == 200
    path = "/cds-services/spine-coding-order-sign"
    response = client.post(path, json=order_sign_request,
                           headers={"Authorization": f"Bearer {ehr.token(alg, aud=BASE + path)}"})
    assert response.status_code == 200
    feedback = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-21T10:00:00Z"}]}
    response = client.post(path + "/feedback", json=feedback,
                           headers={"Authorization": f"Bearer {ehr.token(alg, aud=BASE + path + '/feedback')}"})
    assert response.status_code == 200


def test_audience_may_be_an_array(secured, ehr):
    assert _get(secured(), ehr.token(aud=["https://other", BASE + DISCOVERY])).status_code == 200


def test_tenant_allowlist(secured, ehr, tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(ehr.jwks))
    client = secured(trusted_issuers=[{"iss": ISS, "jwks_file": str(tmp_path / "t.json"), "tenants": ["t-1"]}])
    assert _get(client, ehr.token(tenant="t-1")).status_code == 200
    assert _get(client, ehr.token(tenant="t-2")).status_code == 401
    assert _get(client, ehr.token()).status_code == 401


# ------------------------------------------------------------ forged tokens
def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(ehr: Client) -> str:
    """Key confusion: HMAC keyed with the issuer's public key, which an attacker knows."""
    pem = ehr.ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'ec-1'}).encode())}." \
                    f"{_b64(json.dumps(ehr.claims()).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


FORGERIES = {
    "alg none": lambda e: _unsigned({"alg": "none", "typ": "JWT", "kid": "ec-1"}, e.claims()),
    "HS256 with the public key": _hs256_with_public_key,
    "wrong key": lambda e: e.token(key=ec.generate_private_key(ec.SECP384R1())),
    "RS key with the EC kid": lambda e: e.token("RS384", kid="ec-1"),
    "algorithm not allowed": lambda e: e.token("ES256", key=ec.generate_private_key(ec.SECP256R1())),
    "expired": lambda e: e.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 3900),
    "issued in the future": lambda e: e.token(iat=int(time.time()) + 3600, exp=int(time.time()) + 3900),
    "lifetime too long": lambda e: e.token(exp=int(time.time()) + 86400 * 30),
    "wrong aud": lambda e: e.token(aud=e.base + "/cds-services/spine-coding-order-sign"),
    "aud of another host": lambda e: e.token(aud="https://evil.test/cds-services"),
    "untrusted iss": lambda e: e.token(iss="https://evil.test"),
    "unknown kid": lambda e: e.token(kid="nope"),
    # The attacker's own key, named by a jku of theirs: never fetched (a key file's issuer verifies
    # with the file whatever jku the header names; an allowlist refuses a jku not on it).
    "jku off the allowlist": lambda e: e.token(key=ec.generate_private_key(ec.SECP384R1()), kid="attacker-1",
                                               headers={"jku": "https://evil.test/jwks"}),
    "typ not JWT": lambda e: e.token(headers={"typ": "at+jwt"}),
    "no kid": lambda e: jwt.encode(e.claims(), e.ec_key, algorithm="ES384", headers={"typ": "JWT"}),
    "no jti": lambda e: e.token(jti=None),
    "no exp": lambda e: e.token(exp=None),
    "no iat": lambda e: e.token(iat=None),
    "no aud": lambda e: e.token(aud=None),
    "no iss": lambda e: e.token(iss=None),
    "string exp": lambda e: e.token(exp="tomorrow"),
    # NumericDates that are not finite numbers (issue 11): NaN skipped every comparison, Infinity
    # and a 400-digit integer overflowed into a 500.
    "iat NaN": lambda e: e.token(iat=float("nan")),
    "exp NaN": lambda e: e.token(exp=float("nan")),
    "nbf NaN": lambda e: e.token(nbf=float("nan")),
    "exp Infinity": lambda e: e.token(exp=float("inf")),
    "iat -Infinity": lambda e: e.token(iat=float("-inf")),
    "nbf -Infinity": lambda e: e.token(nbf=float("-inf")),
    "exp a 400-digit integer": lambda e: e.token(exp=10 ** 400),
    "iat a 400-digit negative integer": lambda e: e.token(iat=-10 ** 400),
    "exp 1e308": lambda e: e.token(exp=1e308, iat=1e308 - 100),
    "exp true": lambda e: e.token(exp=True),
    "iat false": lambda e: e.token(iat=False),
    "nbf true": lambda e: e.token(nbf=True),
    "iat string": lambda e: e.token(iat=str(int(time.time()))),
    "nbf string": lambda e: e.token(nbf=str(int(time.time()))),
    "exp object": lambda e: e.token(exp={"$date": int(time.time()) + 60}),
    "nbf list": lambda e: e.token(nbf=[int(time.time())]),
    "nbf in the future": lambda e: e.token(nbf=int(time.time()) + 600),
    "garbage": lambda e: "not.a.token",
    "oversized": lambda e: e.token(padding="x" * 20000),
    "kid injection": lambda e: e.token(kid="../../../../etc/passwd' OR 1=1 --"),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_tokens_are_refused_with_a_bare_401(secured, ehr, name, caplog):
    token = FORGERIES[name](ehr)
    with caplog.at_level(logging.DEBUG):
        response = _get(secured(), token)
    assert response.status_code == 401
    assert response.get_json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "login", "diagnostics": "unauthorized"}]}
    assert token not in caplog.text  # the reason is logged, never the token


NUMERIC_DATE_REASONS = {
    "iat NaN": "iat is not a finite number", "exp NaN": "exp is not a finite number",
    "nbf NaN": "nbf is not a finite number", "exp Infinity": "exp is not a finite number",
    "exp a 400-digit integer": "exp is out of range", "exp true": "exp is not a number",
    "nbf string": "nbf is not a number", "nbf in the future": "not yet valid (nbf)",
}


@pytest.mark.parametrize("name", list(NUMERIC_DATE_REASONS))
def test_time_claims_are_refused_for_the_right_reason(secured, ehr, name, caplog):
    """Refused by the time checks (the log says which), not by accident further on."""
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        assert _get(secured(), FORGERIES[name](ehr)).status_code == 401
    assert NUMERIC_DATE_REASONS[name] in caplog.text


# Claims built when the test runs, not when it is collected (a suite of minutes would expire them).
@pytest.mark.parametrize("claims", [
    lambda now: {"exp": now + 300.5, "iat": now - 0.25},  # RFC 7519: a NumericDate may be fractional
    lambda now: {"nbf": int(now) - 60},
    lambda now: {"nbf": now + 10.5},  # within the clock skew
    lambda now: {"nbf": int(now), "exp": int(now) + 60},
], ids=["fractional", "past-nbf", "nbf-within-skew", "nbf-now"])
def test_finite_numeric_dates_and_a_past_nbf_are_accepted(secured, ehr, claims):
    assert _get(secured(), ehr.token(**claims(time.time()))).status_code == 200


def test_nbf_is_honoured_with_the_clock_skew(tmp_path, ehr):
    (tmp_path / "k.json").write_text(json.dumps(ehr.jwks))
    settings = Settings.from_mapping({"trusted_issuers": [{"iss": ISS, "jwks_file": str(tmp_path / "k.json")}],
                                      "public_base_url": BASE, "jwt_clock_skew": 30})
    store = Store(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    store.create_schema()
    now = 1_800_000_000
    verifier = TokenVerifier(settings, store, clock=lambda: now)
    token = lambda nbf: f"Bearer {ehr.token(iat=now, exp=now + 300, nbf=nbf)}"  # noqa: E731
    assert verifier.verify(token(now + 29.5), BASE + DISCOVERY)["nbf"] == now + 29.5
    with pytest.raises(Unauthorized, match="nbf"):
        verifier.verify(token(now + 31), BASE + DISCOVERY)


def test_a_replayed_token_is_refused(secured, ehr):
    client, token = secured(), ehr.token()
    assert _get(client, token).status_code == 200
    assert _get(client, token).status_code == 401


def test_replay_is_refused_across_app_instances_sharing_the_database(secured, ehr):
    token = ehr.token()
    assert _get(secured(), token).status_code == 200
    assert _get(secured(), token).status_code == 401  # a second "worker" on the same database


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer "])
def test_missing_or_non_bearer_authorization_is_401(secured, header):
    client = secured()
    headers = {"Authorization": header} if header is not None else {}
    assert client.get(DISCOVERY, headers=headers).status_code == 401
    assert client.post("/cds-services/spine-coding-order-sign", json={}, headers=headers).status_code == 401
    assert client.post("/cds-services/spine-coding-order-sign/feedback", json={},
                       headers=headers).status_code == 401


def test_health_endpoints_need_no_token(secured):
    client = secured()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


# --------------------------------------------------------------- jku fetching
def test_jku_key_set_is_fetched_cached_and_refetched_on_rotation(make_app, fhir_server, ehr):
    jku = f"{fhir_server.base}/jwks"
    fhir_server.route("jwks", ehr.jwks)
    client = make_app(trusted_issuers=[{"iss": ISS, "jku": [jku]}], public_base_url=BASE,
                      jwks_refetch_seconds=0).test_client()
    assert _get(client, ehr.token(headers={"jku": jku})).status_code == 200
    assert _get(client, ehr.token()).status_code == 200  # no jku header: the issuer's configured one
    assert fhir_server.paths().count("/fhir/jwks") == 1  # cached

    rotated = Client()
    rotated.jwks["keys"][0]["kid"] = "ec-2"
    fhir_server.route("jwks", rotated.jwks)
    token = rotated.token(kid="ec-2", headers={"jku": jku})
    assert _get(client, token).status_code == 200
    assert fhir_server.paths().count("/fhir/jwks") == 2  # refetched once for the unknown kid


def test_unknown_kids_cannot_force_a_refetch_storm(make_app, fhir_server, ehr):
    jku = f"{fhir_server.base}/jwks"
    fhir_server.route("jwks", ehr.jwks)
    client = make_app(trusted_issuers=[{"iss": ISS, "jku": [jku]}], public_base_url=BASE).test_client()
    assert _get(client, ehr.token()).status_code == 200
    for n in range(5):
        assert _get(client, ehr.token(kid=f"random-{n}")).status_code == 401
    assert fhir_server.paths().count("/fhir/jwks") == 1  # within the refetch interval: no refetch


def test_jku_off_the_allowlist_is_never_contacted(make_app, fhir_server, ehr):
    fhir_server.route("jwks", ehr.jwks)
    client = make_app(trusted_issuers=[{"iss": ISS, "jku": ["https://ehr.test/jwks"]}],
                      public_base_url=BASE).test_client()
    assert _get(client, ehr.token(headers={"jku": f"{fhir_server.base}/jwks"})).status_code == 401
    assert fhir_server.requests == []


def test_redirecting_jku_is_not_followed(make_app, fhir_server, ehr):
    jku = f"{fhir_server.base}/jwks"
    fhir_server.route("jwks", b"", status=302, headers={"Location": f"{fhir_server.base}/evil"})
    fhir_server.route("evil", ehr.jwks)
    client = make_app(trusted_issuers=[{"iss": ISS, "jku": [jku]}], public_base_url=BASE).test_client()
    assert _get(client, ehr.token(headers={"jku": jku})).status_code == 401
    assert "/fhir/evil" not in fhir_server.paths()


def test_replay_store_is_shared_on_postgresql(database_url, tmp_path, ehr):
    """Every worker and every instance on the same database refuses a replayed jti."""
    (tmp_path / "k.json").write_text(json.dumps(ehr.jwks))
    from service import create_app

    settings = {"database_url": database_url, "public_base_url": BASE,
                "trusted_issuers": [{"iss": ISS, "jwks_file": str(tmp_path / "k.json")}]}
    first, second = create_app(settings), create_app(settings)
    token = ehr.token()
    assert _get(first.test_client(), token).status_code == 200
    assert _get(second.test_client(), token).status_code == 401
    for app in (first, second):
        app.extensions["spine_cds"].store.engine.dispose()


# ------------------------------------- the CDS Hooks sandbox's tokens under a key file (issue 12)
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "d9cd3c4f-eb08-4304-b973-44f352fd2ca2"  # a uuid, as the sandbox names its key
LOCAL = "http://localhost:8080"  # the service as a locally served sandbox calls it
ORDER_SIGN = "/cds-services/spine-coding-order-sign"


def _sandbox_token(sandbox: Client, path: str = DISCOVERY, key=None, now: float | None = None,
                   jku: str = SANDBOX_JKU) -> str:
    """Shaped like the sandbox's: ES384; header alg, typ, kid, jku; iss, sub, aud (the URL called),
    iat, exp 300 s later, jti."""
    now = int(time.time() if now is None else now)
    return sandbox.token("ES384", key=key, headers={"jku": jku}, aud=LOCAL + path, iat=now, exp=now + 300,
                         sub="48163c5e-88b5-4cb3-92d3-23b800caa927")


@pytest.fixture
def sandbox():
    return Client(base=LOCAL, iss=SANDBOX_ISS, ec_kid=SANDBOX_KID)


@pytest.fixture
def no_fetch(monkeypatch):
    """Fails the test on any JWK Set fetch and records any name lookup or connection attempt."""
    import socket

    from service.auth import JwksCache

    attempts: list[str] = []

    def refuse(kind):
        def call(*args, **kwargs):
            attempts.append(f"{kind} {args[:2]!r}")
            raise OSError(f"no network in this test ({kind})")
        return call

    def fetch(self, url, force=False):
        attempts.append(f"JWK Set fetch of {url}")
        raise AssertionError(f"the JWK Set at {url} was fetched")

    monkeypatch.setattr(JwksCache, "key_set", fetch)
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return attempts


def _sandbox_app(make_app, tmp_path, sandbox, **issuer):
    (tmp_path / "sandbox-jwks.json").write_text(json.dumps(sandbox.jwks))
    entry = {"iss": SANDBOX_ISS, "jwks_file": str(tmp_path / "sandbox-jwks.json"), **issuer}
    # As an operator writes it: the environment variable's JSON text.
    return make_app(trusted_issuers=json.dumps([entry]), public_base_url=LOCAL).test_client()


def test_a_sandbox_shaped_token_verifies_under_a_key_file_and_its_jku_is_never_fetched(
        make_app, tmp_path, sandbox, no_fetch, order_sign_request):
    client = _sandbox_app(make_app, tmp_path, sandbox)
    token = _sandbox_token(sandbox)
    header, claims = jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "ES384", "typ": "JWT", "kid": SANDBOX_KID, "jku": SANDBOX_JKU}
    assert claims["exp"] - claims["iat"] == 300 and claims["aud"] == LOCAL + DISCOVERY

    assert _get(client, token).status_code == 200
    response = client.post(ORDER_SIGN, json=order_sign_request,
                           headers={"Authorization": f"Bearer {_sandbox_token(sandbox, ORDER_SIGN)}"})
    assert response.status_code == 200 and "cards" in response.get_json()
    assert no_fetch == []


def test_under_a_key_file_a_jku_served_on_loopback_receives_no_request(make_app, tmp_path, sandbox, fhir_server):
    """The canary is a real server that would even answer with the right keys: it must see nothing,
    for a token it could have vouched for and for one it could not."""
    fhir_server.route("jwks", sandbox.jwks)
    client = _sandbox_app(make_app, tmp_path, sandbox)
    jku = f"{fhir_server.base}/jwks"
    assert _get(client, _sandbox_token(sandbox, jku=jku)).status_code == 200
    assert _get(client, sandbox.token(kid="rotated-1", headers={"jku": jku}, aud=LOCAL + DISCOVERY)).status_code == 401
    assert fhir_server.requests == []


def test_under_a_key_file_a_token_signed_with_another_key_is_refused(make_app, tmp_path, sandbox, no_fetch, caplog):
    client = _sandbox_app(make_app, tmp_path, sandbox)
    other = ec.generate_private_key(ec.SECP384R1())  # the same kid and jku, not the file's key
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        assert _get(client, _sandbox_token(sandbox, key=other)).status_code == 401
        assert _get(client, sandbox.token(kid="not-in-the-file", headers={"jku": SANDBOX_JKU},
                                          aud=LOCAL + DISCOVERY)).status_code == 401
    assert "InvalidSignatureError" in caplog.text and "unknown kid (not in the issuer's key file)" in caplog.text
    assert no_fetch == []


def test_an_expired_sandbox_token_is_refused(tmp_path, sandbox, no_fetch):
    (tmp_path / "sandbox-jwks.json").write_text(json.dumps(sandbox.jwks))
    settings = Settings.from_mapping({"trusted_issuers": [{"iss": SANDBOX_ISS,
                                                           "jwks_file": str(tmp_path / "sandbox-jwks.json")}],
                                      "public_base_url": LOCAL})
    store = Store(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    store.create_schema()
    now = 1_800_000_000
    verifier = TokenVerifier(settings, store, clock=lambda: now)
    issued = lambda at: f"Bearer {_sandbox_token(sandbox, now=at)}"  # noqa: E731
    assert verifier.verify(issued(now - 299), LOCAL + DISCOVERY)["iss"] == SANDBOX_ISS
    assert verifier.verify(issued(now - 300 - 59), LOCAL + DISCOVERY)["iss"] == SANDBOX_ISS  # within the skew
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(issued(now - 300 - 61), LOCAL + DISCOVERY)
    assert no_fetch == []


def test_with_a_key_file_and_a_jku_list_the_file_comes_first_and_only_a_listed_jku_is_fetched(
        make_app, tmp_path, sandbox, fhir_server):
    jku = f"{fhir_server.base}/jwks"
    rotated = Client(iss=SANDBOX_ISS, ec_kid="rotated-1")
    fhir_server.route("jwks", rotated.jwks)  # the new key, published at the listed jku only
    client = _sandbox_app(make_app, tmp_path, sandbox, jku=[jku])
    rotated.base = LOCAL

    # the file's kid: verified with the file, whatever the header names, nothing fetched
    assert _get(client, _sandbox_token(sandbox, jku=jku)).status_code == 200
    assert _get(client, _sandbox_token(sandbox, jku=SANDBOX_JKU)).status_code == 200
    assert fhir_server.requests == []
    # a kid the file lacks, with a jku off the list or none: refused, nothing fetched
    assert _get(client, _sandbox_token(rotated, jku="https://evil.test/jwks")).status_code == 401
    assert _get(client, rotated.token(aud=LOCAL + DISCOVERY)).status_code == 401
    assert fhir_server.requests == []
    # a kid the file lacks, with the listed jku: fetched, verified
    assert _get(client, _sandbox_token(rotated, jku=jku)).status_code == 200
    assert fhir_server.paths() == ["/fhir/jwks"]


def test_the_no_fetch_guard_sees_a_fetch(tmp_path, sandbox, no_fetch):
    """The guard of the tests above is not vacuous: a jku-only issuer does fetch, and it is caught."""
    settings = Settings.from_mapping({"trusted_issuers": [{"iss": SANDBOX_ISS, "jku": [SANDBOX_JKU]}],
                                      "public_base_url": LOCAL})
    store = Store(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    store.create_schema()
    with pytest.raises(AssertionError, match="was fetched"):
        TokenVerifier(settings, store).verify(f"Bearer {_sandbox_token(sandbox)}", LOCAL + DISCOVERY)
    assert no_fetch == [f"JWK Set fetch of {SANDBOX_JKU}"]
