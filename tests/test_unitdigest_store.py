"""The store's leaves and sums (``core.unitdigest``): kept as batches are written,
rebuilt from the database's text at load (a byte changed on disk shows), and an entry
checked against its verified commit (``Store.check_entry``)."""

from __future__ import annotations

from pathlib import Path

from clusterd.core.chain import canonical_json
from clusterd.core.unitdigest import UnitDigests, leaf, parse_answer
from clusterd.core.versions import Unit
from clusterd.store.store import Store
from tests.test_chain_store import LA, LA_SEED, change, pair, sealer, sql, sync
from tests.test_unitdigest import narrow


def reopened_la(tmp: Path) -> Store:
    return Store(tmp / "la.db", origin="SER-LA", hostname=LA, sealer=sealer(tmp, LA_SEED))


def from_scratch(store: Store) -> UnitDigests:
    d = UnitDigests()
    for unit, v in store.state.units():
        text = None if v.value is None else canonical_json(v.value)
        d.put(unit, leaf(unit, v.hlc, v.origin, v.seq, v.with_reset, text))
    return d


def test_members_with_the_same_commits_have_the_same_root(tmp_path: Path) -> None:
    ny, la = pair(tmp_path)
    for i in range(5):
        change(ny, f"ny {i}", row=f"n{i}@x.example")
        change(la, f"la {i}", row=f"l{i}@x.example")
    change(ny, "both", row="same@x.example")
    change(la, "both", row="same@x.example")
    sync(ny, la)
    sync(la, ny)
    assert ny.version_vector == la.version_vector
    assert ny.durable_root() == la.durable_root() == from_scratch(ny).root
    assert ny.digests.leaves == from_scratch(ny).leaves  # kept by the writes = recomputed
    again = reopened_la(tmp_path)  # and rebuilt from the database's text at load
    assert again.digests.leaves == la.digests.leaves and again.durable_root() == la.durable_root()


def test_a_byte_changed_on_disk_is_named_and_found_corrupt_on_that_side_only(
    tmp_path: Path,
) -> None:
    ny, la = pair(tmp_path)
    change(ny, "Paris", row="p@x.example")
    change(ny, "Tokyo", row="t@x.example")
    sync(ny, la)
    unit = Unit("unsubscribe", "cluster", "t@x.example")
    la.close()
    sql(tmp_path / "la.db", "UPDATE entries SET value = replace(value, 'Tokyo', 'Tokyu') "
        "WHERE feature = ? AND mode = ? AND key = ?", *unit)  # fmt: skip
    la = reopened_la(tmp_path)
    assert la.version_vector == ny.version_vector
    assert la.durable_root() != ny.durable_root()
    named, asked = narrow(la.digests, ny.digests)
    assert (named, asked) == ([unit], 4)
    assert la.check_entry(unit, la.keys())[0] == "differs"
    assert ny.check_entry(unit, ny.keys())[0] == "ok"
    for other, _ in la.state.units():
        if other != unit:
            assert la.check_entry(other, la.keys())[0] == "ok", other
    assert ny.check_entry(Unit("unsubscribe", "cluster", "none@x"), ny.keys())[0] == "absent"


def test_an_entry_whose_commit_left_the_log_cannot_be_checked(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    change(ny, "old", row="o@x.example")
    for i in range(3):
        change(ny, f"later {i}", row=f"x{i}@x.example")
    ny.truncate_log(1)
    verdict, why = ny.check_entry(Unit("unsubscribe", "cluster", "o@x.example"), ny.keys())
    assert verdict == "unverifiable" and "no longer in the log" in why


def test_the_tree_answers_from_memory_parse_as_a_peer_would_read_them(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    _, children = parse_answer(ny.digests.tree({}))
    assert set(children) == {u.feature for u, _ in ny.state.units()}
    assert sum(children.values()) % (1 << 64) == ny.digests.root


def test_the_disk_read_again_shows_a_change_and_memory_rewrites_it(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    change(ny, "Tokyo", row="t@x.example")
    assert ny.disk_leaves() == ny.digests.leaves
    unit = Unit("unsubscribe", "cluster", "t@x.example")
    sql(tmp_path / "ny.db", "UPDATE entries SET value = replace(value, 'Tokyo', 'Tokyu') "
        "WHERE feature = ? AND mode = ? AND key = ?", *unit)  # fmt: skip
    sql(tmp_path / "ny.db", "INSERT INTO entries (feature, mode, key, hlc, origin, seq, "
        "value, with_reset) VALUES ('unsubscribe', 'cluster', 'ghost', 1, 'SER-NY', 1, '{}', "
        "0)")  # fmt: skip
    disk = ny.disk_leaves()
    ghost = Unit("unsubscribe", "cluster", "ghost")
    changed = {u for u in disk.keys() | ny.digests.leaves.keys()
               if disk.get(u) != ny.digests.leaves.get(u)}  # fmt: skip
    assert changed == {unit, ghost}
    ny.rewrite_entries(sorted(changed))  # (no writer: at once)
    assert ny.disk_leaves() == ny.digests.leaves
