"""Alembic's environment, for Alembic's own commands and `spine-cds migrate --sql` (offline).

The service does not run this file: it migrates through `service.migrations.upgrade` on its own
connection, under its lock (service/store.py). Here: a connection given as the attribute
`connection`, else an engine made from the attribute `url` or the option `sqlalchemy.url`.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from service.store import metadata

config = context.config


def _url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = create_engine(_url())
        try:
            with engine.connect() as connection:
                context.configure(connection=connection, target_metadata=metadata)
                with context.begin_transaction():
                    context.run_migrations()
        finally:
            engine.dispose()
