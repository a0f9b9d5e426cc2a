"""Leaves, sums and the narrowing tree of the durable state (``core.unitdigest``)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.core.unitdigest import (
    MASK,
    UnitDigests,
    bucket,
    leaf,
    parse_answer,
    root_of,
    root_text,
    step,
)
from clusterd.core.versions import Unit

U = Unit("settz", "cluster", "")


def digests_of(leaves: dict[Unit, int]) -> UnitDigests:
    d = UnitDigests()
    for unit, value in leaves.items():
        d.put(unit, value)
    return d


def narrow(ours: UnitDigests, theirs: UnitDigests) -> tuple[list[Unit], int]:
    """The units ``step`` names, asking ``theirs`` as a peer would be asked: (units,
    queries asked)."""
    queue: list[dict[str, Any]] = [{}]
    named: list[Unit] = []
    asked = 0
    while queue:
        args = queue.pop(0)
        asked += 1
        _, t = parse_answer(theirs.tree(args))
        _, o = parse_answer(ours.tree(args))
        more, units = step(args, o, t)
        queue += more
        named += units
    return named, asked


def test_the_leaf_covers_every_part_of_the_entry() -> None:
    base = leaf(U, 5, "S1", 3, False, '{"timezone":"UTC"}')
    others = [
        leaf(Unit("settz", "cluster", "x"), 5, "S1", 3, False, '{"timezone":"UTC"}'),
        leaf(Unit("settz", "group:a", ""), 5, "S1", 3, False, '{"timezone":"UTC"}'),
        leaf(Unit("setdns", "cluster", ""), 5, "S1", 3, False, '{"timezone":"UTC"}'),
        leaf(U, 6, "S1", 3, False, '{"timezone":"UTC"}'),
        leaf(U, 5, "S2", 3, False, '{"timezone":"UTC"}'),
        leaf(U, 5, "S1", 4, False, '{"timezone":"UTC"}'),
        leaf(U, 5, "S1", 3, True, '{"timezone":"UTC"}'),
        leaf(U, 5, "S1", 3, False, '{"timezone":"UTD"}'),
        leaf(U, 5, "S1", 3, False, None),
    ]
    assert base not in others and len(set(others)) == len(others)
    assert 0 <= base <= MASK
    assert leaf(U, 5, "S1", 3, False, None) == leaf(U, 5, "S1", 3, False, "null")


def test_root_text_is_eleven_base64url_characters_and_back() -> None:
    for root in (0, 1, MASK, 0x0123456789ABCDEF):
        text = root_text(root)
        assert len(text) == 11 and root_of(text) == root
    for bad in ("", "A" * 10, "A" * 12, "AAAAAAAAAA=", "AAAAAAAAAA+", 7):
        with pytest.raises(ValueError):
            root_of(bad)  # type: ignore[arg-type]


units = st.builds(
    Unit,
    st.sampled_from(["settz", "setdns", "userconfig"]),
    st.sampled_from(["cluster", "group:web", "machine:m1"]),
    st.text(max_size=6),
)
tables = st.dictionaries(units, st.integers(0, MASK), max_size=40)


@given(tables, st.randoms(use_true_random=False))
def test_sums_do_not_depend_on_order_and_follow_updates(
    leaves: dict[Unit, int], rnd: random.Random
) -> None:
    items = list(leaves.items())
    rnd.shuffle(items)
    d = UnitDigests()
    for unit, _ in items:  # first some other leaf, then the real one: updates
        d.put(unit, rnd.randrange(MASK + 1))
    d.update(items)
    fresh = digests_of(leaves)
    assert d.root == fresh.root == sum(leaves.values()) & MASK
    nonzero = {k: v for k, v in fresh.features.items() if v}
    assert {k: v for k, v in d.features.items() if v} == nonzero
    for (f, m), s in d.modes.items():
        assert s == sum(v for u, v in leaves.items() if (u.feature, u.mode) == (f, m)) & MASK
    for (f, m, b), s in d.buckets.items():
        expect = sum(
            v for u, v in leaves.items() if (u.feature, u.mode, bucket(u.key)) == (f, m, b)
        )
        assert s == expect & MASK


@settings(max_examples=200)
@given(tables, units, st.integers(0, MASK), st.sampled_from(["changed", "added", "only_ours"]))
def test_any_single_changed_unit_is_named_and_nothing_else(
    leaves: dict[Unit, int], unit: Unit, value: int, how: str
) -> None:
    ours = dict(leaves)
    theirs = dict(leaves)
    if how == "changed":
        ours[unit] = value
        theirs[unit] = (value + 1) & MASK or 1
    elif how == "added":
        theirs[unit] = value or 1
        ours.pop(unit, None)
    else:
        ours[unit] = value or 1
        theirs.pop(unit, None)
    named, asked = narrow(digests_of(ours), digests_of(theirs))
    assert named == [unit]
    assert asked == 4  # features, modes, buckets, units: four answers


@given(tables)
def test_equal_states_name_nothing_in_one_answer(leaves: dict[Unit, int]) -> None:
    assert narrow(digests_of(leaves), digests_of(dict(leaves))) == ([], 1)


def test_several_changed_units_are_all_named() -> None:
    rnd = random.Random(7)
    leaves = {Unit("settz", "cluster", f"k{i}"): rnd.randrange(MASK) for i in range(500)}
    theirs = dict(leaves)
    changed = sorted(rnd.sample(sorted(leaves), 5))
    for u in changed:
        theirs[u] ^= 1
    named, _ = narrow(digests_of(leaves), digests_of(theirs))
    assert sorted(named) == changed


def test_the_tree_answers_each_level() -> None:
    a, b = Unit("settz", "cluster", ""), Unit("settz", "group:web", "")
    d = digests_of({a: 5, b: 7})
    top = d.tree({})
    assert top == {"root": root_text(12), "children": {"settz": f"{12:016x}"}}
    assert d.tree({"feature": "settz"})["children"] == {
        "cluster": f"{5:016x}",
        "group:web": f"{7:016x}",
    }
    assert d.tree({"feature": "settz", "mode": "cluster"})["children"] == {
        str(bucket("")): f"{5:016x}"
    }
    assert d.tree({"feature": "settz", "mode": "cluster", "bucket": bucket("")})["children"] == {
        "": f"{5:016x}"
    }
    assert d.tree({"feature": "nothing"})["children"] == {}


@pytest.mark.parametrize(
    "args",
    [
        {"mode": "cluster"},
        {"bucket": 1},
        {"feature": "settz", "bucket": 1},
        {"feature": 3},
        {"feature": "settz", "mode": ["x"]},
        {"feature": "settz", "mode": "cluster", "bucket": 256},
        {"feature": "settz", "mode": "cluster", "bucket": "1"},
        {"feature": "settz", "mode": "cluster", "bucket": True},
        {"feature": "settz", "depth": 1},
    ],
)
def test_a_malformed_tree_query_is_refused(args: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        UnitDigests().tree(args)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "root",
        {"root": root_text(1)},
        {"root": "short", "children": {}},
        {"root": root_text(1), "children": []},
        {"root": root_text(1), "children": {"settz": 5}},
        {"root": root_text(1), "children": {"settz": "xyz"}},
        {"root": root_text(1), "children": {"settz": "0" * 17}},
        {"root": root_text(1), "children": {}, "more": 1},
    ],
)
def test_a_malformed_answer_is_refused_with_its_reason(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_answer(body)


def test_a_bucket_name_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        step({"feature": "settz", "mode": "cluster"}, {}, {"not-a-bucket": 1})
