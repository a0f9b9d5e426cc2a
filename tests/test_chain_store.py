"""The chain in the store: commits made here sealed and signed, peers' commits refused
when their seal does not verify (at once, or by the writer thread), truncation keeping
the heads, state transfers checked, rows edited on disk named, and the migration of a
schema-1 file (``tests/data/schema1.sql``, dumped by the base code)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clusterd.core import chain, layers
from clusterd.core.digest import state_digest
from clusterd.core.edits import Start
from clusterd.core.errors import BadCommit, StoreError
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit, CommitId, Seal, Snapshot
from clusterd.node.seal import MachineSealer
from clusterd.store import migrate
from clusterd.store.records import JsonCache, commit_row
from clusterd.store.store import Store
from clusterd.store.writer import ThreadWriter
from clusterd.trust import lifecycle
from tests.storehelp import session
from tests.test_chain import key_file

NY, LA = "newyork.example.com", "losangeles.example.com"
NY_SEED, LA_SEED, FORGER_SEED = b"n" * 32, b"l" * 32, b"f" * 32
SCHEMA1 = Path(__file__).parent / "data" / "schema1.sql"


def public(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode()  # fmt: skip


def sealer(tmp: Path, seed: bytes) -> MachineSealer:
    where = tmp / seed[:1].decode()
    where.mkdir(exist_ok=True)
    return MachineSealer(key_file(where, seed))


def open_ny(tmp: Path) -> Store:
    return Store(tmp / "ny.db", origin="SER-NY", hostname=NY, sealer=sealer(tmp, NY_SEED))


def pair(tmp: Path) -> tuple[Store, Store]:
    """newyork made cluster americas; losangeles joined with its key, both in sync."""
    ny = open_ny(tmp)
    lifecycle.create_cluster(ny, "americas", machine={"machine_key": public(NY_SEED)})
    la = Store(tmp / "la.db", origin="SER-LA", hostname=LA, sealer=sealer(tmp, LA_SEED))
    lifecycle.join(la, ny.export_state(), machine={"machine_key": public(LA_SEED)})
    sync(la, ny)
    return ny, la


def sync(src: Store, dst: Store) -> None:
    dst.apply_remote(src.commits_missing_from(dst.version_vector) or [])


def change(store: Store, comment: str, row: str = "a@x.example") -> Commit:
    s = session(store, "alice")
    if layers.cluster_name(store.state) is None:  # standalone: at its own machine mode
        s.set_record("settz", Mode.machine(store.hostname), {"timezone": "Asia/Tokyo"})
        commit = s.commit(comment)
        assert commit is not None
        return commit
    if not store.state.is_defined("unsubscribe", "cluster"):
        s.define("unsubscribe", Mode.cluster(), Start.EMPTY)
    s.set_row("unsubscribe", Mode.cluster(), row, {"comment": comment})
    commit = s.commit(comment)
    assert commit is not None
    return commit


def picture(store: Store) -> tuple[object, ...]:
    """Everything a refused commit must leave as it was."""
    return (dict(store.state.vv), state_digest(store.state), len(store.commit_log()))


def sql(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, args)


# -- made here ------------------------------------------------------------------------------


def test_commits_made_here_are_chained_and_signed(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    change(ny, "one")
    made = change(ny, "two")
    assert made.seal is not None  # (without a writer: durable, and sealed, on return)
    log = sorted((c for c in ny.commit_log() if c.id.origin == "SER-NY"), key=lambda c: c.id)
    assert log[0].seal is not None and log[0].seal.prev is None
    for before, after in itertools.pairwise(log):
        assert after.seal is not None and before.seal is not None
        assert after.seal.prev == before.seal.hash
    assert log[-1].seal == made.seal
    digest = bytes.fromhex(made.seal.hash)
    assert MachineSealer().verify(public(NY_SEED), digest, str(made.seal.sig)) is True
    checked = {c.origin: c for c in ny.check_chains(ny.keys())}
    assert set(checked) == {"SER-NY", "SER-LA"}
    assert all(c.broken is None and c.unverifiable == 0 for c in checked.values())
    assert checked["SER-NY"].head == made.id.seq and checked["SER-NY"].hash == made.seal.hash


def test_a_store_without_a_sealer_chains_without_signing(tmp_path: Path) -> None:
    store = Store(tmp_path / "plain.db", origin="SER-X", hostname=NY)
    made = change(store, "one")
    assert made.seal is not None and made.seal.sig is None and made.seal.hash
    [found] = store.check_chains({"SER-X": public(NY_SEED)})
    assert found.broken is None and found.unverifiable == 1


# -- from peers -----------------------------------------------------------------------------


def forgeries(good: Commit, tmp: Path) -> dict[str, Commit]:
    """``good`` (sealed by losangeles) spoilt every way a link can break."""
    assert good.seal is not None
    seal = good.seal
    forger = sealer(tmp, FORGER_SEED)
    other = "ab" * 32
    resigned = forger.sign(bytes.fromhex(other))
    fork = chain.Row(*commit_row(good, JsonCache()))  # another prev, hashed and signed
    forked = chain.commit_hash(*fork[:6], good.context, "cd" * 32, str(fork.writes))
    signed = sealer(tmp, LA_SEED).sign(bytes.fromhex(forked))
    return {
        "hash": replace(good, seal=replace(seal, hash=other, sig=resigned)),
        "content": replace(good, comment="not what was sealed"),
        "prev": replace(good, seal=Seal("cd" * 32, forked, signed)),
        "prev, not rehashed": replace(good, seal=replace(seal, prev="cd" * 32)),
        "signature": replace(good, seal=replace(seal, sig=forger.sign(bytes.fromhex(seal.hash)))),
        "unsigned": replace(good, seal=replace(seal, sig=None)),
        "unsealed": replace(good, seal=None),
    }  # fmt: skip


WHAT = {"hash": "hash", "content": "hash", "prev": "prev", "prev, not rehashed": "hash",
        "signature": "signature", "unsigned": "signature", "unsealed": "hash"}  # fmt: skip


@pytest.mark.parametrize("spoilt", sorted(WHAT))
def test_a_peers_commit_that_does_not_verify_changes_nothing(tmp_path: Path, spoilt: str) -> None:
    ny, la = pair(tmp_path)
    good = change(la, "from losangeles")
    before = picture(ny)
    with pytest.raises(BadCommit, match=f"commit {good.id} does not verify: {WHAT[spoilt]}: "):
        ny.apply_remote([forgeries(good, tmp_path)[spoilt]])
    assert picture(ny) == before
    assert ny.apply_remote([good]).applied == [good.id]  # the real one still applies
    assert ny.get_commit(good.id).seal == good.seal


def test_a_key_changed_in_membership_checks_what_follows(tmp_path: Path) -> None:
    """losangeles is admitted with its key in its own join commit: newyork checks that
    commit, and every later one, with it (the keys follow the batch's machines rows)."""
    ny, la = pair(tmp_path)
    assert ny.keys()["SER-LA"] == public(LA_SEED)
    good = change(la, "signed by losangeles")
    assert good.seal is not None
    ny.apply_remote([good])
    [la_chain] = [c for c in ny.check_chains(ny.keys()) if c.origin == "SER-LA"]
    assert la_chain.broken is None and la_chain.unverifiable == 0


async def test_the_writer_thread_refuses_a_batch_and_names_the_peer(tmp_path: Path) -> None:
    ny, la = pair(tmp_path)
    loop = asyncio.get_running_loop()
    writer = ThreadWriter(lambda done: loop.call_soon_threadsafe(done))
    ny.writer = writer
    refused: list[tuple[str | None, str]] = []
    ny.on_refused.append(lambda peer, why: refused.append((peer, why)))
    told: list[object] = []
    ny.listeners.append(lambda outcomes, local: told.append(outcomes))
    try:
        good = change(la, "from losangeles")
        before = picture(ny)
        bad = forgeries(good, tmp_path)["signature"]
        assert ny.queue_remote([bad], "SER-LA").applied == [good.id]  # merged in memory...
        mine = change(ny, "queued after it")  # (a commit made here, queued behind it)
        with pytest.raises(StoreError, match="a member's commit queued before it was refused"):
            await ny.durable(mine)
        assert picture(ny) == before and told == []  # ...taken back out, never told
        assert refused == [("SER-LA", f"commit {good.id} does not verify: signature: not "
                            "signed by its origin's machine key")]  # fmt: skip
        assert ny.queue_remote([good], "SER-LA").applied == [good.id]
        again = change(ny, "made again")
        sealed = await ny.durable(again)
        assert sealed is not None and sealed.seal is not None
        assert ny.get_commit(good.id).seal == good.seal and len(told) == 2
    finally:
        ny.flush()
        writer.close()
    [ny_chain] = [c for c in ny.check_chains(ny.keys()) if c.origin == "SER-NY"]
    assert ny_chain.broken is None and ny_chain.hash == sealed.seal.hash


def test_unsealed_commits_are_taken_only_where_legacy_ones_are(tmp_path: Path) -> None:
    """In a cluster born sealed, an unsealed commit is refused (else anyone could pass
    one off as an origin's first); a store migrated from schema 1 takes one at seq 1
    or after unsealed ones, never after a sealed one."""
    ny, la = pair(tmp_path)
    first = change(la, "one")
    forged = replace(first, seal=None, comment="not from losangeles")
    with pytest.raises(BadCommit, match="no seal, and this member holds no commit older"):
        ny.apply_remote([forged])
    assert ny.state.vv["SER-LA"] == first.id.seq - 1
    ny.apply_remote([first])

    schema1_file(tmp_path / "old")
    old = Store(tmp_path / "old" / "ny.db", origin="SER-NY", hostname=NY)
    plain = Store(tmp_path / "plain.db", origin="SER-P", hostname="plain.example.com")
    one, two = change(plain, "one"), change(plain, "two")
    assert old.apply_remote([replace(one, seal=None)]).applied == [one.id]  # legacy
    assert old.get_commit(one.id).seal is None
    row = chain.Row(*commit_row(two, JsonCache()))  # as its origin, migrated too, sealed it
    first_sealed = chain.commit_hash(*row[:6], two.context, None, str(row.writes))
    assert old.apply_remote([replace(two, seal=Seal(None, first_sealed))]).applied == [two.id]
    three = change(plain, "three")
    with pytest.raises(BadCommit, match="no seal, after a sealed commit"):
        old.apply_remote([replace(three, seal=None)])  # no unsealed one follows a sealed one


# -- truncation, state transfers ------------------------------------------------------------


def test_truncation_keeps_the_heads(tmp_path: Path) -> None:
    ny, la = pair(tmp_path)
    for i in range(4):
        change(ny, f"change {i}", row=f"r{i}@x.example")
    head = ny.commit_log(limit=1)[0]
    assert ny.truncate_log(keep=1) > 0
    ny.close()
    ny = open_ny(tmp_path)  # (the heads are read again from the headers)
    after = change(ny, "after the truncation")
    assert after.seal is not None and head.seal is not None
    assert after.seal.prev == head.seal.hash
    checked = {c.origin: c for c in ny.check_chains(ny.keys())}
    assert checked["SER-NY"].broken is None and checked["SER-NY"].truncated >= 4
    assert ny.commits_missing_from(la.version_vector) is None  # a state transfer, then
    snapshot = ny.export_state()
    la.check_transfer(snapshot, la.transfer_keys(snapshot))
    assert la.take_transfer(snapshot) == []
    assert la.get_commit(after.id).seal == after.seal


def test_a_state_transfer_is_checked_and_a_fork_named(tmp_path: Path) -> None:
    ny, la = pair(tmp_path)
    made = change(ny, "sealed on newyork")
    snapshot = ny.export_state()
    bad = tuple(replace(c, comment="edited") if c.id == made.id else c for c in snapshot.commits)
    tampered = Snapshot(bad, snapshot.entries, snapshot.losses)
    with pytest.raises(BadCommit, match=f"state transfer: commit {made.id} does not verify: hash"):
        la.check_transfer(tampered, la.transfer_keys(tampered))
    sync(ny, la)
    assert made.seal is not None
    twin = replace(made, seal=Seal(made.seal.prev, "ef" * 32, made.seal.sig))
    forked = Snapshot(tuple(twin if c.id == made.id else c for c in snapshot.commits),
                      snapshot.entries, snapshot.losses)  # fmt: skip
    assert la.take_transfer(forked) == [made.id]
    assert la.get_commit(made.id).seal == made.seal  # ours is kept


# -- rows edited on disk --------------------------------------------------------------------


def test_rows_edited_on_disk_are_named(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    one, two, three = (change(ny, f"change {i}", row=f"r{i}@x.example") for i in range(3))
    ny.close()
    path = tmp_path / "ny.db"
    sql(path, "UPDATE commits SET comment = 'rewritten' WHERE origin = ? AND seq = ?",
        "SER-NY", one.id.seq)  # fmt: skip
    sql(path, "UPDATE commits SET writes = replace(writes, 'change 2', 'changed!') "
        "WHERE origin = ? AND seq = ?", "SER-NY", three.id.seq)  # fmt: skip
    ny = open_ny(tmp_path)
    [broken] = [c for c in ny.check_chains(ny.keys()) if c.origin == "SER-NY"]
    assert broken.broken is not None and (broken.broken["seq"], broken.broken["what"]) == (
        one.id.seq, "hash")  # fmt: skip
    words = {cid: v.words() for cid, v in ny.verdicts([one.id, two.id, three.id]).items()}
    assert words[one.id].startswith("ALTERED on this member")
    assert words[two.id] == "verified"
    assert words[three.id].startswith("ALTERED on this member")
    # Rewritten with a new hash, the row fails its signature instead:
    row = chain.Row(*sqlite3.connect(path).execute(
        "SELECT origin, seq, hlc, user, at, comment, context, writes, prev, hash, sig "
        "FROM commits WHERE origin = 'SER-NY' AND seq = ?", (one.id.seq,)).fetchone())  # fmt: skip
    rehashed = chain.commit_hash(*row[:6], one.context, row.prev, str(row.writes))
    sql(path, "UPDATE commits SET hash = ? WHERE origin = 'SER-NY' AND seq = ?", rehashed,
        one.id.seq)  # fmt: skip
    [broken] = [c for c in ny.check_chains(ny.keys()) if c.origin == "SER-NY"]
    assert broken.broken is not None and (broken.broken["seq"], broken.broken["what"]) == (
        one.id.seq, "signature")  # fmt: skip


# -- schema 1 -> 2 --------------------------------------------------------------------------


def schema1_file(tmp: Path) -> Path:
    tmp.mkdir(exist_ok=True)
    path = tmp / "ny.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA1.read_text(encoding="utf-8"))
    conn.close()
    return path


def schema_of(path: Path) -> tuple[str, list[str]]:
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(commits)")]
    return schema, columns


def test_a_schema_1_file_is_migrated_and_its_commits_stay_legacy(tmp_path: Path) -> None:
    path = schema1_file(tmp_path)
    assert schema_of(path) == ("1", ["origin", "seq", "hlc", "user", "at", "comment",
                                     "context", "writes"])  # fmt: skip
    ny = open_ny(tmp_path)
    assert schema_of(path) == ("2", ["origin", "seq", "hlc", "user", "at", "comment", "context",
                                     "writes", "prev", "hash", "sig"])  # fmt: skip
    with sqlite3.connect(path) as conn:  # (it holds commits older than the chain)
        assert conn.execute("SELECT value FROM meta WHERE key = 'legacy'").fetchone() == ("1",)
    log = ny.commit_log(newest_first=False)
    assert [(str(c.id), c.comment, c.seal) for c in log] == [
        ("SER-NY:1", "create cluster americas", None),
        ("SER-NY:2", "members", None),
        ("SER-NY:3", "a legacy commit", None),
    ]
    assert ny.state.row("unsubscribe", "cluster", "a@x.example") == {"comment": "été"}
    first = change(ny, "the first sealed commit")
    assert first.id.seq == 4 and first.seal is not None and first.seal.prev is None
    ny.close()
    ny = open_ny(tmp_path)  # (a schema-2 file opens as it is)
    second = change(ny, "the second")
    assert second.seal is not None and second.seal.prev == first.seal.hash
    [found] = ny.check_chains(ny.keys())
    assert (found.broken, found.legacy, found.commits) == (None, 3, 5)


def test_the_migration_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = schema1_file(tmp_path)
    monkeypatch.setattr(migrate, "SEAL_COLUMNS", (("prev", 64), ("hash", 64), ("prev", 64)))
    with pytest.raises(StoreError, match="cannot open the store: duplicate column"):
        open_ny(tmp_path)
    assert schema_of(path) == ("1", ["origin", "seq", "hlc", "user", "at", "comment",
                                     "context", "writes"])  # fmt: skip
    monkeypatch.undo()
    assert open_ny(tmp_path).commit_log(limit=1)[0].id == CommitId("SER-NY", 3)


def test_another_schema_is_refused_as_before(tmp_path: Path) -> None:
    path = schema1_file(tmp_path)
    sql(path, "UPDATE meta SET value = '3' WHERE key = 'schema'")
    with pytest.raises(Exception, match="store schema 3 is not 2"):
        open_ny(tmp_path)
