"""Configuration: one place, one prefix (SPINE_CDS_), validated at start.

Every setting has a default that runs the service locally on its embedded defaults
(SQLite under ./data, no authentication, loopback only). `Settings.from_env` reads the
environment; `create_app(config=...)` accepts a mapping of the same names (without the
prefix, lower case) so tests can build an app without touching the environment.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from . import urls
from .cors import normalise_origin

PREFIX = "SPINE_CDS_"


def _project_dir() -> Path:
    """The checkout (editable install), else the working directory (the Docker image's /app)."""
    source = Path(__file__).resolve().parent.parent
    return source if (source / "cards").is_dir() else Path.cwd()


PROJECT_DIR = _project_dir()


class ConfigError(ValueError):
    """Raised with every problem found, one per line, so an operator can fix them at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class TrustedIssuer:
    """A CDS client allowed to call us: its `iss`, where its keys come from, its tenants."""

    iss: str
    jwks_file: str | None = None
    jku: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    # (name, type, default, help) is read from the field metadata to document the README table.
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=8080, metadata={"help": "port to bind"})
    workers: int = field(default=0, metadata={"help": "gunicorn workers; 0 = one per core"})
    data_dir: str = field(default="data", metadata={"help": "folder for the embedded SQLite database"})
    database_url: str = field(
        default="",
        metadata={"help": "SQLAlchemy URL; empty = sqlite:///<data_dir>/spine-cds.sqlite3; "
                          "postgresql+psycopg://… to share state between instances"},
    )
    public_base_url: str = field(
        default="",
        metadata={"help": "the URL EHRs call us by (JWT `aud` and card links), e.g. https://cds.example.org"},
    )
    trusted_issuers: tuple[TrustedIssuer, ...] = field(
        default=(),
        metadata={"help": "JSON list (or a path to a JSON file) of "
                          "{iss, jwks_file | jku: [urls], tenants?}; empty = no authentication"},
    )
    allow_open: bool = field(
        default=False,
        metadata={"help": "allow binding a non-loopback address with no trusted issuer"},
    )
    jwt_algorithms: tuple[str, ...] = field(default=("ES384", "RS384"), metadata={"help": "accepted JWT algorithms"})
    jwt_max_lifetime: int = field(default=3600, metadata={"help": "longest accepted exp - iat, seconds"})
    jwt_clock_skew: int = field(default=60, metadata={"help": "tolerated clock difference, seconds"})
    jwks_cache_seconds: int = field(default=3600, metadata={"help": "how long a fetched JWK Set is kept"})
    jwks_refetch_seconds: int = field(
        default=10, metadata={"help": "least time between two refetches of a JWK Set for an unknown kid"})
    cors_origins: tuple[str, ...] = field(
        default=("https://sandbox.cds-hooks.org",),
        metadata={"help": "browser origins allowed to call /cds-services*, scheme://host[:port] (comma "
                          "separated; * for any); another origin is answered 403, logged"},
    )
    max_body_bytes: int = field(default=10 * 1024 * 1024, metadata={"help": "largest request body accepted"})
    header_timeout: float = field(
        default=10.0, metadata={"help": "seconds a connection has to send its request line and headers (and "
                                        "longest idle wait between kept-alive requests); past it: closed"})
    body_timeout: float = field(
        default=30.0, metadata={"help": "seconds a request has to send its whole body; past it: 408, closed"})
    send_timeout: float = field(
        default=60.0, metadata={"help": "seconds a client may leave one write of the answer unread; past it: closed"})
    max_cards: int = field(default=12, metadata={
        "help": "most cards in one answer: the rest are summarised in one last card (critical first)"})
    fhir_allowlist: tuple[str, ...] = field(
        default=(),
        metadata={"help": "FHIR server base URLs we may fetch from (comma separated); empty = never fetch"},
    )
    fhir_connect_timeout: float = field(default=1.0, metadata={"help": "FHIR connect timeout, seconds"})
    fhir_read_timeout: float = field(default=2.0, metadata={"help": "FHIR read timeout, seconds"})
    hook_deadline: float = field(
        default=1.0, metadata={"help": "budget of one hook call, FHIR fetches included, seconds; past it: no cards"})
    fhir_max_pages: int = field(default=10, metadata={"help": "most searchset pages followed per prefetch key"})
    fhir_max_bytes: int = field(default=20 * 1024 * 1024, metadata={"help": "most bytes read from FHIR per call"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    playground: bool = field(
        default=False, metadata={"help": "serve the playground at / even with authentication on"})
    cdi_review: bool = field(
        default=False,
        metadata={"help": "offer the CDI review service (spine-coding-cdi-review, hook patient-view): the "
                          "documentation queries and specificity cards of the current encounter as info cards, "
                          "for documentation specialists; off = absent from discovery and 404 on its endpoint"})
    silent_rules: tuple[str, ...] = field(
        default=(), metadata={"help": "rule ids that run silently (recorded, not shown; comma separated; * for all)"})
    suppression_window: str = field(
        default="encounter",
        metadata={"help": "how long a card accepted or overridden with a reason stays hidden for the same patient, "
                          "resource and rule: `encounter` (the rest of the encounter; 24 h without one), "
                          "a duration (30d, 12h, 90m, 2w) or `off`"},
    )
    hash_key: str = field(
        default="", repr=False,
        metadata={"help": "secret key of the keyed hashes (HMAC-SHA256) that stand for patient, encounter and "
                          "resource ids in the suppression records, 32 characters or more; empty = a random key "
                          "generated once and kept in the database"},
    )
    metrics_token: str = field(
        default="", repr=False,
        metadata={"help": "a static bearer token that a scraper (Prometheus' `authorization.credentials`) may send to "
                          "GET /metrics when authentication is on, instead of a JWT (which is accepted once); 32 "
                          "characters or more; empty = /metrics takes JWTs only. Never logged nor printed"},
    )
    database_timeout: float = field(
        default=2.0,
        metadata={"help": "longest wait on the database for one statement, lock or connection, seconds (SQLite "
                          "busy_timeout; PostgreSQL statement_timeout, lock_timeout, connect_timeout); on a hook "
                          "call's path at most a quarter of SPINE_CDS_HOOK_DEADLINE"},
    )
    migrate: str = field(
        default="auto",
        metadata={"help": "the database schema at start: `auto` brings it to this release's revision (service/"
                          "migrations; on PostgreSQL one instance at a time, under an advisory lock); `check` "
                          "changes nothing and refuses to start on a database behind it, naming `spine-cds "
                          "migrate` (an empty database is still made). At the revision either costs one query"},
    )
    write_queue_rows: int = field(
        default=10_000,
        metadata={"help": "issued-card and timeout records a worker keeps in memory while the database cannot "
                          "take them (retried; beyond it the oldest are dropped, counted in /healthz and /stats)"},
    )
    retention_days: int = field(
        default=400,
        metadata={"help": "days issued cards, feedback, suppressions and hook timeouts are kept (purged by "
                          "`spine-cds purge` and once a day by the served instance); 0 = kept forever"},
    )
    feedback_max_items: int = field(default=100, metadata={"help": "most feedback items in one request"})
    feedback_max_comment: int = field(
        default=2000, metadata={"help": "longest overrideReason.userComment accepted, characters"})
    tabular_xml: str = field(
        default="",
        metadata={"help": "the CDC ICD-10-CM tabular XML to load (icd10cm-tabular-YYYY.xml of a CDC release), with "
                          "SPINE_CDS_CODE_LIST; empty = the packaged April 1 2026 release (FY2026)"})
    code_list: str = field(
        default="",
        metadata={"help": "the code list of the same release (the CDC's icd10cm-codes-YYYY.txt: the first word "
                          "of each line is read), with SPINE_CDS_TABULAR_XML"})
    tabular_effective: str = field(
        default="",
        metadata={"help": "the loaded release's validity, START/END in ISO dates (e.g. 2026-10-01/2027-09-30); "
                          "empty = derived from the release (its <version> fiscal year, October 1 to September "
                          "30; April 1 to September 30 when the tabular's file name says April)"})

    # ----------------------------------------------------------------- derived
    @property
    def auth_enabled(self) -> bool:
        return bool(self.trusted_issuers)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'spine-cds.sqlite3'}"

    @property
    def suppression(self) -> "SuppressionWindow":
        return parse_suppression_window(self.suppression_window)

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_mapping(cls, values: dict) -> "Settings":
        """Build from {name: value}; values may be strings (environment) or typed (tests)."""
        problems: list[str] = []
        kwargs = {}
        known = {f.name: f for f in fields(cls)}
        for name, raw in values.items():
            if name not in known:
                problems.append(f"{PREFIX}{name.upper()}: unknown setting")
                continue
            try:
                kwargs[name] = _coerce(name, known[name].default, raw)
            except (ValueError, TypeError, OSError) as exc:
                problems.append(f"{PREFIX}{name.upper()}: {exc}")
        if problems:
            raise ConfigError(problems)
        settings = cls(**kwargs)
        settings.validate()
        return settings

    @classmethod
    def from_env(cls, environ: dict | None = None, overrides: dict | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {
            key[len(PREFIX):].lower(): value
            for key, value in environ.items()
            if key.startswith(PREFIX) and not key.startswith(PREFIX + "TEST_")
        }
        values.update(overrides or {})
        return cls.from_mapping(values)

    def validate(self) -> None:
        problems: list[str] = []
        if not (0 < self.port < 65536):
            problems.append(f"{PREFIX}PORT: {self.port} is not a TCP port")
        if self.workers < 0:
            problems.append(f"{PREFIX}WORKERS: must be 0 (one per core) or more")
        if self.public_base_url:
            parts = urlsplit(self.public_base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems.append(f"{PREFIX}PUBLIC_BASE_URL: {self.public_base_url!r} is not an http(s) URL")
        if self.auth_enabled and not self.public_base_url:
            problems.append(
                f"{PREFIX}PUBLIC_BASE_URL: required when trusted issuers are configured "
                "(a JWT's `aud` is checked against it)"
            )
        for alg in self.jwt_algorithms:
            if alg.upper() == "NONE" or alg.upper().startswith("HS"):
                problems.append(f"{PREFIX}JWT_ALGORITHMS: {alg} is forbidden by CDS Hooks (none and HMAC)")
            elif alg not in SUPPORTED_ALGORITHMS:
                problems.append(f"{PREFIX}JWT_ALGORITHMS: {alg} is not one of {', '.join(SUPPORTED_ALGORITHMS)}")
        for issuer in self.trusted_issuers:
            if not issuer.jwks_file and not issuer.jku:
                problems.append(f"{PREFIX}TRUSTED_ISSUERS: {issuer.iss} needs jwks_file or jku")
            if issuer.jwks_file and not Path(issuer.jwks_file).is_file():
                problems.append(f"{PREFIX}TRUSTED_ISSUERS: {issuer.iss}: no file {issuer.jwks_file}")
            for url in issuer.jku:
                try:
                    urls.canonical(url)
                except urls.UnsafeUrl as exc:
                    problems.append(f"{PREFIX}TRUSTED_ISSUERS: {issuer.iss}: jku {url!r} is not an "
                                    f"http(s) URL ({exc})")
        for origin in self.cors_origins:
            try:
                normalise_origin(origin)
            except ValueError as exc:
                problems.append(f"{PREFIX}CORS_ORIGINS: {exc}")
        for url in self.fhir_allowlist:
            try:
                urls.base(url)
            except urls.UnsafeUrl as exc:
                problems.append(f"{PREFIX}FHIR_ALLOWLIST: {url!r} is not an http(s) base URL ({exc})")
        for name in ("fhir_connect_timeout", "fhir_read_timeout", "hook_deadline", "header_timeout",
                     "body_timeout", "send_timeout"):
            if getattr(self, name) <= 0:
                problems.append(f"{PREFIX}{name.upper()}: must be positive")
        for name in ("max_body_bytes", "fhir_max_pages", "fhir_max_bytes", "jwt_max_lifetime", "max_cards"):
            if getattr(self, name) <= 0:
                problems.append(f"{PREFIX}{name.upper()}: must be positive")
        for name in ("database_timeout", "write_queue_rows", "feedback_max_items", "feedback_max_comment"):
            if getattr(self, name) <= 0:
                problems.append(f"{PREFIX}{name.upper()}: must be positive")
        if self.migrate.strip().lower() not in MIGRATE_MODES:
            problems.append(f"{PREFIX}MIGRATE: {self.migrate!r} is not auto or check")
        if self.retention_days < 0:
            problems.append(f"{PREFIX}RETENTION_DAYS: must be 0 (keep forever) or more")
        try:
            parse_suppression_window(self.suppression_window)
        except ValueError as exc:
            problems.append(f"{PREFIX}SUPPRESSION_WINDOW: {exc}")
        if self.hash_key and len(self.hash_key) < MIN_HASH_KEY_LENGTH:
            problems.append(f"{PREFIX}HASH_KEY: too short ({len(self.hash_key)} characters; at least "
                            f"{MIN_HASH_KEY_LENGTH}, e.g. the output of `openssl rand -hex 32`)")
        if self.metrics_token and len(self.metrics_token) < MIN_HASH_KEY_LENGTH:
            problems.append(f"{PREFIX}METRICS_TOKEN: too short ({len(self.metrics_token)} characters; at least "
                            f"{MIN_HASH_KEY_LENGTH}, e.g. the output of `openssl rand -hex 32`)")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"{PREFIX}LOG_LEVEL: {self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        try:
            self.release()  # the files' first lines and the stated period (the tabular is parsed at load)
        except ValueError as exc:  # ReleaseError: one problem per entry, each naming its setting
            problems.extend(getattr(exc, "problems", [str(exc)]))
        if problems:
            raise ConfigError(problems)

    def release(self):
        """The ICD-10-CM release these settings name, with its validity period (service/terminology.py)."""
        from .terminology import read_release

        return read_release(self.tabular_xml, self.code_list, self.tabular_effective)

    def check_bind(self) -> None:
        """Refuse to serve PHI openly on a network: the check `serve` runs before binding."""
        if not self.auth_enabled and not self.binds_loopback and not self.allow_open:
            raise ConfigError([
                f"{PREFIX}HOST={self.host} is not a loopback address and no trusted issuer is configured: "
                f"anyone on the network could call the service. Configure {PREFIX}TRUSTED_ISSUERS, "
                f"or set {PREFIX}ALLOW_OPEN=true if this is really intended."
            ])

    def describe(self) -> dict:
        """What `check-config` prints: every setting, no secrets (the hash key is only said to be set)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hash_key":
                value = "(set)" if value else "(generated, kept in the database)"
            elif f.name == "metrics_token":
                value = "(set)" if value else "(none: JWTs only)"
            elif f.name == "trusted_issuers":
                value = [{"iss": i.iss, "keys": i.jwks_file or list(i.jku)} for i in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["database"] = _redact_url(self.sqlalchemy_url)
        out.pop("database_url", None)
        out["authentication"] = "JWT" if self.auth_enabled else "OFF (open, development only)"
        out["playground_access"] = (
            "open to anyone who reaches the service (authentication is off)" if not self.auth_enabled
            else "on, for callers with a valid bearer JWT only (401 without one)" if self.playground
            else "off (404); SPINE_CDS_PLAYGROUND=true turns it on for callers with a valid bearer JWT")
        return out


MIN_HASH_KEY_LENGTH = 32
MIGRATE_MODES = ("auto", "check")  # SPINE_CDS_MIGRATE (service/store.py, Store.create_schema)


@dataclass(frozen=True)
class SuppressionWindow:
    """SPINE_CDS_SUPPRESSION_WINDOW, parsed: `encounter`, a `duration`, or `off`."""

    mode: str  # "encounter" | "duration" | "off"
    duration: timedelta | None = None

    # A card whose hook call names no encounter cannot be kept to "the rest of the encounter".
    ENCOUNTER_FALLBACK = timedelta(hours=24)


_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_LONGEST_WINDOW = timedelta(days=3650)


def parse_suppression_window(value) -> SuppressionWindow:
    """`encounter`, `off`, or a positive whole number of m(inutes), h(ours), d(ays) or w(eeks)."""
    text = str(value).strip().lower()
    if text == "encounter":
        return SuppressionWindow("encounter")
    if text == "off":
        return SuppressionWindow("off")
    match = re.fullmatch(r"(\d{1,7})\s*([mhdw])", text)
    if not match:
        raise ValueError(f"{value!r} is not `encounter`, `off` or a duration such as 30d, 12h, 90m or 2w")
    duration = int(match.group(1)) * _UNITS[match.group(2)]
    if duration <= timedelta(0):
        raise ValueError(f"{value!r}: the duration must be positive")
    if duration > _LONGEST_WINDOW:
        raise ValueError(f"{value!r}: at most 3650d")
    return SuppressionWindow("duration", duration)


SUPPORTED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _parse_issuers(raw) -> tuple[TrustedIssuer, ...]:
    if isinstance(raw, (list, tuple)):
        items = raw
    else:
        text = str(raw).strip()
        if not text:
            return ()
        if not text.startswith("["):
            path = Path(text)
            if not path.is_file():
                raise ValueError(f"not a JSON list and no file named {text!r}")
            text = path.read_text()
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of issuers")
    issuers = []
    for n, item in enumerate(items):
        if isinstance(item, TrustedIssuer):
            issuers.append(item)
            continue
        if not isinstance(item, dict) or not isinstance(item.get("iss"), str) or not item["iss"]:
            raise ValueError(f"issuer #{n + 1} needs a string `iss`")
        unknown = set(item) - {"iss", "jwks_file", "jku", "tenants"}
        if unknown:
            raise ValueError(f"issuer {item['iss']}: unknown keys {sorted(unknown)}")
        jku = item.get("jku") or ()
        if isinstance(jku, str):
            jku = (jku,)
        issuers.append(TrustedIssuer(
            iss=item["iss"], jwks_file=item.get("jwks_file"),
            jku=tuple(jku), tenants=tuple(item.get("tenants") or ()),
        ))
    return tuple(issuers)


def _coerce(name: str, default, raw):
    if name == "trusted_issuers":
        return _parse_issuers(raw)
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{raw!r} is not true or false")
    if isinstance(default, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a whole number") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a number") from None
    if isinstance(default, tuple):
        if isinstance(raw, (list, tuple)):
            return tuple(str(v) for v in raw)
        return _csv(str(raw))
    return str(raw)
