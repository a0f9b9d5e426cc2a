"""The layered, versioned settings store of one machine (SQLAlchemy).

The database is the durable truth; ``self.state`` is its image in memory, loaded at
open and changed only by batches (``_merge``), each written in **one transaction**.
If the transaction fails, every change to memory is undone (``merge.Undo``: no
database read is needed, so this works while the database is down): the version
vector, the state and the session's pending changes are as before, and the caller
gets ``StoreError`` ("the store is unavailable: ...; nothing was committed").  Remote
commits that could not be written are not applied, so the version vector keeps asking
peers for them until the store is back.

With a ``writer`` (the daemon's thread: ``clusterd.store.writer``), every batch is
merged into memory first and written by the writer, in merge order, so the database
follows memory's order: peers' batches (``queue_remote``) and commits made here
(``commit``, whose maker awaits ``durable``).  Listeners run once a batch is durable
(so a commit made here is sent to nobody before), and a failed write undoes that
batch and every batch queued after it (``docs/store-writer.md``).

Every database error is mapped to ``StoreError`` here, reads included, and remembered
(``outage``) until an operation succeeds again, so the daemon can say the store is
unavailable, alert once and retry without churning.

Local commits and remote commits take the same path: a local commit is a commit whose
origin is this machine.  Remote commits are validated against the catalogue first and
wait in an inbox until what they depend on has been applied (causal order).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import and_, create_engine, delete, event, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from clusterd.core import chain, layers
from clusterd.core import confirm as confirms
from clusterd.core.clock import HybridClock
from clusterd.core.errors import (
    BadCommit,
    ClusterdError,
    CommitConflict,
    InvalidSetting,
    LifecycleError,
    StoreError,
)
from clusterd.core.merge import (
    Inbox,
    Outcome,
    Undo,
    apply,
    apply_transfer,
    inconsistencies,
    merge,
    transfer_changes,
)
from clusterd.core.modes import Mode
from clusterd.core.pending import Pending, View, make_commit
from clusterd.core.state import State
from clusterd.core.unitdigest import UnitDigests, leaf
from clusterd.core.versions import (
    Commit,
    CommitId,
    Loss,
    Snapshot,
    Unit,
    Version,
    VersionVector,
    Write,
)
from clusterd.schema.catalogue import CATALOGUE
from clusterd.schema.feature import Catalogue
from clusterd.store import tables as t
from clusterd.store import transfer
from clusterd.store.bulk import Bulk
from clusterd.store.commitcheck import check_commit, check_write
from clusterd.store.migrate import migrate
from clusterd.store.records import (
    COMMIT_COLS,
    ENTRY_COLS,
    LOSS_COLS,
    JsonCache,
    commit_from_row,
    commit_row,
    entry_row,
    loss_row,
)
from clusterd.store.sealing import Chains, Head, mark_legacy, read_rows, verdicts
from clusterd.store.writer import Writer

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around bulk work.

    Applying or loading 100,000 entries allocates several hundred thousand acyclic
    objects; the collector would walk the growing heap again and again (0.6 s of a
    2.6 s commit).  It resumes as soon as the bulk work ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _contiguous(seqs: set[int]) -> int:
    """The highest n such that 1..n are all in ``seqs``."""
    n = 0
    while n + 1 in seqs:
        n += 1
    return n


def _why(exc: SQLAlchemyError) -> str:
    """A database error in one line, without the SQL and parameters SQLAlchemy adds."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # -> the driver we ship: psycopg 3


def database_url(url_or_path: str | Path) -> str:
    """The SQLAlchemy URL of a ``database`` setting: a plain path is a SQLite file;
    ``postgresql://`` (or ``postgres://``) means PostgreSQL through psycopg, the driver
    of the ``[postgres]`` extra (SQLAlchemy would otherwise pick psycopg2).

    >>> database_url("postgresql://clusterd@db.example.com/clusterd")
    'postgresql+psycopg://clusterd@db.example.com/clusterd'
    """
    text = str(url_or_path)
    if "://" not in text:
        return f"sqlite:///{text}"
    for scheme in POSTGRES_SCHEMES:
        if text.startswith(scheme):
            return "postgresql+psycopg://" + text[len(scheme) :]
    return text


def engine_for(url_or_path: str | Path, *, own_checkpoints: bool = False) -> Engine:
    """A SQLAlchemy engine; a plain path means a SQLite file (WAL).  A database whose
    driver is not installed is a ``StoreError`` that says what to install.

    ``own_checkpoints``: SQLite never checkpoints inside a commit (the only time it
    syncs the disk); the owner calls ``Store.checkpoint``, the daemon from a thread."""
    url = database_url(url_or_path)
    options: dict[str, Any] = {}
    if url.startswith("postgresql"):  # a server that does not answer: fail, do not hang
        options["connect_args"] = {"connect_timeout": 5}
    try:
        engine = create_engine(url, future=True, **options)
    except ModuleNotFoundError as exc:
        extra = " (pip install 'clusterd[postgres]')" if url.startswith("postgresql") else ""
        raise StoreError(f"the database driver {exc.name!r} is not installed{extra}") from None
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {exc}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            if own_checkpoints:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

    return engine


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: list[CommitId]
    waiting: int  # commits held until what they depend on arrives


Waiter = Callable[[BaseException | None], None]  # told once a batch is durable, or why not


@dataclass
class _Batch:
    """A batch merged into memory, with what its transaction writes and how to take it
    back out of memory."""

    commits: list[Commit]
    existed: dict[Unit, bool]
    final: dict[Unit, Version]
    loss_ops: dict[tuple[Unit, CommitId], Loss | None]
    outcomes: list[Outcome]
    undos: list[Undo]
    epoch: int = 0
    error: BaseException | None = None  # set by the writer when its transaction failed
    local: bool = False  # made here (``Store.commit``)
    waiting: list[Waiter] = field(default_factory=list)
    peer: str | None = None  # who sent it (a refusal names them)
    keys: Mapping[str, str] = field(default_factory=dict)  # machine keys, checked against
    sealed: list[Commit] | None = None  # its commits with their seals, once written
    heads: dict[str, Any] = field(default_factory=dict)  # the chains' heads once written
    leaves: list[tuple[Unit, int]] = field(default_factory=list)  # its entries', written
    # A state transfer's batch (``take_transfer``): its commits are written as the log
    # lacks them (``transfer.write_log``), not sealed or checked one by one; the forks
    # found go to ``transferred`` once it is durable.
    transfer: bool = False
    forks: list[CommitId] = field(default_factory=list)
    transferred: Callable[[list[CommitId]], None] | None = None

    def take_seals(self) -> None:
        """Its commits, sealed by the writer, are the ones the listeners are told of."""
        if self.sealed is not None:
            self.commits = self.sealed
            for outcome, commit in zip(self.outcomes, self.sealed, strict=True):
                outcome.commit = commit

    def revert(self, state: State) -> None:
        for undo in reversed(self.undos):  # memory as it was: no database needed
            undo.revert(state)


# Told of every batch applied, once it is durable: its outcomes, and whether it was
# made here (``Store.commit``) rather than merged from members.
Listener = Callable[[list[Outcome], bool], None]
# Told when the writer refused a peer's batch (a commit that does not verify): the
# peer that sent it (None: not known) and why.
Refusal = Callable[[str | None, str], None]


def _tell(waiting: list[Waiter], error: BaseException | None) -> None:
    for wake in waiting:
        wake(error)


class Store:
    """Settings, commit log and recorded losses of the machine ``hostname``."""

    def __init__(
        self,
        url_or_path: str | Path,
        *,
        origin: str,
        hostname: str,
        catalogue: Catalogue = CATALOGUE,
        wall_ms: Callable[[], int] | None = None,
        readonly: bool = False,
        image: State | None = None,
        own_checkpoints: bool = False,
        sealer: chain.Sealer | None = None,
    ) -> None:
        """``readonly``: an image for reading only (a shell worker's), which writes
        nothing, not even the store's identity; ``image``: its state as given, not read
        from the database; ``own_checkpoints``: see ``engine_for``; ``sealer``: signs
        the commits made here and checks peers' signatures (``clusterd.node.seal``;
        None: commits are chained but unsigned, and signatures unverifiable)."""
        self.origin = origin
        self.hostname = hostname
        self.catalogue = catalogue
        self.engine = engine_for(url_or_path, own_checkpoints=own_checkpoints)
        self.bulk = Bulk(self.engine.dialect)
        self.state = State()
        self.inbox = Inbox()
        self.listeners: list[Listener] = []
        self.on_replaced: list[Callable[[], None]] = []  # after a state transfer
        self.on_refused: list[Refusal] = []  # the writer refused a peer's commit
        self.chains = Chains(sealer)  # heads of the chains; used where batches are written
        self.heads: dict[str, Head] = {}  # the chains' durable heads, on the owner's thread
        self.heads_moved = 0  # counts changes of ``heads`` (what caches them compare)
        self._keys: dict[str, str] | None = None  # machine keys by serial (chain.keys)
        self.outage: dict[str, Any] | None = None  # {"error": ..., "since": ...} while down
        self.writer: Writer | None = None  # peers' batches are written there (queue_remote)
        self._queued: deque[_Batch] = deque()  # merged in memory, not yet known durable
        self._epoch = 0  # batches of an older epoch than a failure are not written
        self._failed_epoch = -1
        self._watches: list[transfer.Watch] = []  # state transfers being merged
        self._generation = 0  # counts loads: memory replaced from the database
        # Leaves and sums of the entries as written (``core.unitdigest``): the durable
        # state's; an image for reading (``readonly``) keeps none.
        self.digests = UnitDigests()
        self._digests = not readonly
        try:
            if not readonly:
                migrate(self.engine)
                t.metadata.create_all(self.engine)
                self._check_identity()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store: {_why(exc)}") from exc
        self.clock = HybridClock() if wall_ms is None else HybridClock(wall_ms)
        if image is None:
            self._load()
        else:
            self.state = image

    def __repr__(self) -> str:
        return f"<Store {self.hostname} origin={self.origin} vv={self.state.vv}>"

    @contextlib.contextmanager
    def _db(self, doing: str) -> Iterator[None]:
        """Around every database access: errors become ``StoreError`` (and an outage,
        until an access succeeds again)."""
        try:
            yield
        except SQLAlchemyError as exc:
            why = _why(exc)
            if self.outage is None:
                self.outage = {"error": why, "since": time.time()}
                log.error("the store is unavailable: %s", why)
            raise StoreError(f"the store is unavailable: {why}; {doing}") from exc
        if self.outage is not None:
            since = time.strftime("%H:%M:%S", time.localtime(self.outage["since"]))
            log.warning("the store is available again (down since %s)", since)
            self.outage = None

    def probe(self) -> bool:
        """Whether the database answers now (clears the outage when it does)."""
        try:
            with self._db("not available"), self.engine.connect() as conn:
                conn.execute(select(t.meta.c.key).limit(1)).all()
        except StoreError:
            return False
        return True

    def close(self) -> None:
        self.flush()
        self.engine.dispose()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, syncing both: the disk's
        slow part, kept out of commits (``own_checkpoints``).  PASSIVE: it never waits
        for, nor blocks, a writer.  Safe from another thread; a failure is logged."""
        if self.engine.dialect.name != "sqlite":
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except SQLAlchemyError as exc:
            log.warning("store checkpoint failed (tried again later): %s", _why(exc))

    # -- loading -----------------------------------------------------------------------

    def _check_identity(self) -> None:
        want = {"origin": self.origin, "hostname": self.hostname, "schema": t.SCHEMA_VERSION}
        with self.engine.begin() as conn:
            have = {k: v for k, v in conn.execute(select(t.meta.c.key, t.meta.c.value))}
            if have.get("origin", self.origin) != self.origin:
                raise LifecycleError(
                    f"store belongs to origin {have['origin']!r}, not {self.origin!r}"
                )
            if have.get("schema", t.SCHEMA_VERSION) != t.SCHEMA_VERSION:
                raise LifecycleError(f"store schema {have['schema']} is not {t.SCHEMA_VERSION}")
            for key, value in want.items():
                if key not in have:
                    conn.execute(insert(t.meta).values(key=key, value=value))
                elif have[key] != value:
                    conn.execute(update(t.meta).where(t.meta.c.key == key).values(value=value))

    def reload(self) -> None:
        """Read the in-memory image again from the database (an image for reading, after
        its writer replaced the state)."""
        self.flush()
        self._load()

    def _load(self) -> None:
        """(Re)build the in-memory image from the database."""
        state = State()
        contexts: dict[tuple[str, int], dict[str, int]] = {}
        last_hlc = 0
        loads = json.loads
        seqs: dict[str, set[int]] = {}
        with self._db("nothing was loaded"), self.engine.connect() as conn, gc_paused():
            for origin, seq, hlc, ctx in self.bulk.select(
                conn, t.commits, ("origin", "seq", "hlc", "context")
            ):
                contexts[(origin, seq)] = loads(ctx)
                last_hlc = max(last_hlc, hlc)
                seqs.setdefault(origin, set()).add(seq)
            # What was applied is what is contiguous: a gap (a commit the log lacks) is
            # asked of peers again, never jumped over.
            state.vv.update({origin: _contiguous(found) for origin, found in seqs.items()})
            self.chains.load(conn, state.vv)
            self.heads = dict(self.chains.heads)
            self.heads_moved += 1

            def version(hlc: int, origin: str, seq: int, value: str | None, reset: Any) -> Version:
                parsed = None if value is None else loads(value)
                return Version(
                    hlc, origin, seq, parsed, bool(reset), contexts.get((origin, seq), {})
                )

            digests = UnitDigests()
            for feature, mode, key, *v in self.bulk.select(conn, t.entries, ENTRY_COLS):
                unit = Unit(feature, mode, key)
                state.put(unit, version(*v))
                if self._digests:  # from the text on disk: a byte changed there shows
                    hlc, origin, seq, value, reset = v
                    digests.put(unit, leaf(unit, hlc, origin, seq, bool(reset), value))
            for row in self.bulk.select(conn, t.losses, LOSS_COLS):
                feature, mode, key, origin, seq, hlc, value, reset, by_origin, by_seq = row
                loser = version(hlc, origin, seq, value, reset)
                unit = Unit(feature, mode, key)
                state.add_loss(Loss(unit, loser, CommitId(by_origin, by_seq)))
        self.state = state
        self.digests = digests
        self._keys = None
        self._generation += 1
        self.clock.observe(last_hlc)

    # -- writing -----------------------------------------------------------------------

    def view(self, pending: Pending | None = None) -> View:
        return View(self.state, pending)

    def commit(
        self,
        pending: Pending,
        *,
        user: str,
        comment: str,
        on_conflict: str | None = None,
        confirm: confirms.Asked | None = None,
    ) -> Commit | None:
        """Make a session's pending changes visible at once, as one new commit.

        Pending changes whose unit was committed by somebody else since the session
        read it raise ``CommitConflict`` unless ``on_conflict`` says "keep" (overwrite,
        knowingly) or "discard" (drop those changes, commit the rest).

        ``confirm``: a confirmed commit, carrying its row of
        ``confirm`` with what undoing it needs (``clusterd.core.confirm.record``).

        Without a writer the commit is durable on return, and sealed.  With one, it is
        in memory and queued: ``await durable(commit)`` says when it is written (or
        raises, the commit taken back out of memory) and gives it sealed; it reaches
        the members only then.
        """
        conflicts = pending.conflicts(self.state)
        work = pending
        if conflicts:
            if on_conflict == "discard":  # on a copy: a failed write changes nothing
                work = Pending()
                work.restore(pending.saved())
                work.drop([c.unit for c in conflicts])
            elif on_conflict != "keep":
                raise CommitConflict(conflicts)
        if not work:
            pending.clear()
            return None
        self._check_unchecked(work)
        hlc, at = self.clock.now(), time.time()
        if confirm is not None:
            if work is pending:  # (on a copy: a refused commit leaves pending as it was)
                work = Pending()
                work.restore(pending.saved())
            draft = make_commit(self.state, work, origin=self.origin, hlc=hlc, user=user,
                                at=at, comment=comment)  # fmt: skip
            if any(not self.catalogue[w.unit.feature].internal for w in draft.writes):
                row = confirms.record(self.state, self.catalogue, draft, confirm)
                work.write(self.state, confirms.unit(draft.id), row, checked=True)
        commit = make_commit(
            self.state, work, origin=self.origin, hlc=hlc, user=user, at=at, comment=comment
        )
        if self.writer is None:
            commit = self._apply_batch([commit], local=True)[0].commit  # sealed
        else:
            self._queue(self._merge([commit]), local=True)
        pending.clear()
        return commit

    async def durable(self, commit: Commit | None) -> Commit | None:
        """Return ``commit`` (made here, by ``commit``) once it is durable, with its seal
        (the one it has already if it was); ``StoreError`` if its write failed: it is
        then out of memory again, as if never made."""
        if commit is None:
            return None
        batch = next((b for b in self._queued if b.local and b.commits[0] is commit), None)
        if batch is None:
            if self.state.vv.get(commit.id.origin, 0) < commit.id.seq:
                raise StoreError(f"commit {commit.id} was not written")
            return commit
        written: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def wake(error: BaseException | None) -> None:
            if not written.done():  # (the waiting caller may have been cancelled)
                written.set_result(error)

        batch.waiting.append(wake)
        error = await written
        if error is not None:
            raise StoreError(str(error)) from None
        return batch.commits[0]

    def _check_unchecked(self, pending: Pending) -> None:
        """Validate what no editor validated, as peers will: a bad value never leaves here."""
        standalone = layers.cluster_name(self.state) is None
        own = Mode.machine(self.hostname).key if standalone else None
        fixed = []
        for unit, pw in pending.unchecked():
            try:
                fixed.append((unit, check_write(self.catalogue, Write(unit, pw.value), own)))
            except InvalidSetting as exc:
                raise BadCommit([f"pending change {unit}: {p}" for p in exc.problems]) from None
        for unit, write in fixed:
            pending.mark_checked(unit, write.value)

    def apply_remote(self, commits: Iterable[Commit]) -> ApplyResult:
        """Merge commits from peers, durable on return.  Any invalid commit (or one whose
        seal does not verify): BadCommit, nothing applied."""
        self.flush()
        ready = self._ready(commits)
        outcomes = self._apply_batch(ready) if ready else []
        return ApplyResult([o.commit.id for o in outcomes], len(self.inbox))

    def queue_remote(self, commits: Iterable[Commit], peer: str | None = None) -> ApplyResult:
        """Merge commits from peers into memory now, and have ``writer`` write them
        (``apply_remote`` without one).  Their listeners run once they are durable; a
        failed write takes them, and every batch queued after them, back out of memory
        (peers send them again: version vectors).  Any invalid commit: BadCommit,
        nothing applied.  A commit whose seal does not verify (checked by the writer,
        off the loop) is refused later: the batch is taken back out the same way, and
        ``on_refused`` is told, naming ``peer``."""
        if self.writer is None:
            return self.apply_remote(commits)
        ready = self._ready(commits)
        if not ready:
            return ApplyResult([], len(self.inbox))
        batch = self._merge(ready)
        batch.peer = peer
        self._queue(batch, local=False)
        return ApplyResult([c.id for c in ready], len(self.inbox))

    def _queue(self, batch: _Batch, local: bool) -> None:
        """A batch merged into memory goes to the writer, after every batch before it."""
        assert self.writer is not None
        batch.epoch, batch.local = self._epoch, local
        self._queued.append(batch)
        self.writer.submit(lambda: self._write_queued(batch), lambda: self._written(batch))

    def flush(self) -> None:
        """Every queued batch written, and its outcome taken (blocking): before a write
        that does not go through the queue (a state transfer, a truncation) or a read of
        the whole log, so that the database follows memory's order."""
        if not self._queued or self.writer is None:
            return
        self.writer.wait()
        for batch in list(self._queued):
            self._written(batch)

    def _ready(self, commits: Iterable[Commit]) -> list[Commit]:
        """Check commits from peers, and take those ready to apply (these, or earlier
        ones that waited for them) out of the inbox."""
        with gc_paused():
            checked = [check_commit(self.catalogue, c) for c in commits]
        self.inbox.add(checked)
        ready = self.inbox.drain(self.state)
        if not ready:  # (after a batch, _done does it)
            self.inbox.forget(layers.removed_serials(self.state))
        return ready

    def _write_queued(self, batch: _Batch) -> None:
        """The writer's job: one batch's transaction (skipped after a failure of an
        earlier one, whose revert takes this one out of memory too)."""
        if batch.epoch <= self._failed_epoch:
            batch.error = StoreError("an earlier batch could not be written")
            return
        try:
            self._persist(batch)
        except BaseException as exc:  # the owner's thread reverts
            self._failed_epoch = batch.epoch
            batch.error = exc

    def _written(self, batch: _Batch) -> None:
        """On the owner's thread, once the writer ran ``batch``."""
        if not self._queued or self._queued[0] is not batch:
            return  # taken already (by flush, or reverted with an earlier failure)
        if batch.error is None:
            self._queued.popleft()
            batch.take_seals()
            self._done(batch, local=batch.local)
            _tell(batch.waiting, None)
            return
        self._epoch += 1
        self._keys = None
        for queued in reversed(self._queued):
            queued.revert(self.state)
            self._touch(queued)
        failed = list(self._queued)
        self._queued.clear()
        ours = sum(b.local for b in failed)
        log.warning("%d batch(es) of commits (%d made here) not applied: %s; peers' are "
                    "asked for again", len(failed), ours, batch.error)  # fmt: skip
        error = batch.error
        if isinstance(error, BadCommit):
            error = StoreError(f"a member's commit queued before it was refused ({error}); "
                               "nothing was committed: commit again")  # fmt: skip
        elif not isinstance(error, StoreError):
            error = StoreError(f"the store could not write: {error}; nothing was committed")
        for queued in failed:
            _tell(queued.waiting, error)
        if isinstance(batch.error, BadCommit):
            for refused in self.on_refused:
                refused(batch.peer, "; ".join(batch.error.problems[:3]))

    def _apply_batch(self, commits: list[Commit], local: bool = False) -> list[Outcome]:
        clock_before = self.clock.last
        batch = self._merge(commits)
        batch.local = local
        self._write_now(batch, clock_before)
        return batch.outcomes

    def _write_now(self, batch: _Batch, clock_before: int) -> None:
        """Without a writer: a batch merged into memory is written now; if that fails,
        it is taken back out of memory, and the clock set back to ``clock_before``."""
        try:
            self._persist(batch)
        except BaseException:
            batch.revert(self.state)
            self._keys = None
            self.clock.restore(clock_before)  # a refused batch must not move our clock
            raise
        batch.take_seals()
        self._done(batch, batch.local)

    def _merge(self, commits: list[Commit]) -> _Batch:
        """Merge a batch into memory (taken back out if anything fails meanwhile)."""
        batch = _Batch(commits, {}, {}, {}, [], [])
        try:
            with gc_paused():
                for commit in commits:
                    self.clock.observe(commit.hlc)
                    out = merge(self.state, commit)
                    for unit, version in out.wins:
                        batch.existed.setdefault(unit, unit not in out.new_units)
                        batch.final[unit] = version
                    for unit, loser in out.dropped:
                        batch.loss_ops[(unit, loser)] = None
                    for loss in out.added:
                        batch.loss_ops[(loss.unit, loss.loser.commit)] = loss
                    batch.undos.append(apply(self.state, out))
                    batch.outcomes.append(out)
        except BaseException:
            batch.revert(self.state)
            raise
        if any(w.unit.feature == "machines" for c in commits for w in c.writes):
            self._keys = None  # (a member admitted in this batch may have commits in it)
        batch.keys = self.keys()
        self._touch(batch)
        return batch

    def _touch(self, batch: _Batch) -> None:
        """Tell the transfers being merged which units ``batch`` changed (or put back)."""
        for watch in self._watches:
            watch.touched.update(batch.final)
            watch.touched.update(unit for unit, _ in batch.loss_ops)

    def keys(self) -> dict[str, str]:
        """Every member's machine key by serial, as memory has it now: what peers'
        signatures are checked with (a new table after a change; never changed)."""
        if self._keys is None:
            self._keys = chain.keys(self.state)
        return self._keys

    def _persist(self, batch: _Batch) -> None:
        """The batch's transaction, its commits sealed (made here) or checked (from
        peers) in it; the chains' heads move once it committed."""
        with gc_paused(), self._db("nothing was committed"), self.engine.begin() as conn:
            self._write(conn, batch)
        self.chains.advance(batch.heads)

    def _done(self, batch: _Batch, local: bool) -> None:
        """A batch is durable: what removed machines made and still waits, waits for
        nobody now; the listeners are told."""
        for origin, head in batch.heads.items():  # (what witnessing compares)
            if head[0] > self.heads.get(origin, (0, None))[0]:
                self.heads[origin] = head
                self.heads_moved += 1
        self.inbox.forget(layers.removed_serials(self.state))
        self.digests.update(batch.leaves)
        if batch.transfer:
            for replaced in self.on_replaced:
                replaced()
            if batch.transferred is not None:
                batch.transferred(batch.forks)
        for listener in self.listeners:
            try:
                listener(batch.outcomes, local)
            except Exception:
                log.exception("store listener failed on %d commit(s)", len(batch.outcomes))

    def _write(self, conn: Any, batch: _Batch) -> None:
        bulk, final, existed, loss_ops = self.bulk, batch.final, batch.existed, batch.loss_ops
        encoded = JsonCache()
        if batch.transfer:
            batch.forks, unsealed = transfer.write_log(conn, bulk, batch.commits)
            if unsealed:  # (a state from a cluster older than the chain)
                mark_legacy(conn)
                self.chains.legacy = True
            batch.heads = self.chains.read_heads(conn, batch.heads)
        else:
            rows = [commit_row(c, encoded) for c in batch.commits]
            rows, batch.sealed, batch.heads = self.chains.seal(
                conn, batch.commits, rows, batch.local, batch.keys
            )
            bulk.insert(conn, t.commits, COMMIT_COLS, rows)
        inserts, updates = [], []
        leaves = batch.leaves = []
        for unit, v in final.items():
            value = encoded(v.value)
            if self._digests:
                leaves.append((unit, leaf(unit, v.hlc, v.origin, v.seq, v.with_reset, value)))
            if existed[unit]:
                updates.append((v.hlc, v.origin, v.seq, value, v.with_reset, *unit))
            else:
                inserts.append((*unit, v.hlc, v.origin, v.seq, value, v.with_reset))
        bulk.insert(conn, t.entries, ENTRY_COLS, inserts)
        bulk.update(conn, t.entries, ENTRY_COLS[3:], ENTRY_COLS[:3], updates)
        if loss_ops:
            keys = LOSS_COLS[:5]
            bulk.delete(conn, t.losses, keys, [(*u, c.origin, c.seq) for u, c in loss_ops])
            added = [loss_row(loss) for loss in loss_ops.values() if loss is not None]
            bulk.insert(conn, t.losses, LOSS_COLS, added)

    def export_state(self) -> Snapshot:
        """Everything replicated: commit log, winning versions, recorded losses."""
        self.flush()
        return transfer.snapshot_of(self.state, self.commit_log(newest_first=False))

    def replace_state(self, snapshot: Snapshot) -> None:
        """Replace everything replicated by ``snapshot``, in one transaction."""
        self.flush()
        try:
            with self._db("the new state was not taken"), self.engine.begin() as conn:
                for table in (t.entries, t.commits, t.losses):
                    conn.execute(delete(table))
                rows = [commit_row(c, JsonCache()) for c in snapshot.commits]
                self.bulk.insert(conn, t.commits, COMMIT_COLS, rows)
                rows = [entry_row(u, v) for u, v in snapshot.entries]
                self.bulk.insert(conn, t.entries, ENTRY_COLS, rows)
                rows = [loss_row(loss) for loss in snapshot.losses]
                self.bulk.insert(conn, t.losses, LOSS_COLS, rows)
                if any(c.seal is None for c in snapshot.commits):
                    mark_legacy(conn)  # (a state from a cluster older than the chain)
        finally:
            with contextlib.suppress(StoreError):  # down: memory stays as it was
                self._load()
            for replaced in self.on_replaced:
                replaced()
        self.inbox = Inbox()

    def transfer_keys(
        self, snapshot: Snapshot, ours: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The keys a state transfer's signatures are checked with: ``ours`` (None: the
        store's ``keys()``; from a thread, take them on the owner's first), and for an
        origin we hold no key of, the transfer's own membership rows (a joiner knows
        nobody yet: it trusts the member it joined through, as it does for the state)."""
        theirs = {}
        for unit, version in snapshot.entries:  # (not validated yet: anything may be there)
            row = version.value
            if (
                unit.feature != "machines"
                or unit.mode != layers.CLUSTER
                or not isinstance(row, dict)
            ):
                continue
            serial, key = row.get("serial"), row.get("machine_key")
            if isinstance(serial, str) and isinstance(key, str) and serial and key:
                theirs[serial] = key
        return {**theirs, **(self.keys() if ours is None else ours)}

    def check_transfer(self, snapshot: Snapshot, keys: Mapping[str, str]) -> None:
        """Every chain of a state transfer verified (``chain.walk``): BadCommit names the
        first broken link.  CPU only (no database, no memory of ours): from a thread."""
        encoded = JsonCache()
        rows = [chain.Row(*commit_row(c, encoded)) for c in snapshot.commits]
        rows.sort(key=lambda r: (r.origin, r.seq))
        for found in chain.walk(rows, keys, self.chains.sealer, self.chains.legacy):
            if found.broken is not None:
                b = found.broken
                raise BadCommit([f"state transfer: commit {found.origin}:{b['seq']} does not "
                                 f"verify: {b['what']}: {b['why']}"])  # fmt: skip

    def watch(self) -> transfer.Watch:
        """Begin taking a state transfer: memory copied, and the units batches change
        from now on noted, until ``take_transfer`` (``clusterd.store.transfer``)."""
        watch = transfer.Watch(self.state.copy(), self._generation)
        self._watches.append(watch)
        return watch

    def unwatch(self, watch: transfer.Watch) -> None:
        """A watched transfer is not taken after all."""
        with contextlib.suppress(ValueError):
            self._watches.remove(watch)

    def take_transfer(
        self,
        snapshot: Snapshot,
        prepared: transfer.Prepared | None = None,
        transferred: Callable[[list[CommitId]], None] | None = None,
    ) -> list[CommitId]:
        """Take a peer's whole state (a state transfer, its chains checked), merged with
        ours unit by unit; ``prepared``: its merge computed in a thread against a
        ``watch``ed copy (redone here for the units changed since).

        Memory changes at once.  Without a writer the transfer is durable on return and
        its forks (commits sealed here with another hash than the peer's: ours are kept)
        are returned; with one it is queued like any batch, and ``transferred`` gets the
        forks once it is durable (nothing, if its write fails: peers offer it again)."""
        if prepared is None:
            theirs = State.from_snapshot(snapshot)
            changes = transfer_changes(self.state, theirs)
        else:
            theirs, changes, watch = prepared.theirs, prepared.changes, prepared.watch
            self.unwatch(watch)
            if watch.generation != self._generation:  # memory was reloaded meanwhile
                changes = transfer_changes(self.state, theirs)
            elif watch.touched:
                again = [u for u in watch.touched if theirs.get(u) or theirs.losses_of(u)]
                for unit in again:
                    changes.pop(unit, None)
                changes.update(transfer_changes(self.state, theirs, again))
        clock_before = self.clock.last
        for c in snapshot.commits:
            self.clock.observe(c.hlc)
        with gc_paused():
            effect = apply_transfer(self.state, changes, theirs.vv)
        batch = _Batch(list(snapshot.commits), {}, effect.wins, effect.loss_ops, [], [effect.undo])
        batch.existed = {unit: unit not in effect.new_units for unit in effect.wins}
        batch.transfer, batch.transferred = True, transferred
        batch.heads = {origin: (seq, None) for origin, seq in self.state.vv.items()}
        self._touch(batch)
        if any(unit.feature == "machines" for unit in batch.final):
            self._keys = None
        if self.writer is not None:
            self._queue(batch, local=False)
            self.queue_remote([])  # what waited may be ready now
            return []
        self._write_now(batch, clock_before)
        self.apply_remote([])
        return batch.forks

    async def export_image(self) -> Snapshot:
        """Everything replicated (``export_state``) without holding the caller's loop:
        memory copied here, the log read by the writer after every batch queued before
        (so it holds everything the copy does), up to the copy's vector."""
        image = self.state.copy()
        return await self.after_queued(
            lambda: transfer.snapshot_of(image, self.commit_log(newest_first=False))
        )

    async def after_queued(self, job: Callable[[], T]) -> T:
        """What ``job`` returns (or raises), run by the writer after every batch queued
        before it, so that the database holds what memory held at the call; at once
        without a writer."""
        if self.writer is None:
            return job()
        read: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        found: list[Any] = []

        def run() -> None:
            try:
                found.append((True, job()))
            except BaseException as exc:  # (told to the caller)
                found.append((False, exc))

        def done() -> None:
            if read.done():
                return
            ok, value = found[0]
            if ok:
                read.set_result(value)
            else:
                read.set_exception(value)

        self.writer.submit(run, done)
        return await read

    # -- reading -----------------------------------------------------------------------

    @property
    def version_vector(self) -> dict[str, int]:
        return dict(self.state.vv)

    def durable_root(self) -> int | None:
        """The root of the entries' leaves when memory is all durable (no batch queued
        for the writer), so it describes the version vector; else None."""
        return None if self._queued or not self._digests else self.digests.root

    def disk_leaves(self) -> dict[Unit, int]:
        """The leaf of every entry as the database holds it now (one read transaction):
        the scrub's (``clusterd.node.scrub``).  Reads the whole table: from a thread."""
        found = {}
        with self._db("the entries were not read"), self.engine.connect() as conn:
            for feature, mode, key, hlc, origin, seq, value, reset in self.bulk.select(
                conn, t.entries, ENTRY_COLS
            ):
                unit = Unit(feature, mode, key)
                found[unit] = leaf(unit, hlc, origin, seq, bool(reset), value)
        return found

    def rewrite_entries(self, units: Iterable[Unit]) -> None:
        """Write memory's entries of ``units`` over the database's (changed on disk
        under this running store): by the writer, after every batch given before."""
        rows, keys = [], []
        for unit in units:
            keys.append(tuple(unit))
            version = self.state.get(unit)
            if version is not None:
                rows.append(entry_row(unit, version))

        def job() -> None:
            try:
                with self._db("the entries were not rewritten"), self.engine.begin() as conn:
                    self.bulk.delete(conn, t.entries, ENTRY_COLS[:3], keys)
                    self.bulk.insert(conn, t.entries, ENTRY_COLS, rows)
            except StoreError as exc:
                log.error("%s", exc)

        if self.writer is None:
            job()
        else:
            self.writer.submit(job, lambda: None)

    def check_entry(self, unit: Unit, keys: Mapping[str, str]) -> tuple[str, str]:
        """Whether the entry of ``unit`` on disk is what its winning commit in the log
        wrote, that commit's seal verified (``keys``: take them on the loop, ``keys()``):
        ("ok" | "differs" | "unverifiable" | "absent", why).  Reads the database: call
        it from a thread."""
        c = t.entries.c
        where = and_(c.feature == unit.feature, c.mode == unit.mode, c.key == unit.key)
        with self._db("the entry was not read"), self.engine.connect() as conn:
            row = conn.execute(select(*(c[n] for n in ENTRY_COLS)).where(where)).one_or_none()
            if row is None:
                return "absent", "no entry here"
            _, _, _, hlc, origin, seq, text, reset = row
            cid = CommitId(origin, seq)
            found = verdicts(conn, [cid], keys, self.chains.sealer, self.chains.legacy)
            record = conn.execute(select(t.commits.c.hlc, t.commits.c.writes).where(and_(
                t.commits.c.origin == origin, t.commits.c.seq == seq))).one_or_none()  # fmt: skip
        if record is None or record.writes is None or cid not in found:
            return "unverifiable", f"its commit {cid} is no longer in the log"
        verdict = found[cid]
        if not verdict.ok:
            return "unverifiable", f"its commit {cid} fails its {verdict.broken} check"
        if not verdict.sealed:
            return "unverifiable", f"its commit {cid} has no seal"
        writes = [w for w in json.loads(record.writes) if tuple(w[:3]) == tuple(unit)]
        if not writes:
            return "differs", f"its commit {cid} does not write it"
        _, _, _, value, with_reset = writes[-1]
        wrote = None if value is None else chain.canonical_json(value)
        if (wrote, bool(with_reset), record.hlc) != (text, bool(reset), hlc):
            return "differs", f"the entry is not what commit {cid} (verified) wrote"
        return "ok", f"the entry is what commit {cid} (verified) wrote"

    def inconsistencies(self) -> list[Loss]:
        """Every recorded loss plus every row hidden by a reset whose writer missed it."""
        return inconsistencies(self.state)

    def commit_log(self, limit: int | None = None, newest_first: bool = True) -> list[Commit]:
        order = t.commits.c.hlc.desc() if newest_first else t.commits.c.hlc.asc()
        query = select(t.commits).order_by(order, t.commits.c.origin)
        if limit is not None:
            query = query.limit(limit)
        with self._db("the log was not read"), self.engine.connect() as conn:
            return [commit_from_row(row) for row in conn.execute(query)]

    def log_back(
        self, before: Commit | None = None, chunk: int = 200
    ) -> Generator[Commit, None, None]:
        """The log newest first (by stamp), every commit older than ``before`` (None: all
        of it), read ``chunk`` rows at a time as it is consumed (``contextlib.closing``
        ends the read early).  Rollback's read: a shell worker's, never the links' loop."""
        self.flush()
        c = t.commits.c
        query = select(t.commits).order_by(c.hlc.desc(), c.origin.desc())
        if before is not None:
            hlc, origin = before.hlc, before.id.origin
            query = query.where(or_(c.hlc < hlc, and_(c.hlc == hlc, c.origin < origin)))
        with self._db("the log was not read"), self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=chunk).execute(query):
                yield commit_from_row(row)

    def recent_ids(self, limit: int) -> list[CommitId]:
        """The ids of the ``limit`` newest commits, without reading what they wrote."""
        c = t.commits.c
        query = select(c.origin, c.seq).order_by(c.hlc.desc(), c.origin.desc()).limit(limit)
        with self._db("the log was not read"), self.engine.connect() as conn:
            return [CommitId(origin, seq) for origin, seq in conn.execute(query)]

    def log_length(self) -> int:
        """How many commits the log holds (truncated ones too)."""
        with self._db("the log was not read"), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.commits)).scalar_one())

    def commits_missing_from(
        self, vv: VersionVector, limit: int | None = None
    ) -> list[Commit] | None:
        """Commits of the log that a holder of version vector ``vv`` has not applied,
        oldest first (the first ``limit`` of them).

        ``None`` when the log was truncated past one of them: only a state transfer
        can bring that holder up to date.
        """
        c = t.commits.c
        wanted = or_(
            c.origin.not_in(list(vv)),
            *[and_(c.origin == origin, c.seq > seq) for origin, seq in vv.items()],
        )
        query = select(t.commits).where(wanted).order_by(c.hlc, c.origin).limit(limit)
        with self._db("the log was not read"), self.engine.connect() as conn:
            found = [commit_from_row(row) for row in conn.execute(query)]
        return None if any(commit.truncated for commit in found) else found

    def truncate_log(self, keep: int) -> int:
        """Drop the writes of all but the newest ``keep`` commits; returns how many.
        The daemon has its writer do it (``truncate_queued``)."""
        self.flush()
        return self._truncate(keep)

    async def truncate_queued(self, keep: int) -> int:
        """``truncate_log`` by the writer, after every batch queued before."""
        return await self.after_queued(lambda: self._truncate(keep))

    def _truncate(self, keep: int) -> int:
        c = t.commits.c
        newest = select(c.origin, c.seq).order_by(c.hlc.desc(), c.origin.desc()).limit(keep)
        with self._db("nothing was truncated"), self.engine.begin() as conn:
            kept = {tuple(row) for row in conn.execute(newest)}
            old = [
                (origin, seq)
                for origin, seq in conn.execute(
                    select(c.origin, c.seq).where(c.writes.is_not(None))
                )
                if (origin, seq) not in kept
            ]
            self.bulk.update(
                conn, t.commits, ("writes",), ("origin", "seq"), [(None, *k) for k in old]
            )
        return len(old)

    def check_chains(self, keys: Mapping[str, str]) -> list[chain.OriginChain]:
        """Every origin's chain in the log, checked (``chain.walk``) with ``keys`` (take
        them on the loop: ``keys()``).  Reads the whole log: call it from a thread."""
        with self._db("the log was not read"), self.engine.connect() as conn:
            rows = read_rows(self.bulk, conn)
        return chain.walk(rows, keys, self.chains.sealer, self.chains.legacy)

    def hashes(self, origin: str, seqs: Iterable[int]) -> dict[int, str | None]:
        """The hashes of ``origin``'s commits ``seqs`` as the log holds them (a seq it
        does not hold is left out): a fork narrowed down.  A disk read: from a thread."""
        c = t.commits.c
        query = select(c.seq, c.hash).where(c.origin == origin, c.seq.in_(list(seqs)))
        with self._db("the log was not read"), self.engine.connect() as conn:
            return {int(seq): h for seq, h in conn.execute(query)}

    def verdicts(self, ids: Iterable[CommitId]) -> dict[CommitId, chain.Verdict]:
        """What the rows of a few commits say about their seals (commitdetail, the
        web history): the commits no longer in the log are left out."""
        keys = self.keys()
        with self._db("the log was not read"), self.engine.connect() as conn:
            return verdicts(conn, list(ids), keys, self.chains.sealer, self.chains.legacy)

    def get_commit(self, cid: CommitId) -> Commit:
        with self._db("the log was not read"), self.engine.connect() as conn:
            row = conn.execute(
                select(t.commits).where(
                    and_(t.commits.c.origin == cid.origin, t.commits.c.seq == cid.seq)
                )
            ).one_or_none()
        if row is None:
            raise ClusterdError(f"no commit {cid} in the log")
        return commit_from_row(row)
