"""The database schema (SQLAlchemy Core).

``entries``  the winning version of every unit
``commits``  the commit log: metadata of every applied commit, its writes, its seal
``losses``   versions superseded by a writer that had not seen them
``meta``     this machine's identity and the schema version
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = "2"  # 2: commits gained their seal (clusterd/store/migrate.py)

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("feature", String(64), primary_key=True),
    Column("mode", String(300), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("hlc", BigInteger, nullable=False),
    Column("origin", String(128), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("value", Text, nullable=True),  # JSON; NULL: deleted / not defined
    Column("with_reset", Boolean, nullable=False, default=False),
)

commits = Table(
    "commits",
    metadata,
    Column("origin", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("hlc", BigInteger, nullable=False),
    Column("user", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("comment", Text, nullable=False),
    Column("context", Text, nullable=False),  # JSON version vector
    Column("writes", Text, nullable=True),  # JSON; NULL once the log is truncated
    # The seal (clusterd/core/chain.py); NULL: a legacy commit, written by schema 1.
    Column("prev", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Column("sig", String(128), nullable=True),
)

losses = Table(
    "losses",
    metadata,
    Column("feature", String(64), primary_key=True),
    Column("mode", String(300), primary_key=True),
    Column("key", String(300), primary_key=True),
    Column("loser_origin", String(128), primary_key=True),
    Column("loser_seq", Integer, primary_key=True),
    Column("loser_hlc", BigInteger, nullable=False),
    Column("loser_value", Text, nullable=True),
    Column("loser_with_reset", Boolean, nullable=False, default=False),
    Column("by_origin", String(128), nullable=False),
    Column("by_seq", Integer, nullable=False),
)
