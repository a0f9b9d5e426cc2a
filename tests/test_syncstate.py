"""The sync state of a member (``clusterd.node.syncstate``): one row per rule, in the
order the rules apply, then the per-feature counts of ``Recent`` against a plain count."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterd.core.versions import CommitId
from clusterd.mesh.peers import Peer
from clusterd.node.syncstate import Recent, sync_state

B = "SER-B"
NAME = "b.example.com"
ROW = CommitId("SER-A", 2)  # the commit that wrote b's machines row (a admitted it)
VERSIONS = (f"software versions differ: {NAME} runs 2.0, a.example.com runs 1.0; members "
            "must run the same version")  # fmt: skip


def peer(state: str = "up", vv: dict[str, int] | None = None, **kw: Any) -> Peer:
    return Peer(B, NAME, state=state, vv={"SER-A": 2} if vv is None else vv, **kw)


OURS = {"SER-A": 2, B: 1}
CASES = [
    # (what, peer, ours, keywords, state, text, behind, ahead)
    ("linked, same commits", peer(vv=dict(OURS)), OURS, {},
     "in_sync", "In Sync", 0, 0),
    ("a zero entry is no difference", peer(vv={**OURS, "SER-C": 0}), OURS, {},
     "in_sync", "In Sync", 0, 0),
    ("it lacks two of ours", peer(vv={"SER-A": 1}), {"SER-A": 2, B: 1}, {},
     "changes_pending", "Changes Pending (2 commits ahead)", 0, 2),
    ("we lack three of its", peer(vv={"SER-A": 2, B: 4}), OURS, {},
     "changes_pending", "Changes Pending (3 commits behind)", 3, 0),
    ("both", peer(vv={"SER-A": 1, B: 2}), OURS, {},
     "changes_pending", "Changes Pending (1 commit behind, 1 ahead)", 1, 1),
    ("refused for its version", peer("refused", reason=f"refused by {NAME}: {VERSIONS}",
                                     refusal="version"), OURS, {},
     "refused", f"Refused ({VERSIONS})", None, None),
    ("refused, even while this machine is disconnected", peer("refused", reason="x",
                                                              refusal="key"),
     OURS, {"here_disconnected": True}, "refused", "Refused (x)", None, None),
    ("this machine disconnected on purpose", peer("disconnected"), OURS,
     {"here_disconnected": True}, "disconnected", "Disconnected (this machine, on purpose)",
     None, None),
    ("it is disconnected on purpose, even never linked", peer("disconnected", vv={},
                                                              admin_off=True),
     {"SER-A": 2}, {"admitted": ROW}, "disconnected", "Disconnected (on purpose)", None, None),
    ("admitted, never heard from", peer("down", vv={}, reason="connection failure: no"),
     {"SER-A": 2}, {"admitted": ROW}, "awaiting_initial_sync", "Awaiting Initial Sync",
     None, None),
    ("admitted again: the vector heard before lacks its new row", peer("down"),
     {"SER-A": 3}, {"admitted": CommitId("SER-A", 3)}, "awaiting_initial_sync",
     "Awaiting Initial Sync", None, None),
    ("admitted, heard from since", peer("down", vv={"SER-A": 2}), {"SER-A": 2},
     {"admitted": ROW}, "disconnected", "Disconnected", None, None),
    ("admitted, a commit of its own is here (a restart here forgot its vector)",
     peer("down", vv={}), {"SER-A": 2, B: 1}, {"admitted": ROW}, "disconnected",
     "Disconnected", None, None),
    ("down, with its reason and a relay", peer("down", reason="connection dropped: no answer"),
     OURS, {"route": "via c.example.com"}, "disconnected",
     "Disconnected (connection dropped: no answer; reached via c.example.com)", None, None),
    ("connecting counts as no link", peer("connecting"), OURS, {}, "disconnected",
     "Disconnected", None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "p", "ours", "kw", "state", "text", "behind", "ahead"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_the_first_rule_that_applies_decides(
    what: str, p: Peer, ours: dict[str, int], kw: dict[str, Any], state: str, text: str,
    behind: int | None, ahead: int | None,
) -> None:  # fmt: skip
    found = sync_state(p, ours, **kw).to_json()
    assert (found["state"], found["text"], found["behind"], found["ahead"]) == (
        state, text, behind, ahead)  # fmt: skip
    assert found["action"]  # every state says what to do (In Sync: "None.")
    assert set(found) == {"state", "text", "behind", "ahead", "reason", "action", "features",
                          "features_unknown"}  # fmt: skip


@pytest.mark.parametrize(
    ("refusal", "reason", "words"),
    [
        ("version", VERSIONS, "upgrade the older"),
        ("protocol-version", "no common protocol version (3-3 vs 2-2)", "upgrade the older"),
        ("unknown", "b is not a member of cluster x", "clusterconfig list"),
        ("cluster", "b belongs to cluster 'y', not 'x'", "clusterconfig removemachine b"),
        (
            "key",
            "b refused our machine key: a.example.com was removed from the cluster by",
            "This machine was removed from the cluster",
        ),
        ("key", "b presented a host key that is not the one membership records", "keys differ"),
        ("identity", "hello from SER-X on a link of SER-B", "keys differ"),
    ],
)
def test_a_refusal_says_what_to_do_from_its_code(refusal: str, reason: str, words: str) -> None:
    found = sync_state(peer("refused", reason=reason, refusal=refusal), OURS)
    assert (found.state, found.reason) == ("refused", reason)
    assert words in found.action


def test_the_actions_name_the_member_and_the_command() -> None:
    off = sync_state(peer("disconnected", admin_off=True), OURS)
    assert f"clusterconfig reconnect {NAME}" in off.action
    assert "clusterconfig reconnect." in sync_state(peer(), OURS, here_disconnected=True).action
    assert "Wait for its first link" in sync_state(peer("down", vv={}), {}, admitted=ROW).action
    assert "connstatus" in sync_state(peer("down"), OURS).action
    pending = sync_state(peer(vv={"SER-A": 1}), OURS)
    assert f"{NAME} is fetching them from this machine" in pending.action
    pending = sync_state(peer(vv={"SER-A": 2, B: 3}), OURS)
    assert f"this machine is fetching them from {NAME}" in pending.action
    assert sync_state(peer(vv=dict(OURS)), OURS).action == "None."


def test_the_features_ahead_are_named_and_the_rest_counted_as_unknown() -> None:
    recent = Recent()
    recent.add("SER-A", 6, ["dnsconfig"])
    recent.add("SER-A", 7, ["dnsconfig", "userconfig"])
    ours = {"SER-A": 7, B: 3}
    found = sync_state(peer(vv={"SER-A": 5, B: 4}), ours, recent=recent)
    assert found.text == "Changes Pending (1 commit behind, 2 ahead)"  # the module's example
    assert found.features == {"dnsconfig": {"ahead": 2}, "userconfig": {"ahead": 1}}
    assert found.features_unknown == 0
    found = sync_state(peer(vv={"SER-A": 3, B: 1}), ours, recent=recent)
    assert found.ahead == 6  # A:4-7 and B:2-3; only A:6 and A:7 are known here
    assert found.features == {"dnsconfig": {"ahead": 2}, "userconfig": {"ahead": 1}}
    assert found.features_unknown == 4
    assert sync_state(peer(vv={"SER-A": 7, B: 4}), ours, recent=recent).features == {}
    uncounted = sync_state(peer(vv={"SER-A": 5, B: 4}), ours)  # (polled often: not counted)
    assert (uncounted.ahead, uncounted.features, uncounted.features_unknown) == (2, None, None)
    assert sync_state(peer(vv={"SER-A": 7, B: 4}), ours).features == {}  # only behind


def test_recent_starts_a_new_run_after_a_gap_and_ignores_what_it_knows() -> None:
    recent = Recent()
    recent.add("O", 1, ["a"])
    recent.add("O", 2, ["b"])
    recent.add("O", 2, ["c"])  # known already: unchanged
    assert recent.ahead({"O": 2}, {}) == ({"a": 1, "b": 1}, 0)
    recent.add("O", 5, ["c"])  # 3 and 4 came by a state transfer: not known
    assert recent.ahead({"O": 5}, {}) == ({"c": 1}, 4)
    assert repr(recent) == "<Recent O:5-5>"


def test_recent_keeps_between_one_and_two_windows() -> None:
    recent = Recent(window=10)
    for seq in range(1, 20):
        recent.add("O", seq, ["f" if seq % 2 else "g"])
    assert recent.ahead({"O": 19}, {}) == ({"f": 10, "g": 9}, 0)
    recent.add("O", 20, ["g"])  # 20 commits: trimmed to the last 10 (11..20)
    assert recent.ahead({"O": 20}, {}) == ({"f": 5, "g": 5}, 10)
    assert recent.ahead({"O": 20}, {"O": 15}) == ({"f": 2, "g": 3}, 0)


@given(
    st.lists(st.tuples(st.sampled_from("OPQ"), st.sets(st.sampled_from("abcd"), min_size=1)),
             max_size=80),
    st.dictionaries(st.sampled_from("OPQ"), st.integers(0, 40)),
)  # fmt: skip
def test_recent_counts_as_a_walk_over_the_commits_it_keeps(
    commits: list[tuple[str, set[str]]], theirs: dict[str, int]
) -> None:
    window = 8
    recent = Recent(window)
    ours: dict[str, int] = {}
    first: dict[str, int] = {}  # the model of the trimming: the oldest seq kept
    wrote: dict[tuple[str, int], set[str]] = {}
    for origin, features in commits:
        ours[origin] = seq = ours.get(origin, 0) + 1
        recent.add(origin, seq, features)
        wrote[origin, seq] = features
        first.setdefault(origin, 1)
        if seq - first[origin] + 1 >= 2 * window:
            first[origin] = seq - window + 1
        recent.ahead(ours, theirs)  # counted after every commit: what it keeps is renewed
    walked: dict[str, int] = {}
    unknown = 0
    for origin, last in ours.items():
        for seq in range(theirs.get(origin, 0) + 1, last + 1):
            if seq < first[origin]:
                unknown += 1
                continue
            for f in wrote[origin, seq]:
                walked[f] = walked.get(f, 0) + 1
    assert recent.ahead(ours, theirs) == (walked, unknown)
    assert recent.ahead(ours, theirs) == (walked, unknown)  # again, from what it kept
