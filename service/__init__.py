"""Spine Coding CDS: a CDS Hooks service for spine diagnosis coding."""

__all__ = ["create_app"]


def __getattr__(name):
    # Imported on first use, not with the package: `spine-cds serve` must let gevent patch the
    # standard library before the app (requests, SQLAlchemy, psycopg) is imported.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
