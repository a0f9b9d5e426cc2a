"""Writes ``tests/data/schema1.sql``: a store of schema 1 (the commit log before the
chain: no ``prev``, ``hash``, ``sig``), dumped as SQL text so that the test of the
migration (``tests/test_chain_store.py``) builds a real old file from it.

It was run once with the code of commit f6f0023 (schema 1), from the repository root:

    PYTHONPATH=. python tests/data/make_schema1.py

Running it with today's code writes a schema-2 dump instead: keep the file it made.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from tests.storehelp import americas, session

OUT = Path(__file__).with_name("schema1.sql")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = americas(Path(tmp))  # newyork (SER-NY) made the cluster: 3 commits
        s = session(store, "alice")
        s.define("unsubscribe", Mode.cluster(), Start.EMPTY)
        s.set_row("unsubscribe", Mode.cluster(), "a@x.example", {"comment": "été"})
        s.commit("a legacy commit")
        path = Path(tmp) / "newyork.example.com.db"
        store.close()
        conn = sqlite3.connect(path)
        schema = dict(conn.execute("SELECT key, value FROM meta"))["schema"]
        if schema != "1":
            sys.exit(f"this store has schema {schema}: run me with the schema-1 code")
        OUT.write_text("\n".join(conn.iterdump()) + "\n", encoding="utf-8")
        conn.close()


if __name__ == "__main__":
    main()
