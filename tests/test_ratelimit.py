"""The login/join limiter: failures per source, a window, a lockout; time is passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterd.trust.ratelimit import Limiter

SRC = "192.0.2.7"
OTHER = "198.51.100.9"


def limiter() -> Limiter:
    return Limiter(limit=3, window=10.0, lockout=30.0)


def test_defaults() -> None:
    lim = Limiter()
    assert (lim.limit, lim.window, lim.lockout) == (5, 60.0, 60.0)
    assert lim.blocked(SRC, 0.0) == 0.0


def test_under_the_limit_is_not_blocked() -> None:
    lim = limiter()
    assert lim.blocked(SRC, 100.0) == 0.0
    assert lim.failed(SRC, 100.0) is False
    assert lim.failed(SRC, 101.0) is False
    assert lim.blocked(SRC, 101.0) == 0.0
    assert lim.blocked(SRC, 5000.0) == 0.0


def test_reaching_the_limit_locks_out_for_lockout_seconds() -> None:
    lim = limiter()
    assert lim.failed(SRC, 100.0) is False
    assert lim.failed(SRC, 104.0) is False
    assert lim.failed(SRC, 109.0) is True  # third failure within 10 s: the lockout starts
    assert lim.blocked(SRC, 109.0) == 30.0
    assert lim.blocked(SRC, 120.0) == 19.0
    assert lim.blocked(SRC, 138.5) == 0.5
    # More failures while locked do not start (or extend) a lockout.
    assert lim.failed(SRC, 110.0) is False
    assert lim.failed(SRC, 111.0) is False
    assert lim.blocked(SRC, 111.0) == 28.0


def test_failed_reports_the_start_of_a_lockout_exactly_once() -> None:
    lim = limiter()
    starts = [lim.failed(SRC, 100.0 + i) for i in range(8)]
    assert starts == [False, False, True, False, False, False, False, False]


def test_failures_older_than_the_window_do_not_count() -> None:
    lim = limiter()
    assert lim.failed(SRC, 0.0) is False
    assert lim.failed(SRC, 5.0) is False
    assert lim.failed(SRC, 10.0) is False  # the failure at 0 is a full window old
    assert lim.blocked(SRC, 10.0) == 0.0
    assert lim.failed(SRC, 100.0) is False  # everything before is long gone
    assert lim.failed(SRC, 105.0) is False
    assert lim.blocked(SRC, 105.0) == 0.0
    assert lim.failed(SRC, 109.9) is True  # 100, 105, 109.9: three within 10 s
    assert lim.blocked(SRC, 109.9) == 30.0


def test_a_source_is_clean_after_its_lockout() -> None:
    lim = limiter()
    for t in (0.0, 1.0, 2.0):
        lim.failed(SRC, t)
    assert lim.blocked(SRC, 31.9) > 0
    assert lim.blocked(SRC, 32.0) == 0.0  # locked until 2 + 30
    assert SRC not in lim.locked and SRC not in lim.failures
    # Clean: it takes ``limit`` new failures to lock it out again.
    assert lim.failed(SRC, 33.0) is False
    assert lim.failed(SRC, 34.0) is False
    assert lim.blocked(SRC, 34.0) == 0.0
    assert lim.failed(SRC, 35.0) is True
    assert lim.blocked(SRC, 35.0) == 30.0


def test_sources_are_independent() -> None:
    lim = limiter()
    for t in (0.0, 1.0):
        lim.failed(SRC, t)
        lim.failed(OTHER, t)
    assert lim.failed(SRC, 2.0) is True
    assert lim.blocked(SRC, 2.0) == 30.0
    assert lim.blocked(OTHER, 2.0) == 0.0
    assert lim.failed(OTHER, 20.0) is False  # its failures at 0 and 1 have expired
    assert lim.blocked(OTHER, 20.0) == 0.0
    assert lim.blocked(SRC, 32.0) == 0.0
    assert lim.blocked(OTHER, 32.0) == 0.0


class Model:
    """The documented policy, written plainly, for one source."""

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self.times: list[float] = []
        self.until: float | None = None

    def blocked(self, now: float) -> float:
        if self.until is None:
            return 0.0
        if now >= self.until:
            self.until, self.times = None, []
            return 0.0
        return self.until - now

    def failed(self, now: float) -> bool:
        self.times = [t for t in self.times if t > now - self.window] + [now]
        if len(self.times) >= self.limit and self.until is None:
            self.until = now + self.lockout
            return True
        return False


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 4),
    window=st.integers(1, 20),
    lockout=st.integers(1, 40),
    events=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from([SRC, OTHER]), st.booleans()),
        max_size=40,
    ),
)
def test_attempts_as_the_server_makes_them_follow_the_policy(
    limit: int, window: int, lockout: int, events: list[tuple[int, str, bool]]
) -> None:
    """Each attempt: ask ``blocked`` first; a source not blocked may then fail."""
    lim = Limiter(limit, float(window), float(lockout))
    models = {s: Model(limit, float(window), float(lockout)) for s in (SRC, OTHER)}
    now = 0.0
    for step, source, fails in events:
        now += step
        left = lim.blocked(source, now)
        assert left == models[source].blocked(now)
        assert 0.0 <= left <= lockout
        if left or not fails:
            continue
        started = lim.failed(source, now)
        assert started == models[source].failed(now)
        if started:
            assert lim.blocked(source, now) == lockout
            recent = [t for t in models[source].times if t > now - window]
            assert len(recent) >= limit
