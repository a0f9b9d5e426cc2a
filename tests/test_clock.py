from __future__ import annotations

import pytest

from clusterd.core.clock import HybridClock, Stamp, newer, pack, wall_ms


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (Stamp(pack(2), "a"), Stamp(pack(1), "z"), True),  # later wall clock wins
        (Stamp(pack(1), "z"), Stamp(pack(2), "a"), False),
        (Stamp(pack(1, 1), "a"), Stamp(pack(1, 0), "z"), True),  # logical counter next
        (Stamp(pack(1), "b"), Stamp(pack(1), "a"), True),  # origin breaks ties
        (Stamp(pack(1), "a"), Stamp(pack(1), "b"), False),
        (Stamp(pack(1), "a"), Stamp(pack(1), "a"), False),  # never newer than itself
    ],
)
def test_newer_is_the_last_writer_order(a: Stamp, b: Stamp, expected: bool) -> None:
    assert newer(a, b) is expected


def test_clock_is_monotonic_when_the_wall_clock_goes_back() -> None:
    walls = iter([1000, 1000, 900, 900, 1200])
    clock = HybridClock(lambda: next(walls))
    stamps = [clock.now() for _ in range(5)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert wall_ms(stamps[-1]) == 1200


def test_observed_remote_stamps_are_never_reissued() -> None:
    clock = HybridClock(lambda: 1000)
    remote = pack(5000, 7)  # a peer five seconds ahead
    clock.observe(remote)
    assert clock.now() > remote
