"""The layered, versioned settings store of one machine (SQLAlchemy).

The database is the durable truth; ``self.state`` is its image in memory, loaded at
open and changed only by ``_apply_batch``, which merges commits into memory and
writes the result in **one transaction**.  If the transaction fails, memory is
reloaded from the database, so a failure leaves the store exactly as before.

Local commits and remote commits take the same path: a local commit is a commit whose
origin is this machine.  Remote commits are validated against the catalogue first and
wait in an inbox until what they depend on has been applied (causal order).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, create_engine, delete, event, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from clusterd import tables as t
from clusterd.clock import HybridClock
from clusterd.commitcheck import check_commit
from clusterd.errors import ClusterdError, CommitConflict, LifecycleError, StoreError
from clusterd.merge import Inbox, Outcome, apply, hidden_losses, merge
from clusterd.pending import Pending, View, make_commit
from clusterd.state import State
from clusterd.versions import (
    Commit,
    CommitId,
    Loss,
    Snapshot,
    Unit,
    Version,
    writes_from_json,
    writes_to_json,
)
from schema.catalogue import CATALOGUE
from schema.feature import Catalogue

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def engine_for(url_or_path: str | Path) -> Engine:
    """A SQLAlchemy engine; a plain path means a SQLite file (WAL)."""
    text = str(url_or_path)
    url = text if "://" in text else f"sqlite:///{text}"
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: list[CommitId]
    waiting: int  # commits held until what they depend on arrives


Listener = Callable[[list[Outcome]], None]


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
    ) -> None:
        self.origin = origin
        self.hostname = hostname
        self.catalogue = catalogue
        self.engine = engine_for(url_or_path)
        self.state = State()
        self.inbox = Inbox()
        self.listeners: list[Listener] = []
        try:
            t.metadata.create_all(self.engine)
            self._check_identity()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store: {exc}") from exc
        self.clock = HybridClock() if wall_ms is None else HybridClock(wall_ms)
        self._load()

    def __repr__(self) -> str:
        return f"<Store {self.hostname} origin={self.origin} vv={self.state.vv}>"

    def close(self) -> None:
        self.engine.dispose()

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

    def _load(self) -> None:
        """(Re)build the in-memory image from the database."""
        state = State()
        contexts: dict[tuple[str, int], dict[str, int]] = {}
        last_hlc = 0
        with self.engine.connect() as conn:
            for origin, seq, hlc, ctx in conn.execute(
                select(t.commits.c.origin, t.commits.c.seq, t.commits.c.hlc, t.commits.c.context)
            ):
                contexts[(origin, seq)] = json.loads(ctx)
                last_hlc = max(last_hlc, hlc)
                if state.vv.get(origin, 0) < seq:
                    state.vv[origin] = seq
            for row in conn.execute(select(t.entries)):
                value = None if row.value is None else json.loads(row.value)
                ctx = contexts.get((row.origin, row.seq), {})
                version = Version(row.hlc, row.origin, row.seq, value, row.with_reset, ctx)
                state.put(Unit(row.feature, row.mode, row.key), version)
            for row in conn.execute(select(t.losses)):
                value = None if row.loser_value is None else json.loads(row.loser_value)
                loser = Version(
                    row.loser_hlc,
                    row.loser_origin,
                    row.loser_seq,
                    value,
                    row.loser_with_reset,
                    contexts.get((row.loser_origin, row.loser_seq), {}),
                )
                unit = Unit(row.feature, row.mode, row.key)
                state.add_loss(Loss(unit, loser, CommitId(row.by_origin, row.by_seq)))
        self.state = state
        self.clock.observe(last_hlc)

    # -- writing -----------------------------------------------------------------------

    def view(self, pending: Pending | None = None) -> View:
        return View(self.state, pending)

    def commit(
        self, pending: Pending, *, user: str, comment: str, on_conflict: str | None = None
    ) -> Commit | None:
        """Make a session's pending changes visible at once, as one new commit.

        Pending changes whose unit was committed by somebody else since the session
        read it raise ``CommitConflict`` unless ``on_conflict`` says "keep" (overwrite,
        knowingly) or "discard" (drop those changes, commit the rest).
        """
        conflicts = pending.conflicts(self.state)
        if conflicts:
            if on_conflict == "discard":
                pending.drop([c.unit for c in conflicts])
            elif on_conflict != "keep":
                raise CommitConflict(conflicts)
        if not pending:
            return None
        commit = make_commit(
            self.state,
            pending,
            origin=self.origin,
            hlc=self.clock.now(),
            user=user,
            at=time.time(),
            comment=comment,
        )
        self._apply_batch([commit])
        pending.clear()
        return commit

    def apply_remote(self, commits: Iterable[Commit]) -> ApplyResult:
        """Merge commits from peers.  Any invalid commit: BadCommit, nothing applied."""
        checked = [check_commit(self.catalogue, c) for c in commits]
        self.inbox.add(checked)
        ready = self.inbox.drain(self.state)
        outcomes = self._apply_batch(ready) if ready else []
        return ApplyResult([o.commit.id for o in outcomes], len(self.inbox))

    def _apply_batch(self, commits: list[Commit]) -> list[Outcome]:
        existed: dict[Unit, bool] = {}
        final: dict[Unit, Version] = {}
        loss_ops: dict[tuple[Unit, CommitId], Loss | None] = {}
        outcomes: list[Outcome] = []
        try:
            for commit in commits:
                self.clock.observe(commit.hlc)
                out = merge(self.state, commit)
                for unit, version in out.wins:
                    existed.setdefault(unit, self.state.get(unit) is not None)
                    final[unit] = version
                for unit, loser in out.dropped:
                    loss_ops[(unit, loser)] = None
                for loss in out.added:
                    loss_ops[(loss.unit, loss.loser.commit)] = loss
                apply(self.state, out)
                outcomes.append(out)
            with self.engine.begin() as conn:
                self._write(conn, commits, existed, final, loss_ops)
        except BaseException as exc:
            self._load()
            if isinstance(exc, SQLAlchemyError):
                raise StoreError(f"the store could not write the commit: {exc}") from exc
            raise
        for listener in self.listeners:
            try:
                listener(outcomes)
            except Exception:
                log.exception("store listener failed on %d commit(s)", len(outcomes))
        return outcomes

    @staticmethod
    def _write(
        conn: Any,
        commits: list[Commit],
        existed: dict[Unit, bool],
        final: dict[Unit, Version],
        loss_ops: dict[tuple[Unit, CommitId], Loss | None],
    ) -> None:
        if commits:
            conn.execute(insert(t.commits), [_commit_row(c) for c in commits])
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for unit, v in final.items():
            row = {
                "b_feature": unit.feature,
                "b_mode": unit.mode,
                "b_key": unit.key,
                "hlc": v.hlc,
                "origin": v.origin,
                "seq": v.seq,
                "value": None if v.value is None else _dumps(v.value),
                "with_reset": v.with_reset,
            }
            (updates if existed[unit] else inserts).append(row)
        if inserts:
            conn.execute(
                insert(t.entries).values(
                    feature=bindparam("b_feature"),
                    mode=bindparam("b_mode"),
                    key=bindparam("b_key"),
                ),
                inserts,
            )
        if updates:
            conn.execute(
                update(t.entries).where(
                    and_(
                        t.entries.c.feature == bindparam("b_feature"),
                        t.entries.c.mode == bindparam("b_mode"),
                        t.entries.c.key == bindparam("b_key"),
                    )
                ),
                updates,
            )
        if loss_ops:
            conn.execute(
                delete(t.losses).where(
                    and_(
                        t.losses.c.feature == bindparam("b_feature"),
                        t.losses.c.mode == bindparam("b_mode"),
                        t.losses.c.key == bindparam("b_key"),
                        t.losses.c.loser_origin == bindparam("b_origin"),
                        t.losses.c.loser_seq == bindparam("b_seq"),
                    )
                ),
                [
                    {
                        "b_feature": u.feature,
                        "b_mode": u.mode,
                        "b_key": u.key,
                        "b_origin": c.origin,
                        "b_seq": c.seq,
                    }
                    for u, c in loss_ops
                ],
            )
            added = [_loss_row(loss) for loss in loss_ops.values() if loss is not None]
            if added:
                conn.execute(insert(t.losses), added)

    def export_state(self) -> Snapshot:
        """Everything replicated: commit log, winning versions, recorded losses."""
        return Snapshot(
            tuple(self.commit_log(newest_first=False)),
            tuple(self.state.units()),
            tuple(self.state.losses()),
        )

    def replace_state(self, snapshot: Snapshot) -> None:
        """Replace everything replicated by ``snapshot``, in one transaction."""
        try:
            with self.engine.begin() as conn:
                for table in (t.entries, t.commits, t.losses):
                    conn.execute(delete(table))
                if snapshot.commits:
                    conn.execute(insert(t.commits), [_commit_row(c) for c in snapshot.commits])
                if snapshot.entries:
                    conn.execute(insert(t.entries), [_entry_row(u, v) for u, v in snapshot.entries])
                if snapshot.losses:
                    conn.execute(insert(t.losses), [_loss_row(loss) for loss in snapshot.losses])
        except SQLAlchemyError as exc:
            raise StoreError(f"the store could not take the new state: {exc}") from exc
        finally:
            self._load()
        self.inbox = Inbox()

    # -- reading -----------------------------------------------------------------------

    @property
    def version_vector(self) -> dict[str, int]:
        return dict(self.state.vv)

    def inconsistencies(self) -> list[Loss]:
        """Every recorded loss plus every row hidden by a reset whose writer missed it."""
        found = self.state.losses()
        for feature, mode in self.state.feature_modes():
            found.extend(hidden_losses(self.state, feature, mode))
        return sorted(found, key=lambda loss: (loss.unit, loss.loser.hlc))

    def commit_log(self, limit: int | None = None, newest_first: bool = True) -> list[Commit]:
        order = t.commits.c.hlc.desc() if newest_first else t.commits.c.hlc.asc()
        query = select(t.commits).order_by(order, t.commits.c.origin)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_commit_from_row(row) for row in conn.execute(query)]

    def commits_missing_from(self, vv: dict[str, int]) -> list[Commit]:
        """Commits of the log that a holder of version vector ``vv`` has not applied."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.commits).order_by(t.commits.c.hlc)).all()
        return [
            _commit_from_row(row)
            for row in rows
            if row.seq > vv.get(row.origin, 0) and row.writes is not None
        ]

    def get_commit(self, cid: CommitId) -> Commit:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.commits).where(
                    and_(t.commits.c.origin == cid.origin, t.commits.c.seq == cid.seq)
                )
            ).one_or_none()
        if row is None:
            raise ClusterdError(f"no commit {cid} in the log")
        return _commit_from_row(row)


def _commit_row(c: Commit) -> dict[str, Any]:
    return {
        "origin": c.id.origin,
        "seq": c.id.seq,
        "hlc": c.hlc,
        "user": c.user,
        "at": c.at,
        "comment": c.comment,
        "context": _dumps(dict(c.context)),
        "writes": _dumps(writes_to_json(c.writes)),
    }


def _commit_from_row(row: Any) -> Commit:
    return Commit(
        id=CommitId(row.origin, row.seq),
        hlc=row.hlc,
        user=row.user,
        at=row.at,
        comment=row.comment,
        context=json.loads(row.context),
        writes=writes_from_json(json.loads(row.writes)) if row.writes is not None else (),
    )


def _entry_row(unit: Unit, v: Version) -> dict[str, Any]:
    return {
        "feature": unit.feature,
        "mode": unit.mode,
        "key": unit.key,
        "hlc": v.hlc,
        "origin": v.origin,
        "seq": v.seq,
        "value": None if v.value is None else _dumps(v.value),
        "with_reset": v.with_reset,
    }


def _loss_row(loss: Loss) -> dict[str, Any]:
    v = loss.loser
    return {
        "feature": loss.unit.feature,
        "mode": loss.unit.mode,
        "key": loss.unit.key,
        "loser_origin": v.origin,
        "loser_seq": v.seq,
        "loser_hlc": v.hlc,
        "loser_value": None if v.value is None else _dumps(v.value),
        "loser_with_reset": v.with_reset,
        "by_origin": loss.by.origin,
        "by_seq": loss.by.seq,
    }
