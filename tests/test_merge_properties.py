"""Properties of merging: order, grouping and repetition of delivery do not matter;
every change is present, knowingly overwritten, or recorded as a loss."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterd.core.digest import state_digest
from clusterd.core.edits import Editor, Start
from clusterd.core.errors import InvalidSetting
from clusterd.core.merge import apply_transfer, transfer_changes
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit
from tests.replica import Replica, accounted, cluster_commit, merge_states

MODES = [
    Mode.cluster(),
    Mode.group("G1"),
    Mode.group("G2"),
    Mode.machine("m0.example.com"),
    Mode.machine("m1.example.com"),
]
KEYS = ["a@x.example", "b@x.example", "c@x.example"]
ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo"]

modes = st.sampled_from(MODES)
op = st.one_of(
    st.tuples(st.just("row"), modes, st.sampled_from(KEYS), st.sampled_from(["", "x", "y"])),
    st.tuples(st.just("delrow"), modes, st.sampled_from(KEYS)),
    st.tuples(st.just("tz"), modes, st.sampled_from(ZONES)),
    st.tuples(
        st.just("define"),
        st.sampled_from(["unsubscribe", "settz"]),
        modes,
        st.sampled_from(list(Start)),
    ),
    st.tuples(st.just("undefine"), st.sampled_from(["unsubscribe", "settz"]), modes),
    st.tuples(st.just("copy"), st.sampled_from(["unsubscribe", "settz"]), modes, modes),
    st.tuples(st.just("move"), st.sampled_from(["unsubscribe", "settz"]), modes, modes),
)
step = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 2), st.lists(op, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
)


def run_op(ed: Editor, o: tuple[Any, ...]) -> None:
    try:
        match o:
            case ("row", mode, key, comment):
                ed.set_row("unsubscribe", mode, key, {"comment": comment})
            case ("delrow", mode, key):
                ed.delete_row("unsubscribe", mode, key)
            case ("tz", mode, zone):
                ed.set_record("settz", mode, {"timezone": zone})
            case ("define", feature, mode, start):
                ed.define(feature, mode, start)
            case ("undefine", feature, mode):
                ed.undefine(feature, mode)
            case ("copy", feature, src, dst):
                ed.copy(feature, src, dst)
            case ("move", feature, src, dst):
                ed.move(feature, src, dst)
    except InvalidSetting:
        pass  # not applicable in this writer's current view: nothing written


def play(steps: list[Any], skew: list[int]) -> tuple[list[Replica], list[Commit]]:
    """Three writers with skewed clocks edit and gossip; returns them and every commit."""
    base = cluster_commit()
    ticks = [0]

    def wall_of(offset: int) -> Any:
        def wall() -> int:
            ticks[0] += 1  # coarse: writers often share a millisecond, so stamps tie
            return 1_000_000 + ticks[0] // 8 + offset

        return wall

    writers = [Replica(f"SER-{i}", f"m{i}.example.com", wall_of(skew[i])) for i in range(3)]
    known: list[list[Commit]] = [[base] for _ in writers]
    for w in writers:
        w.receive([base])
    commits = [base]
    for s in steps:
        if s[0] == "edit":
            _, who, ops = s
            commit = writers[who].edit(lambda ed, ops=ops: [run_op(ed, o) for o in ops])
            if commit is not None:
                commits.append(commit)
                known[who].append(commit)
        else:
            _, src, dst = s
            writers[dst].receive(known[src])
            known[dst] = list({c.id: c for c in known[dst] + known[src]}.values())
    return writers, commits


def deliver(commits: list[Commit], rnd: random.Random) -> Replica:
    """A fresh member receiving everything shuffled, in random batches, with repeats."""
    observer = Replica("SER-OBS", "obs.example.com", lambda: 1)
    shuffled = commits + rnd.sample(commits, k=len(commits) // 3)
    rnd.shuffle(shuffled)
    while shuffled:
        cut = rnd.randint(1, len(shuffled))
        observer.receive(shuffled[:cut])
        shuffled = shuffled[cut:]
    return observer


skews = st.lists(st.one_of(st.just(0), st.integers(-300_000, 300_000)), min_size=3, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25), skews, st.randoms(use_true_random=False))
def test_any_delivery_converges_to_the_same_state_and_losses(
    steps: list[Any], skew: list[int], rnd: random.Random
) -> None:
    writers, commits = play(steps, skew)
    observers = [deliver(commits, rnd) for _ in range(3)]
    for w in writers:
        w.receive(commits)
    members = writers + observers
    assert all(len(m.inbox) == 0 for m in members)
    digests = {state_digest(m.state) for m in members}
    assert len(digests) == 1, "members disagree on the state"
    losses = {frozenset(m.loss_ids()) for m in members}
    assert len(losses) == 1, "members disagree on the recorded losses"
    named = {frozenset((x.unit, x.loser.commit, x.by) for x in m.state.losses()) for m in members}
    assert len(named) == 1, "members disagree on what superseded a loss"
    vvs = {tuple(sorted(m.state.vv.items())) for m in members}
    assert len(vvs) == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25), skews)
def test_nothing_is_lost_without_a_record(steps: list[Any], skew: list[int]) -> None:
    writers, commits = play(steps, skew)
    member = writers[0]
    member.receive(commits)
    problems = [p for c in commits for p in accounted(c, commits, member)]
    assert problems == []


@settings(max_examples=60, deadline=None)
@given(st.lists(step, max_size=15), skews, st.randoms(use_true_random=False))
def test_applying_twice_changes_nothing(
    steps: list[Any], skew: list[int], rnd: random.Random
) -> None:
    _, commits = play(steps, skew)
    member = deliver(commits, rnd)
    before = (state_digest(member.state), frozenset(member.loss_ids()))
    member.receive(rnd.sample(commits, k=len(commits)))
    assert (state_digest(member.state), frozenset(member.loss_ids())) == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25), skews)
def test_merging_two_states_equals_applying_both_histories(
    steps: list[Any], skew: list[int]
) -> None:
    """A state transfer's merge gives what the commits themselves would have given."""
    writers, _ = play(steps, skew)
    a, b = writers[0], writers[1]
    merged = merge_states(a.state, b.state)
    swapped = merge_states(b.state, a.state)
    ref = Replica("SER-REF", "ref.example.com", lambda: 1)
    ref.receive(a.applied + b.applied)
    want = (state_digest(ref.state), frozenset(ref.loss_ids()), ref.state.vv)
    for state in (merged, swapped):
        view = Replica("SER-M", "m.example.com", lambda: 1)
        view.state = state
        assert (state_digest(state), frozenset(view.loss_ids()), state.vv) == want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25), skews)
def test_taking_a_transfer_in_place_equals_merging_the_states(
    steps: list[Any], skew: list[int]
) -> None:
    """What the store does (only the units that change, in place, on a copy computed
    against: ``transfer_changes`` then ``apply_transfer``) is the merge of the states,
    and its undo puts everything back."""
    writers, _ = play(steps, skew)
    a, b = writers[0], writers[1]
    want = merge_states(a.state, b.state)
    taken = a.state.copy()
    before = (
        state_digest(taken),
        frozenset(x.loser.commit for x in taken.losses()),
        dict(taken.vv),
    )
    effect = apply_transfer(taken, transfer_changes(a.state, b.state), b.state.vv)
    assert state_digest(taken) == state_digest(want) and taken.vv == want.vv
    assert sorted(map(repr, taken.losses())) == sorted(map(repr, want.losses()))
    effect.undo.revert(taken)
    assert (state_digest(taken), frozenset(x.loser.commit for x in taken.losses()),
            dict(taken.vv)) == before  # fmt: skip


def test_three_concurrent_writers_name_the_same_winner_in_any_order() -> None:
    """Regression (netns campaign): a loss named whichever version won when it
    arrived, so observers that received three concurrent writes in different orders
    disagreed on what superseded each loss.  It names the current winner now."""
    base = cluster_commit()
    writers = [
        Replica(f"SER-{i}", f"m{i}.example.com", lambda i=i: 1_000_000 + i) for i in range(3)
    ]
    writers[0].receive([base])
    define = writers[0].edit(lambda ed: ed.define("unsubscribe", Mode.cluster(), Start.EMPTY))
    assert define is not None
    base_commits = [base, define]
    for w in writers:
        w.receive(base_commits)
    made = [
        w.edit(lambda ed, i=i: run_op(ed, ("row", Mode.cluster(), "a@x.example", f"v{i}")))
        for i, w in enumerate(writers)
    ]
    commits = [c for c in made if c is not None]
    assert len(commits) == 3
    named = set()
    for order in ((0, 1, 2), (0, 2, 1), (2, 1, 0), (1, 0, 2)):
        observer = Replica("SER-9", "m9.example.com", lambda: 1_000_000)
        observer.receive(base_commits)
        for i in order:
            observer.receive([commits[i]])
        named.add(frozenset((x.loser.commit, x.by) for x in observer.state.losses()))
        merged = merge_states(writers[0].state, observer.state)
        named.add(frozenset((x.loser.commit, x.by) for x in merged.losses()))
    [losses] = named
    assert len(losses) == 2 and {by for _, by in losses} == {commits[2].id}
