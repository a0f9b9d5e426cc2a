"""State transfers taken and given off the owner's loop (``clusterd.store.transfer``):
the merge computed in a thread against a copy of memory, batches merged meanwhile
kept, the database written by the writer thread and following memory."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from clusterd.core.digest import state_digest
from clusterd.core.errors import StoreError
from clusterd.core.versions import CommitId
from clusterd.store import transfer
from clusterd.store.store import Store
from clusterd.store.writer import ThreadWriter
from tests.test_chain_store import LA, LA_SEED, change, pair, sealer, sql


def open_la(tmp: Path, name: str = "la.db") -> Store:
    return Store(tmp / name, origin="SER-LA", hostname=LA, sealer=sealer(tmp, LA_SEED))


def picture(store: Store) -> tuple[object, ...]:
    """Memory: the winners, every loss, the vector."""
    losses = sorted((str(x.unit), str(x.loser.commit), str(x.by)) for x in store.inconsistencies())
    return state_digest(store.state), losses, dict(store.state.vv)


def behind(tmp: Path) -> tuple[Store, Store]:
    """newyork made commits that losangeles lacks, and truncated its log: only a state
    transfer brings losangeles up to date.  Both wrote the same row meanwhile."""
    ny, la = pair(tmp)
    for i in range(5):
        change(ny, f"ny {i}", row=f"r{i}@x.example")
    change(ny, "ny on the shared row", row="shared@x.example")
    change(la, "la on the shared row", row="shared@x.example")
    assert ny.truncate_log(keep=0) > 0
    assert ny.commits_missing_from(la.version_vector) is None
    return ny, la


async def test_a_batch_merged_while_the_transfer_is_prepared_is_kept(tmp_path: Path) -> None:
    """The merge is computed against a copy; a commit made here meanwhile, on a row the
    transfer also changes, ends as if it had come before the transfer (the same state
    and losses as a store that took them in that order, without a writer), and the
    database follows memory."""
    ny, la = behind(tmp_path)
    snapshot = ny.export_state()
    la.close()
    shutil.copy(tmp_path / "la.db", tmp_path / "ref.db")
    la = open_la(tmp_path)
    loop = asyncio.get_running_loop()
    writer = ThreadWriter(lambda done: loop.call_soon_threadsafe(done))
    la.writer = writer
    told: list[list[CommitId]] = []
    try:
        watch = la.watch()
        prepared = await asyncio.to_thread(transfer.prepare, snapshot, watch)
        made = change(la, "la again, while the transfer was prepared", row="r2@x.example")
        meanwhile = await la.durable(made)
        assert meanwhile is not None
        assert la.take_transfer(snapshot, prepared, told.append) == []
        assert la.state.vv["SER-NY"] == ny.state.vv["SER-NY"]  # memory at once...
        while not told:
            await asyncio.sleep(0.01)  # ...the database once the writer wrote it
        assert told == [[]]
    finally:
        la.flush()
        writer.close()
    ref = open_la(tmp_path, "ref.db")
    ref.apply_remote([meanwhile])
    assert ref.take_transfer(snapshot) == []
    assert picture(la) == picture(ref)
    assert "r2@x.example" in la.state.entries("unsubscribe", "cluster").rows
    mine = la.state.entries("unsubscribe", "cluster").rows["r2@x.example"]
    assert mine.origin == "SER-LA"  # the later write, made here, wins
    la.close()
    assert picture(open_la(tmp_path)) == picture(ref)  # the database follows memory


async def test_a_transfer_whose_write_fails_leaves_memory_as_it_was(tmp_path: Path) -> None:
    """Its write fails (the log's table is gone from under the store): the transfer, and
    a commit queued behind it, are taken back out of memory; nothing is told."""
    ny, la = behind(tmp_path)
    snapshot = ny.export_state()
    loop = asyncio.get_running_loop()
    writer = ThreadWriter(lambda done: loop.call_soon_threadsafe(done))
    la.writer = writer
    before = picture(la)
    told: list[list[CommitId]] = []
    try:
        prepared = await asyncio.to_thread(transfer.prepare, snapshot, la.watch())
        sql(tmp_path / "la.db", "ALTER TABLE commits RENAME TO away")
        la.take_transfer(snapshot, prepared, told.append)
        assert picture(la) != before  # in memory at once
        mine = change(la, "queued behind the transfer")
        with pytest.raises(StoreError, match="nothing was committed"):
            await la.durable(mine)
        assert picture(la) == before and told == []  # taken back out, never told
    finally:
        la.flush()
        writer.close()
    la.writer = None
    sql(tmp_path / "la.db", "ALTER TABLE away RENAME TO commits")
    prepared = transfer.prepare(snapshot, la.watch())  # offered again: taken
    assert la.take_transfer(snapshot, prepared) == []
    assert la.state.vv["SER-NY"] == ny.state.vv["SER-NY"]


async def test_a_transfer_is_given_up_to_the_copy_of_memory(tmp_path: Path) -> None:
    """``export_image``: memory copied at the call, the log read by the writer after
    what was queued before; a commit made after the call is not in it."""
    ny, _ = behind(tmp_path)
    loop = asyncio.get_running_loop()
    writer = ThreadWriter(lambda done: loop.call_soon_threadsafe(done))
    ny.writer = writer
    try:
        queued = change(ny, "queued before the export")
        exporting = asyncio.ensure_future(ny.export_image())
        await asyncio.sleep(0)  # the export has copied memory
        later = change(ny, "made after the export began")
        snapshot = await exporting
        await ny.durable(later)
    finally:
        ny.flush()
        writer.close()
    ids = {c.id for c in snapshot.commits}
    assert queued.id in ids and later.id not in ids
    assert snapshot.version_vector()["SER-NY"] == queued.id.seq
    assert ny.export_state().version_vector()["SER-NY"] == later.id.seq
