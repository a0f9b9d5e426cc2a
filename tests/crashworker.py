"""A worker for the crash-safety test: one big commit, to be killed at any moment.

Run as ``python tests/crashworker.py STORE_PATH ROUND``.  It opens the standalone
store and builds, through a ``Session``, one pending commit that sets ``ROWS`` rows
of its machine's ``unsubscribe`` table (less the seventh this round leaves out), all
commented ``round-ROUND``, and deletes the rows of earlier rounds that this round
leaves out; every ``RESET_EVERY``-th round redefines the table instead (a reset that
hides every older row).  Either way the visible table is then exactly
``expected_rows(ROUND)``.  It prints ``READY`` once the commit is built, commits
(printing ``BEGIN`` when the store's write transaction begins and ``COMMIT`` just
before the database is told to commit), prints ``DONE`` and exits.  The test kills
it with SIGKILL at random moments around the commit; see ``tests/test_crash.py``.

With ``--wait`` it does its (slow) imports, then waits for a line on stdin before it
opens the store: the test starts the next worker while it checks the last round.

Not a test module (pytest does not collect it): no ``test_`` names.
"""

from __future__ import annotations

import sys

ORIGIN = "SER-1"
HOSTNAME = "m1.example.com"
FEATURE = "unsubscribe"
ROWS = 3000
RESET_EVERY = 5  # every fifth round redefines the table (a reset) instead of deleting rows


def row_name(i: int) -> str:
    return f"user{i}@example.com"


def live(i: int, round_no: int) -> bool:
    """Whether row ``i`` exists after round ``round_no`` (a seventh is left out, in turn)."""
    return (i + round_no) % 7 != 0


def comment(round_no: int) -> str:
    return f"round-{round_no}"


def expected_rows(round_no: int) -> dict[str, dict[str, str]]:
    """The exact visible table once round ``round_no`` has committed."""
    return {row_name(i): {"comment": comment(round_no)} for i in range(ROWS) if live(i, round_no)}


def run(path: str, round_no: int, wait: bool = False) -> None:
    # Imported here so that the test can import this module for its helpers cheaply.
    from sqlalchemy import event

    from clusterd.core.edits import Start
    from clusterd.core.modes import Mode
    from clusterd.core.state import definition
    from clusterd.store.session import Session
    from clusterd.store.store import Store

    if wait:
        sys.stdin.readline()  # started ahead of time: the imports are done, wait for "go"
    store = Store(path, origin=ORIGIN, hostname=HOSTNAME)
    session = Session(store, "crash")
    me = Mode.machine(HOSTNAME)
    # the table as committed by the rounds before (None: not defined yet)
    before = definition(store.state.entries(FEATURE, me.key), is_table=True)
    reset = round_no % RESET_EVERY == 0 or before is None
    if reset:
        session.define(FEATURE, me, Start.EMPTY)  # hides every row written before
    for i in range(ROWS):
        name = row_name(i)
        if live(i, round_no):
            session.set_row(FEATURE, me, name, {"comment": comment(round_no)})
        elif not reset and name in before:
            session.delete_row(FEATURE, me, name)
    # Progress marks, so that the test sees where in the commit its kill landed: the
    # store's write transaction begins, then its COMMIT is sent to the database.
    event.listen(store.engine, "begin", lambda _conn: print("BEGIN", flush=True))
    event.listen(store.engine, "commit", lambda _conn: print("COMMIT", flush=True))
    print("READY", flush=True)
    session.commit(f"round {round_no}")
    print("DONE", flush=True)
    store.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    wait = "--wait" in args
    args = [a for a in args if a != "--wait"]
    if len(args) != 2:
        sys.exit("usage: crashworker.py STORE_PATH ROUND [--wait]")
    run(args[0], int(args[1]), wait)
