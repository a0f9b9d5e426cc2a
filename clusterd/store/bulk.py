"""Plain DB-API ``executemany`` for the store's hot paths.

SQLAlchemy's per-row parameter processing costs more than SQLite's insert itself on a
100,000-row commit, so bulk writes and the load at start-up go straight to the
driver with SQL built here for the engine's dialect (placeholders and quoting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect


class Bulk:
    def __init__(self, dialect: Dialect) -> None:
        self._quote = dialect.identifier_preparer.quote
        self._style = dialect.paramstyle

    def _marks(self, count: int, start: int = 0) -> list[str]:
        if self._style == "qmark":
            return ["?"] * count
        if self._style in ("format", "pyformat"):
            return ["%s"] * count
        if self._style == "numeric":
            return [f":{i + 1}" for i in range(start, start + count)]
        return [f":p{i}" for i in range(start, start + count)]  # named

    def _params(self, rows: Sequence[Sequence[Any]]) -> Sequence[Any]:
        if self._style == "named":
            return [{f"p{i}": v for i, v in enumerate(row)} for row in rows]
        return [tuple(row) for row in rows]

    def _cols(self, names: Sequence[str]) -> list[str]:
        return [self._quote(n) for n in names]

    def insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        sql = (
            f"INSERT INTO {self._quote(table.name)} ({', '.join(self._cols(columns))}) "
            f"VALUES ({', '.join(self._marks(len(columns)))})"
        )
        conn.exec_driver_sql(sql, self._params(rows))

    def update(
        self,
        conn: Connection,
        table: Table,
        columns: Sequence[str],
        keys: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """``rows`` hold the new column values, then the key values."""
        if not rows:
            return
        sets = self._marks(len(columns))
        wheres = self._marks(len(keys), start=len(columns))
        sql = (
            f"UPDATE {self._quote(table.name)} SET "
            + ", ".join(f"{c} = {m}" for c, m in zip(self._cols(columns), sets, strict=True))
            + " WHERE "
            + " AND ".join(f"{c} = {m}" for c, m in zip(self._cols(keys), wheres, strict=True))
        )
        conn.exec_driver_sql(sql, self._params(rows))

    def delete(
        self, conn: Connection, table: Table, keys: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        marks = self._marks(len(keys))
        sql = f"DELETE FROM {self._quote(table.name)} WHERE " + " AND ".join(
            f"{c} = {m}" for c, m in zip(self._cols(keys), marks, strict=True)
        )
        conn.exec_driver_sql(sql, self._params(rows))

    def select(self, conn: Connection, table: Table, columns: Sequence[str]) -> list[Any]:
        sql = f"SELECT {', '.join(self._cols(columns))} FROM {self._quote(table.name)}"
        return list(conn.exec_driver_sql(sql))
