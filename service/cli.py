"""`spine-cds`: serve, evaluate a hook request, check the configuration, migrate the database."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from .config import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spine-cds", description="Spine Coding CDS: a CDS Hooks service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the CDS Hooks API with gunicorn")
    serve.add_argument("--host", help="address to bind (default SPINE_CDS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default SPINE_CDS_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per core)")

    evaluate = commands.add_parser("evaluate", help="run a hook request through the service and print the cards")
    evaluate.add_argument("request", type=Path, help="a CDS Hooks request (JSON), e.g. from fhir_fixtures/")
    evaluate.add_argument("--service", help="service id (default: the service of the request's hook)")
    evaluate.add_argument("--text", action="store_true", help="print the cards as a coder reads them, not JSON")

    commands.add_parser("check-config", help="validate the configuration and print it")

    audit = commands.add_parser("audit", help="run the rules over FHIR Bundles or a Bulk Data export (NDJSON)")
    audit.add_argument("path", help="a Bundle (.json), an .ndjson file, or a folder of them (with --engine dask "
                       "also a URL fsspec reads, e.g. file:// or s3://)")
    audit.add_argument("--out", type=Path, default=Path("audit"), help="folder for audit.csv and audit.html")
    audit.add_argument("--engine", choices=["local", "dask"], default="local",
                       help="local: a process pool on this machine (default); dask: Dask distributed")
    audit.add_argument("--scheduler", help="with --engine dask: a cluster's scheduler, e.g. tcp://host:8786 "
                       "(default: a local cluster of --workers processes)")
    audit.add_argument("--workers", type=int, help="processes (default: one per core)")
    audit.add_argument("--partitioned", action="store_true",
                       help="write the CSV as audit/part-*.csv (done anyway past a million rows)")

    purge = commands.add_parser("purge", help="delete what is older than SPINE_CDS_RETENTION_DAYS, and expired JWT ids")
    purge.add_argument("--days", type=int, help="retention period in days (default SPINE_CDS_RETENTION_DAYS)")

    migrate = commands.add_parser("migrate", help="bring the database to this release's schema (service/migrations)")
    migrate.add_argument("--sql", action="store_true",
                         help="print the SQL of the revisions instead of running it (connects to nothing)")
    migrate.add_argument("--from", dest="start", metavar="REVISION",
                         help="with --sql: the revision the database is at (default: an empty database)")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "purge":
            return _purge(args)
        if args.command == "migrate":
            return _migrate(args)
        return _check_config()
    except ConfigError as exc:
        print(f"spine-cds: {exc}", file=sys.stderr)
        return 2


def _settings(overrides: dict | None = None) -> Settings:
    return Settings.from_env(overrides={k: v for k, v in (overrides or {}).items() if v is not None})


def _check_config() -> int:
    settings = _settings()
    settings.check_bind()
    described = settings.describe()
    described["playground"] = playground_state(settings)  # the effective state, not SPINE_CDS_PLAYGROUND alone
    described["code_set"] = code_set_state(settings)
    print(json.dumps(described, indent=2))
    print("configuration OK", file=sys.stderr)
    return 0


def code_set_state(settings) -> dict:
    """The ICD-10-CM release the service loads and the days it is valid for. A release given by path is
    loaded here as `serve` would load it (a few seconds), so that a file that does not parse is a
    configuration error now rather than at start; the packaged one is known good and is not parsed."""
    from .app import terminology_for
    from .code_set import table_codes_missing, today
    from .terminology import ReleaseError

    release = settings.release()
    out = release.describe()
    out["coversToday"] = release.covers(today())
    if not release.packaged:
        terminology = terminology_for(release)
        try:
            terminology.load()
        except ReleaseError as exc:
            raise ConfigError(exc.problems) from None
        out["loadSeconds"] = round(terminology.load_seconds, 2)
        out["tableCodesMissing"] = table_codes_missing(terminology)
    return out


def playground_state(settings) -> dict:
    """Whether the playground at `/` is served and to whom, as service/api/playground.py decides it:
    open whenever authentication is off (SPINE_CDS_PLAYGROUND then changes nothing); with it on, only
    with SPINE_CDS_PLAYGROUND=true, to callers with a valid bearer JWT."""
    if not settings.auth_enabled:
        served, to = True, "anyone who reaches the service (authentication is off)"
    elif settings.playground:
        served, to = True, "callers with a valid bearer JWT only (401 without one)"
    else:
        served, to = False, "nobody (404): authentication is on and SPINE_CDS_PLAYGROUND is not true"
    return {"served": served, "to": to, "SPINE_CDS_PLAYGROUND": settings.playground}


def _evaluate(args) -> int:
    from .errors import Problem
    from .logs import configure as configure_logging
    from .pipeline import Call, answer_hook
    from .runtime import build_runtime
    from .services import SERVICES, service_for_hook

    try:
        body = json.loads(args.request.read_text())
    except (OSError, ValueError) as exc:
        print(f"spine-cds: cannot read {args.request}: {exc}", file=sys.stderr)
        return 2
    service = SERVICES.get(args.service) if args.service else service_for_hook(
        body.get("hook") if isinstance(body, dict) else None)
    if service is None:
        print("spine-cds: no service for this request's hook; pass --service", file=sys.stderr)
        return 2
    # An evaluation is a dry run of the same pipeline as a hook call: no database, nothing recorded,
    # no feedback screens a card (the service's feedback is in its own database).
    settings = _settings({"log_level": os.environ.get("SPINE_CDS_LOG_LEVEL", "ERROR")})
    configure_logging(settings.log_level)
    runtime = build_runtime(settings, store=None)
    try:
        answer = answer_hook(runtime, service, body, Call(settings.public_base_url or "http://localhost:8080/",
                                                          origin=None, screen=False)).response
    except Problem as problem:
        print(json.dumps(problem.to_json(), indent=2))
        return 1
    print(_as_text(answer) if args.text else json.dumps(answer, indent=2))
    return 0


def _as_text(answer: dict) -> str:
    code_set = (answer.get("extension") or {}).get("spine-coding-cds", {}).get("codeSet")
    after = [f"code set: {code_set['note']}"] if code_set else []
    if not answer["cards"]:
        return "\n".join(["no cards: the codes match the documentation"] + after)
    lines = []
    for card in answer["cards"]:
        payload = card["extension"]["spine-coding-cds"]
        lines.append(f"[{card['indicator'].upper()}] {payload['rule']} ({card['source']['topic']['code']})")
        lines.append(f"  {card['summary']}")
        if payload["proposedCodes"]:
            lines.append(f"  proposes: {', '.join(payload['proposedCodes'])}")
        if payload.get("missingDocumentation"):
            lines.append(f"  missing: {', '.join(payload['missingDocumentation'])}")
        for evidence in payload["evidence"]:
            lines.append(f"  evidence: \"{evidence['text']}\" ({evidence['reference']}, {evidence['assertion']})")
        for suggestion in card.get("suggestions", []):
            lines.append(f"  suggestion: {suggestion['label']}")
    return "\n".join(lines + after)


def _audit(args) -> int:
    from .audit import run

    url = "://" in args.path
    if url and args.engine != "dask":
        print(f"spine-cds: {args.path} is a URL: the local engine reads a local path (use --engine dask)", file=sys.stderr)
        return 2
    if args.scheduler and args.engine != "dask":
        print("spine-cds: --scheduler is for --engine dask", file=sys.stderr)
        return 2
    if not url and not Path(args.path).exists():
        print(f"spine-cds: no such file or folder: {args.path}", file=sys.stderr)
        return 2
    summary = run(args.path, args.out, args.workers, engine=args.engine, scheduler=args.scheduler,
                  partitioned=args.partitioned)
    print(json.dumps(summary, indent=2))
    parts = summary["csv_parts"]
    plural = "" if parts == 1 else "s"
    written = f"{args.out / 'audit'} ({parts} part file{plural})" if parts else str(args.out / "audit.csv")
    print(f"wrote {written} and {args.out / 'audit.html'}", file=sys.stderr)
    return 0


def _purge(args) -> int:
    """Deletes issued cards, feedback, suppressions and hook timeouts older than the retention period
    (0 days: kept) and expired JWT ids; prints the rows deleted per table as JSON."""
    from .store import DATABASE_ERRORS, Store

    settings = _settings({"retention_days": args.days})
    store = Store.from_settings(settings)
    try:
        store.create_schema()
        counts = store.purge()
    except DATABASE_ERRORS as exc:
        print(f"spine-cds: purge failed, the database is unavailable ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        store.engine.dispose()
    print(json.dumps({"retentionDays": settings.retention_days, "deleted": counts}, indent=2))
    return 0


def _migrate(args) -> int:
    """Brings the database of SPINE_CDS_DATABASE_URL (or the data folder's SQLite) to the head revision,
    as a start with SPINE_CDS_MIGRATE=auto would, and prints the revision before and after. Exit 2 when
    the database cannot be reached or written (a message, no traceback)."""
    from . import migrations
    from .logs import configure as configure_logging
    from .store import DATABASE_ERRORS, Store, _NotWritable

    settings = _settings()
    where = settings.describe()["database"]  # the password masked
    if args.sql:
        migrations.sql(settings.sqlalchemy_url, args.start)
        return 0
    configure_logging(settings.log_level)  # Alembic's "Running upgrade ..." lines, on stderr
    store = None
    try:
        store = Store.from_settings(settings)
        if store.path is not None and store.path.exists():
            store._check_file()  # a read-only file is said so, not tried
        before, revision = store.migrate()
        _, after = store.schema_revision()
    except _NotWritable as exc:
        print(f"spine-cds: migrate: the database {where} cannot be written ({exc}); nothing was changed",
              file=sys.stderr)
        return 2
    except DATABASE_ERRORS as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"spine-cds: migrate: the database {where} cannot be reached ({type(exc).__name__}"
              f"{': ' + reason[0] if reason else ''}); nothing was changed", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.engine.dispose()
    if before == migrations.HEAD:
        print(f"database {where}: {after} (up to date)")
    else:
        print(f"database {where}: {migrations.describe(before, revision)} → {after}")
    return 0


def warm_up(app) -> dict:
    """One call through every hook before the fork, so the first EHR call pays no first-use cost
    (model validators, regular expressions, templates, the reader's caches). Nothing is recorded.

    The pipeline is run in process, not through the HTTP route: with authentication on, the
    route refuses a call without a JWT, and nothing would be warmed. The clinician's deadline does
    not apply (a cold first call may take longer than it). The answer: per service, the number of
    cards, or why it did not run to the end (an error's type, or "deadline exceeded")."""
    import dataclasses
    import uuid

    from .pipeline import Call, answer_hook
    from .services import SERVICES

    runtime = app.extensions["spine_cds"]
    warm = dataclasses.replace(runtime, settings=dataclasses.replace(
        runtime.settings, hook_deadline=max(runtime.settings.hook_deadline, 60.0)))
    body = json.loads((Path(__file__).resolve().parent / "knowledge" / "warm-up.json").read_text())
    call = Call(runtime.settings.public_base_url or "http://localhost/", origin=None)  # never recorded
    outcome: dict = {}
    for service in SERVICES.values():
        request = dict(body, hook=service.hook, hookInstance=str(uuid.uuid4()))
        try:
            answer = answer_hook(warm, service, request, call)
            app.json.dumps(answer.response)
            outcome[service.id] = "deadline exceeded" if answer.timed_out else len(answer.cards)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up must not stop the start
            outcome[service.id] = type(exc).__name__
    failed = {k: v for k, v in outcome.items() if not isinstance(v, int)}
    if failed:
        print(f"spine-cds: warm-up failed for {', '.join(f'{k} ({v})' for k, v in failed.items())}",
              file=sys.stderr, flush=True)
    return outcome


def _serve(args) -> int:
    # gevent workers (service/serving.py): gevent patches the standard library before the app,
    # requests, SQLAlchemy or psycopg are imported, since the app is loaded before the fork.
    from . import serving

    serving.patch()

    from gunicorn.app.base import BaseApplication

    from . import collector
    from .app import create_app

    settings = _settings({"host": args.host, "port": args.port, "workers": args.workers})
    settings.check_bind()
    serving.configure(settings.header_timeout, settings.body_timeout, settings.send_timeout)
    serving.prepare_metrics(settings.data_dir)  # PROMETHEUS_MULTIPROC_DIR, before the app is built
    workers = settings.workers or (os.cpu_count() or 1)
    app = create_app(settings)  # terminology, templates and lexicons load here, before the fork
    runtime = app.extensions["spine_cds"]
    warm_up(app)
    # Everything loaded so far (600k objects of the tabular among them) lives as long as the
    # process: take it out of the garbage collector's scans. A full collection over it cost
    # 100-300 ms pauses in the benchmark, and its writes unshared the workers' memory.
    gc.collect()
    gc.freeze()

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", workers)
            # Slow clients cost a greenlet and a socket, not the worker (header, body and send
            # timeouts in service/serving.py).
            self.cfg.set("worker_class", serving.WORKER_CLASS)
            self.cfg.set("worker_connections", serving.WORKER_CONNECTIONS)
            self.cfg.set("keepalive", max(1, int(settings.header_timeout)))
            self.cfg.set("preload_app", True)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)  # request lines go through our own privacy-safe log
            # Room for a bearer token up to our own limit, so an oversized one gets our JSON 401
            # rather than gunicorn's plain-text 400.
            self.cfg.set("limit_request_field_size", 32768)
            self.cfg.set("post_fork", lambda server, worker: (runtime.store.after_fork(), collector.in_worker()))
            self.cfg.set("child_exit", serving.child_exit)  # metrics of a worker gone (service/metrics.py)

        def load(self):
            return serving.BufferedBody(app, settings.max_body_bytes)

    print(f"spine-cds: serving on http://{settings.host}:{settings.port} with {workers} gevent workers "
          f"(database {settings.describe()['database']})", file=sys.stderr, flush=True)
    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
