"""The application factory: one place builds the app from settings (the Flask tutorial pattern)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from . import cors
from .auth import TokenVerifier
from .config import Settings
from .errors import HTTP_ISSUE_CODES, Issue, Problem, operation_outcome
from .logs import configure as configure_logging, safe_exception
from .metrics import EXTENSION as METRICS, Metrics
from .runtime import Runtime, _TERMINOLOGY, build_runtime, terminology_for  # noqa: F401 - re-exported
from .store import Store

log = logging.getLogger(__name__)


def create_app(config: Settings | dict | None = None, load_terminology: bool = True) -> Flask:
    settings = config if isinstance(config, Settings) else Settings.from_env(overrides=config)
    configure_logging(settings.log_level)

    store = Store.from_settings(settings)
    store.create_schema()
    verifier = (lambda s: TokenVerifier(settings, s)) if settings.auth_enabled else None
    runtime = build_runtime(settings, store, verifier_for=verifier, load_terminology=load_terminology)
    store.override_reasons = frozenset((r["system"], r["code"]) for r in runtime.catalogue.override_reasons())

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["spine_cds"] = runtime
    app.extensions[METRICS] = Metrics.for_runtime(runtime).install()  # this app's own (service/metrics.py)

    from .api import analytics, feedback, health, hooks, openapi, playground, rule_pages, stats
    app.register_blueprint(hooks.blueprint)
    app.register_blueprint(playground.blueprint)
    app.register_blueprint(analytics.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(stats.blueprint)
    app.register_blueprint(rule_pages.blueprint)
    app.register_blueprint(feedback.blueprint)
    app.register_blueprint(health.blueprint)
    from .api import metrics as metrics_api
    app.register_blueprint(metrics_api.blueprint)

    # flask-cors for the allowed origins; the others refused with a 403 that says why, logged (cors.py)
    cors.install(app, settings)

    _register_error_handlers(app)
    _warn_about_the_code_set(runtime.release, runtime.terminology)
    if not settings.auth_enabled:
        log.warning("AUTHENTICATION IS OFF: no trusted issuer configured (SPINE_CDS_TRUSTED_ISSUERS); "
                    "any caller can use this service. For local development only.")
    return app


def _warn_about_the_code_set(release, terminology) -> None:
    from .code_set import table_codes_missing, today

    if terminology.loaded and not release.packaged:
        missing = table_codes_missing(terminology)
        if missing:
            log.warning("the loaded ICD-10-CM release lacks %s, named by the code tables "
                        "(service/knowledge/code_tables.toml): the cards that would propose them are not shown",
                        ", ".join(missing))
    day = today()
    if not release.covers(day):
        log.warning("the loaded ICD-10-CM release (%s, %s) does not cover today (%s): hook answers say so and "
                    "withhold the suggestions that set a code; load the release in effect with "
                    "SPINE_CDS_TABULAR_XML and SPINE_CDS_CODE_LIST", release.title,
                    f"valid {release.period}" if release.period else "validity unknown", day.isoformat())


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def problem(exc: Problem):
        return jsonify(exc.to_json()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status == 413:
            message = f"the request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        elif status == 404:
            message = f"nothing at {request.path}; the services are listed at GET /cds-services"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = exc.description or exc.name
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        body = operation_outcome([Issue(HTTP_ISSUE_CODES.get(status, "processing"), message)])
        return jsonify(body), status, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.error("unexpected error on %s %s: %s", request.method, request.path, safe_exception(exc))
        body = operation_outcome([Issue("exception", "internal error; it has been logged")])
        return jsonify(body), 500
