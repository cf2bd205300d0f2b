"""Trusting CDS clients: the JWT bearer token of CDS Hooks 2.0 §Trusting CDS Clients.

Checks, in order: a Bearer token of sane size; header `typ` JWT, `kid`, `alg` in the allowlist
(never none or HMAC); `iss` trusted; the key from the issuer's JWK Set (see `TokenVerifier._key`:
a configured key file first, whatever `jku` the header names, which is then never fetched; else a
`jku` on that issuer's allowlist, cached and refetched once on an unknown `kid`); the
signature; `aud` equal to the endpoint's public URL; `exp`/`iat` (and `nbf` when present) finite
NumericDates (RFC 7519 §2: numbers, fractions allowed; never NaN, Infinity, strings or booleans)
checked with skew and a maximum lifetime; `tenant` when the issuer lists tenants; `jti` never seen before (database, shared by
all workers). Any failure is a bare 401: the reason goes to the log (never the token), not to
the caller.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from datetime import datetime, timezone

import jwt
import requests

from . import urls
from .config import Settings, TrustedIssuer

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 8192
MAX_JWKS_BYTES = 256 * 1024
# Seconds since 1970 beyond which a NumericDate is nonsense (year 5138): keeps the arithmetic finite.
MAX_NUMERIC_DATE = 10 ** 11


class Unauthorized(Exception):
    """Why a token was refused: for the log only."""


class JwksCache:
    """JWK Sets per URL: fetched only from allowlisted URLs, cached, refetched on unknown kid."""

    def __init__(self, ttl: int, refetch_interval: int, timeout: float = 2.0):
        self.ttl = ttl
        self.refetch_interval = refetch_interval  # unknown kids must not make us a fetch amplifier
        self.timeout = timeout
        self._sets: dict[str, tuple[float, dict]] = {}
        self._last_fetch: dict[str, float] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False

    def key_set(self, url: str, force: bool = False) -> dict:
        now = time.monotonic()
        with self._lock:
            cached = self._sets.get(url)
            if cached and not force and now - cached[0] < self.ttl:
                return cached[1]
            if force and now - self._last_fetch.get(url, -1e9) < self.refetch_interval and cached:
                return cached[1]
            self._last_fetch[url] = now
        keys = self._fetch(url)
        with self._lock:
            self._sets[url] = (now, keys)
        return keys

    def _fetch(self, url: str) -> dict:
        try:
            with self._session.get(url, timeout=self.timeout, allow_redirects=False, stream=True,
                                   headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise Unauthorized(f"JWK Set fetch answered {response.status_code}")
                body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise Unauthorized(f"JWK Set fetch failed ({type(exc).__name__})") from None
        if len(body) > MAX_JWKS_BYTES:
            raise Unauthorized("JWK Set too large")
        try:
            keys = json.loads(body)
        except ValueError:
            raise Unauthorized("JWK Set is not JSON") from None
        if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
            raise Unauthorized("JWK Set has no keys")
        return keys


class TokenVerifier:
    def __init__(self, settings: Settings, replay_store, clock=time.time):
        self.issuers: dict[str, TrustedIssuer] = {i.iss: i for i in settings.trusted_issuers}
        self.algorithms = tuple(settings.jwt_algorithms)
        self.max_lifetime = settings.jwt_max_lifetime
        self.skew = settings.jwt_clock_skew
        self.replay_store = replay_store
        self.clock = clock
        self.jwks = JwksCache(settings.jwks_cache_seconds, settings.jwks_refetch_seconds)
        self._file_keys: dict[str, dict] = {}
        for issuer in self.issuers.values():
            if issuer.jwks_file:
                with open(issuer.jwks_file) as fh:
                    self._file_keys[issuer.iss] = json.load(fh)

    def verify(self, authorization: str | None, audience: str) -> dict:
        """The verified claims, or Unauthorized with the reason (for the log only)."""
        if not authorization:
            raise Unauthorized("no Authorization header")
        if len(authorization) > MAX_TOKEN_BYTES:
            raise Unauthorized("token too large")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("not a Bearer token")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        if str(header.get("typ", "")).upper() != "JWT":
            raise Unauthorized("header typ is not JWT")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthorized("kid missing or invalid")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized("issuer not trusted")

        key = self._key(issuer, header, kid, alg)
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=audience, issuer=issuer.iss,
                options={"require": ["iss", "aud", "exp", "iat", "jti"],
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidAudienceError:
            raise Unauthorized("wrong audience") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token rejected ({type(exc).__name__})") from None

        self._check_times(claims)
        if issuer.tenants and claims.get("tenant") not in issuer.tenants:
            raise Unauthorized("tenant not allowed")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise Unauthorized("jti invalid")
        expires = datetime.fromtimestamp(math.ceil(claims["exp"]) + self.skew, tz=timezone.utc)
        # Fails closed: when the database cannot say whether this jti was seen, the store raises
        # DatabaseUnavailable, a 503 OperationOutcome that says so (never accepted, never a 500).
        try:
            first_use = self.replay_store.remember_token(issuer.iss, jti, expires)
        except Exception as exc:
            from .store import DatabaseUnavailable
            if not isinstance(exc, DatabaseUnavailable):
                log.error("JWT replay check failed (%s): refused with 503", type(exc).__name__)
                raise DatabaseUnavailable(
                    "the request was refused: its JWT id (jti) could not be checked against replays") from None
            raise
        if not first_use:
            raise Unauthorized("jti replayed")
        return claims

    def _check_times(self, claims: dict) -> None:
        """pyjwt's own checks are off: they let `iat: NaN` through and raise OverflowError (a
        500) on `exp: Infinity` or a 400-digit integer."""
        now = self.clock()
        exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
        nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
        if exp < now - self.skew:
            raise Unauthorized("token expired")
        if iat > now + self.skew:
            raise Unauthorized("token issued in the future")
        if nbf is not None and nbf > now + self.skew:
            raise Unauthorized("token not yet valid (nbf)")
        if exp - iat > self.max_lifetime:
            raise Unauthorized("token lifetime too long")

    def _key(self, issuer: TrustedIssuer, header: dict, kid: str, alg: str):
        """The key that must have signed the token.

        An issuer with a key file (`jwks_file`) is verified with those keys whatever `jku` the header
        names: the header is the signer's claim, the file is the operator's, and a jku is then never
        fetched for a kid the file has (the CDS Hooks sandbox names its public jku in every token,
        and an offline set-up must not depend on it). Only an issuer that also lists `jku` URLs may
        have one fetched, for a kid its file lacks, and only when the header names a URL on that list.
        An issuer with `jku` URLs alone: the header's jku must be on the list (no header: the first
        URL listed)."""
        jku = header.get("jku")
        file_keys = self._file_keys.get(issuer.iss)
        if file_keys is not None:
            key = _find_key(file_keys, kid, alg)
            if key is not None:
                return key
            if not issuer.jku or jku is None:
                raise Unauthorized("unknown kid (not in the issuer's key file)")
        if jku is not None:
            # Compared in canonical form (service/urls.py), and the configured URL is fetched:
            # `https://ehr/jwks/../evil` or `https://u@ehr/jwks` is not `https://ehr/jwks`.
            try:
                allowed = {urls.canonical(u): urls.canonical(u) for u in issuer.jku}
                url = allowed.get(urls.canonical(jku)) if isinstance(jku, str) else None
            except urls.UnsafeUrl:
                url = None
            if url is None:
                raise Unauthorized("jku not on the issuer's allowlist")
        else:
            url = urls.canonical(issuer.jku[0])
        key = _find_key(self.jwks.key_set(url), kid, alg)
        if key is None:  # the client may have rotated its keys: refetch once
            key = _find_key(self.jwks.key_set(url, force=True), kid, alg)
        if key is None:
            raise Unauthorized("unknown kid")
        return key


def _numeric_date(claims: dict, name: str) -> float:
    """A claim that must be an RFC 7519 NumericDate: a finite JSON number within reason."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unauthorized(f"{name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unauthorized(f"{name} is not a finite number")
    if abs(value) > MAX_NUMERIC_DATE:
        raise Unauthorized(f"{name} is out of range")
    return float(value)


def _find_key(key_set: dict, kid: str, alg: str):
    family = {"ES": "EC", "RS": "RSA", "PS": "RSA"}[alg[:2]]
    keys = key_set.get("keys") if isinstance(key_set, dict) else None
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kid") != kid:
            continue
        if jwk.get("kty") != family:
            raise Unauthorized("key type does not match the algorithm")
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
            raise Unauthorized("key not for this algorithm")
        try:
            return jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError:
            raise Unauthorized("unusable key") from None
    return None
