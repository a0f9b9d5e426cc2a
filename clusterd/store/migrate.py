"""An older store brought to this schema when it is opened, in one transaction.

Schema 1 -> 2: the commit log gains each commit's seal (``prev``, ``hash``, ``sig``;
``clusterd/core/chain.py``), NULL for the commits already there: they stay *legacy*
commits, and each origin's first sealed commit follows them with ``prev`` NULL.

``migrate`` runs before ``create_all`` (which would create nothing: the tables exist)
and before ``Store._check_identity``, which refuses any schema it does not know, as it
refuses a newer one.  On SQLite the migration is one ``BEGIN IMMEDIATE`` transaction
(its driver would otherwise commit each ``ALTER TABLE`` on its own), on PostgreSQL one
ordinary transaction: a crash leaves schema 1 or schema 2, never between.  Read-only
stores (the workers') never migrate: the daemon opened the store first.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine

from clusterd.store import tables as t

log = logging.getLogger(__name__)

SEAL_COLUMNS = (("prev", 64), ("hash", 64), ("sig", 128))


def migrate(engine: Engine) -> str | None:
    """Bring an existing store of schema 1 to schema 2; return the schema it had (None:
    a new store, with no tables yet).  SQLAlchemy errors are the caller's to map."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return _steps(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            found = _steps(conn)
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
        return found


def _steps(conn: Connection) -> str | None:
    inspector: Any = inspect(conn)
    if not inspector.has_table(t.meta.name):
        return None
    query = select(t.meta.c.value).where(t.meta.c.key == "schema")
    schema = conn.execute(query).scalar_one_or_none()
    if schema != "1":
        return schema
    have = {c["name"] for c in inspector.get_columns(t.commits.name)}
    quote = conn.dialect.identifier_preparer.quote
    for name, size in SEAL_COLUMNS:
        if name not in have:
            conn.exec_driver_sql(
                f"ALTER TABLE {quote(t.commits.name)} ADD COLUMN {quote(name)} VARCHAR({size})"
            )
    conn.execute(update(t.meta).where(t.meta.c.key == "schema").values(value="2"))
    conn.execute(insert(t.meta).values(key="legacy", value="1"))  # (sealing.LEGACY)
    log.info("store migrated from schema 1 to 2 (commits gained their seal)")
    return str(schema)
