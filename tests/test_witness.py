"""Witnessing chain heads (``clusterd.mesh.witness``, ``clusterd.node.witnessing``): the
digest, the sending rule, "history went back" and fork detection, the store's durable
heads, and a fork narrowed down between two real stores, garbage answers included."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterd.mesh import witness
from clusterd.mesh.peers import Answered
from clusterd.node import witnessing
from clusterd.store.store import Store
from clusterd.store.writer import ThreadWriter
from tests.test_chain_store import LA, LA_SEED, NY, NY_SEED, change, pair, sealer, sql, sync

H = [f"{i:064x}" for i in range(40)]
origins = st.text("ABCDEFGHIJ-0123456789", min_size=1, max_size=8)
heads_st = st.dictionaries(
    origins, st.tuples(st.integers(1, 10**6), st.one_of(st.none(), st.sampled_from(H))), max_size=8
)


# -- the digest and the sending rule -------------------------------------------------------


def test_digest_is_11_characters_of_base64url_over_the_sorted_heads() -> None:
    import base64
    import hashlib

    heads = {"S2": (3, H[1]), "S1": (7, None)}
    want = hashlib.sha256(f"S1\0{7}\0\nS2\0{3}\0{H[1]}\n".encode()).digest()[:8]
    assert witness.digest(heads) == base64.urlsafe_b64encode(want).rstrip(b"=").decode()
    assert len(witness.digest(heads)) == 11
    assert witness.digest({}) == witness.digest({})


@given(heads_st, st.data())
def test_digest_changes_with_any_seq_or_hash(heads: dict[str, Any], data: Any) -> None:
    d = witness.digest(heads)
    assert len(d) == 11 and "=" not in d
    assert witness.digest(dict(reversed(list(heads.items())))) == d  # order does not matter
    if heads:
        origin = data.draw(st.sampled_from(sorted(heads)))
        seq, h = heads[origin]
        assert witness.digest({**heads, origin: (seq + 1, h)}) != d
        other = data.draw(st.sampled_from([x for x in H if x != h]))
        assert witness.digest({**heads, origin: (seq, other)}) != d


def test_a_summary_only_of_the_advertised_vector() -> None:
    heads = {"A": (3, H[0]), "B": (1, H[1])}
    assert witness.summary(heads, {"A": 3, "B": 1}) == witness.Summary(
        witness.digest(heads), {"A": 3, "B": 1}
    )
    assert witness.summary(heads, {"A": 4, "B": 1}) is None  # a batch not written yet
    assert witness.summary(heads, {"A": 3, "B": 1, "C": 1}) is None
    assert witness.summary(heads, {"A": 3}) is None


@given(
    st.one_of(st.none(), st.sampled_from(["aaaaaaaaaaa", "bbbbbbbbbbb"])),
    st.sampled_from(["aaaaaaaaaaa", "bbbbbbbbbbb"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_the_sending_rule(
    sent: str | None, hd: str, durable: bool, vv_unchanged: bool, full: bool
) -> None:
    vv = {"A": 3}
    ours = witness.Summary(hd, vv if durable else {"A": 2})
    vv_ = None if vv_unchanged else dict(vv)
    got, vv_out, sent_now = witness.attach(sent, ours, vv, vv_, full=full)
    if not durable:  # the durable vector is not the advertised one: nothing
        assert (got, vv_out, sent_now) == (None, vv_, sent)
    elif hd != sent or full:  # changed, or a full round: sent (of the link's vector)
        assert (got, vv_out, sent_now) == (hd, vv_, hd)
    else:
        assert (got, vv_out, sent_now) == (None, vv_, sent)
    assert witness.attach(sent, None, vv, vv_, full=full) == (None, vv_, sent)


# -- what a receiver finds -------------------------------------------------------------------


def test_history_went_back_once_per_occurrence() -> None:
    w = witness.Witnesses()
    assert w.heard("P", {"O": 17, "P": 2}, "h1xxxxxxxxx", None).went_back == []
    heard = w.heard("P", {"O": 14, "P": 2}, "h2xxxxxxxxx", None)
    assert heard.went_back == [("O", 17, 14)]
    assert w.heard("P", {"O": 14, "P": 2}, "h2xxxxxxxxx", None).went_back == []  # said once
    assert w.heard("P", {"O": 15, "P": 2}, "h3xxxxxxxxx", None).went_back == []
    assert w.heard("P", {"P": 2}, "h4xxxxxxxxx", None).went_back == [("O", 15, 0)]  # gone
    assert w.heard("Q", {"O": 1}, "h5xxxxxxxxx", None).went_back == []  # per peer


@given(st.lists(st.dictionaries(st.sampled_from("OPQ"), st.integers(0, 30)), min_size=1))
def test_went_back_is_reported_exactly_when_an_origin_drops(vectors: list[dict[str, int]]) -> None:
    w = witness.Witnesses()
    before: dict[str, int] = {}
    for vv in vectors:
        got = w.heard("P", vv, "hxxxxxxxxxx", None).went_back
        want = [(o, s, vv.get(o, 0)) for o, s in sorted(before.items()) if vv.get(o, 0) < s]
        assert got == want
        before = vv


def test_a_frame_held_back_is_left_out() -> None:
    w = witness.Witnesses()
    w.heard("P", {"O": 5}, "h1xxxxxxxxx", None, order=3)
    assert w.heard("P", {"O": 4}, "h2xxxxxxxxx", None, order=2).went_back == []  # older
    assert w.heard("P", {"O": 4}, "h2xxxxxxxxx", None, order=3).went_back == []  # a duplicate
    assert w.last["P"] == {"O": 5}
    assert w.heard("P", {"O": 4}, "h2xxxxxxxxx", None).went_back == [("O", 5, 4)]  # a hello
    assert w.heard("P", {"O": 4}, "h2xxxxxxxxx", None, order=1).went_back == []  # numbered anew


def test_fork_only_at_equal_vectors_and_findings_clear_when_heads_agree() -> None:
    w = witness.Witnesses()
    ours = witness.Summary("ooooooooooo", {"O": 5})
    assert not w.heard("P", {"O": 4}, "ttttttttttt", ours).diverged  # lag, not a fork
    heard = w.heard("P", {"O": 5}, "ttttttttttt", ours)
    assert heard.diverged and not heard.agreed
    fork = witness.Finding("fork", "P", "O", 5, None, 1.0, "text")
    assert w.found(fork) is True
    assert w.found(fork) is False  # the same finding: no second alert
    assert w.found(witness.Finding("fork", "P", "O", 4, None, 2.0, "text")) is True
    assert w.findings
    heard = w.heard("P", {"O": 5}, "ooooooooooo", ours)
    assert heard.agreed and not heard.diverged and not w.findings


# -- narrowing: the pure steps ----------------------------------------------------------------


@given(st.integers(0, 10**7), st.integers(1, 10**7))
def test_checkpoints_lie_strictly_inside(lo: int, width: int) -> None:
    hi = lo + width
    seqs = witness.checkpoints(lo, hi)
    assert seqs == sorted(set(seqs))
    assert all(lo < s < hi for s in seqs)
    assert len(seqs) == min(witness.CHECKPOINTS, width - 1)


@given(st.integers(1, 2_000_000), st.data())
def test_narrowing_finds_the_first_difference_in_few_answers(head: int, data: Any) -> None:
    first = data.draw(st.integers(1, head))
    theirs = lambda s: "same" if s < first else f"theirs{s}"  # noqa: E731
    ours = lambda s: "same" if s < first else f"ours{s}"  # noqa: E731
    lo, hi, answers = 0, head, 0
    while seqs := witness.checkpoints(lo, hi):
        answers += 1
        lo, hi = witness.narrow(lo, hi, seqs, {s: ours(s) for s in seqs},
                                {s: theirs(s) for s in seqs})  # fmt: skip
    assert hi == first
    assert answers <= 6  # 17x narrower per answer: 1,000,000 commits in 5


def test_a_seq_missing_on_one_side_differs() -> None:
    assert witness.narrow(0, 10, [3, 6], {3: H[3], 6: H[6]}, {3: H[3]}) == (3, 6)
    assert witness.narrow(0, 10, [3, 6], {3: None}, {3: None, 6: H[6]}) == (3, 6)
    assert witness.narrow(0, 10, [3, 6], {3: None}, {3: None}) == (6, 10)  # neither holds 6


@pytest.mark.parametrize(
    "body",
    [None, 3, "x", [], {}, {"heads": []}, {"heads": {"A": 3}}, {"heads": {"A": [1]}},
     {"heads": {"A": [-1, None]}}, {"heads": {"A": [True, None]}},
     {"heads": {"A": [1, "abc"]}}, {"heads": {"A": [1.5, None]}}],
)  # fmt: skip
def test_bad_heads_answers_are_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        witness.parse_heads(body)


def test_bad_hashes_answers_are_refused() -> None:
    assert witness.parse_hashes({"hashes": {"3": H[3]}}, [3, 4]) == {3: H[3]}
    for body in [None, {"hashes": []}, {"hashes": {"5": H[5]}}, {"hashes": {"3": 3}},
                 {"hashes": {"3": "ZZ"}}]:  # fmt: skip
        with pytest.raises(ValueError):
            witness.parse_hashes(body, [3, 4])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_any_answer_parses_or_raises_value_error(body: Any) -> None:
    for parse in (witness.parse_heads, lambda b: witness.parse_hashes(b, [1, 2, 3])):
        with contextlib.suppress(ValueError):
            parse(body)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
def test_any_query_parses_or_raises_value_error(args: dict[str, Any]) -> None:
    with contextlib.suppress(ValueError):
        witness.parse_query(args)


# -- the store's durable heads ------------------------------------------------------------


def test_the_store_keeps_its_durable_heads_and_reads_hashes(tmp_path: Path) -> None:
    ny, _la = pair(tmp_path)
    made = [change(ny, f"c{i}") for i in range(3)]
    assert ny.heads == ny.chains.heads
    assert ny.heads["SER-NY"] == (made[-1].id.seq, made[-1].seal and made[-1].seal.hash)
    seqs = [c.id.seq for c in made]
    assert ny.hashes("SER-NY", [*seqs, 999]) == {
        c.id.seq: c.seal.hash for c in made if c.seal is not None
    }
    reopened = Store(tmp_path / "ny.db", origin="SER-NY", hostname=NY)
    assert reopened.heads == ny.heads


async def test_heads_move_only_once_the_writer_wrote_them(tmp_path: Path) -> None:
    ny, _ = pair(tmp_path)
    before = dict(ny.heads)
    loop = asyncio.get_running_loop()
    ny.writer = ThreadWriter(loop.call_soon_threadsafe)
    try:
        s = ny.version_vector
        commit = change(ny, "queued")
        assert ny.heads == before  # in memory, not durable yet: no summary to send
        assert witness.summary(ny.heads, ny.state.vv) is None
        assert witness.summary(before, s) is not None
        await ny.durable(commit)
        assert ny.heads["SER-NY"][0] == commit.id.seq
        assert witness.summary(ny.heads, ny.state.vv) is not None
    finally:
        ny.writer.close()


def test_a_commit_held_again_after_its_header_was_deleted_is_no_loss(tmp_path: Path) -> None:
    """Re-applying a version the state holds (its header deleted from a tampered log,
    sent again by a peer) is not recorded as its own loss (``docs/history.md``, Risks)."""
    ny, la = pair(tmp_path)
    made = change(ny, "one")
    sync(ny, la)
    la.close()
    sql(tmp_path / "la.db", "DELETE FROM commits WHERE origin = ? AND seq = ?", "SER-NY",
        made.id.seq)  # fmt: skip
    la = Store(tmp_path / "la.db", origin="SER-LA", hostname=LA, sealer=sealer(tmp_path, LA_SEED))
    assert la.state.vv["SER-NY"] == made.id.seq - 1
    sync(ny, la)
    assert la.state.vv["SER-NY"] == made.id.seq
    assert la.inconsistencies() == []


# -- a fork narrowed down between two real stores ------------------------------------------


def forked(tmp: Path, common: int, after: int) -> tuple[Store, Store, int]:
    """newyork, and a copy of its store taken after ``common`` more commits; then each
    makes ``after`` commits of its own: the same seqs, other hashes.  (Returns the first
    seq that differs.)"""
    ny, _ = pair(tmp)
    for i in range(common):
        change(ny, f"common {i}")
    first = ny.state.vv["SER-NY"] + 1
    ny.close()
    shutil.copy(tmp / "ny.db", tmp / "copy.db")
    ny = Store(tmp / "ny.db", origin="SER-NY", hostname=NY, sealer=sealer(tmp, NY_SEED))
    copy = Store(tmp / "copy.db", origin="SER-NY", hostname=NY, sealer=sealer(tmp, NY_SEED))
    for i in range(after):
        change(ny, f"ours {i}", row=f"o{i}@x.example")
        change(copy, f"theirs {i}", row=f"t{i}@x.example")
    assert ny.state.vv == copy.state.vv and (ny.heads != copy.heads) == (after > 0)
    return ny, copy, first


class Peer:
    """A peer that answers ``heads`` from a real store, or with what a test gives."""

    def __init__(self, store: Store, spoil: Any = None) -> None:
        self.store, self.spoil, self.asked = store, spoil, 0

    async def ask(self, peer: str, kind: str, args: dict[str, Any]) -> Answered:
        assert (peer, kind) == ("SER-LA", "heads")
        self.asked += 1
        if self.spoil is not None and self.asked > 1:
            return Answered(peer, self.asked, True, self.spoil)
        body = witnessing.answer(self.store, args) or witnessing.read(self.store, args)
        return Answered(peer, self.asked, True, body)


async def narrowed(ours: Store, peer: Peer) -> list[tuple[str, str, int, str]]:
    found: list[tuple[str, str, int, str]] = []
    narrowing = witnessing.Narrowing(ours, peer.ask, lambda *f: found.append(f), str)
    narrowing.start("SER-LA")
    narrowing.start("SER-LA")  # under way: not started twice
    assert len(narrowing.running) == 1
    await narrowing.running["SER-LA"]
    return found


@pytest.mark.parametrize(("common", "after"), [(0, 1), (3, 40), (60, 2)])
async def test_a_fork_is_named_at_its_first_seq(tmp_path: Path, common: int, after: int) -> None:
    ny, copy, first = forked(tmp_path, common, after)
    peer = Peer(copy)
    [(who, origin, seq, text)] = await narrowed(ny, peer)
    assert (who, origin, seq) == ("SER-LA", "SER-NY", first)
    theirs, ours = copy.hashes("SER-NY", [seq])[seq], ny.hashes("SER-NY", [seq])[seq]
    assert f"has hash {str(theirs)[:12]} there and {str(ours)[:12]} here" in text
    assert peer.asked <= 1 + 3  # the heads, then a few ranges


async def test_equal_chains_find_nothing(tmp_path: Path) -> None:
    ny, copy, _ = forked(tmp_path, 2, 0)
    peer = Peer(copy)
    assert await narrowed(ny, peer) == []
    assert peer.asked == 1


@pytest.mark.parametrize(
    "spoil", [{"hashes": {"99999": "0" * 64}}, {"hashes": "x"}, ["garbage"], {"hashes": {"1": 7}}]
)
async def test_a_garbage_answer_concludes_nothing(
    tmp_path: Path, spoil: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ny, copy, _ = forked(tmp_path, 40, 3)
    before = (dict(ny.heads), dict(ny.state.vv))
    assert await narrowed(ny, Peer(copy, spoil)) == []
    assert (dict(ny.heads), dict(ny.state.vv)) == before
    assert "gave a bad heads answer" in caplog.text


def test_a_heads_query_is_checked() -> None:
    for args in [{"origin": "A"}, {"origin": 3, "seqs": [1]}, {"origin": "A", "seqs": []},
                 {"origin": "A", "seqs": [0]}, {"origin": "A", "seqs": list(range(1, 40))},
                 {"origin": "A", "seqs": [True]}, {"x": 1}]:  # fmt: skip
        with pytest.raises(ValueError):
            witness.parse_query(args)
    assert witness.parse_query({}) is None
    assert witness.parse_query({"origin": "A", "seqs": [1, 5]}) == ("A", [1, 5])
