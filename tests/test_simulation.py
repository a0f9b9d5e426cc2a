"""Seeded simulation of whole clusters over the in-memory network (tests/sim.py).

CI runs a bounded set: 60 seeds of 50 members and 300 of 8.  ``pytest
tests/test_simulation.py --seeds 1000`` runs more of the 50-member kind, and
``python -m tests.sim --seed N`` replays one seed, printing what happened.
"""

from __future__ import annotations

import pytest

from tests import sim


def check(outcome: sim.Outcome) -> None:
    replay = f"replay: python -m tests.sim --seed {outcome.seed} --members "
    assert len(outcome.digests) == 1, f"members did not converge; {replay}"
    assert not outcome.problems, f"{outcome.problems[:5]}; {replay}"


@pytest.mark.seeds(60)
def test_fifty_members_converge_under_faults(sim_seed: int) -> None:
    # Every fifth seed also sends each frame through the wire encoding.
    check(sim.run(sim_seed, n=50, wire=sim_seed % 5 == 0))


@pytest.mark.parametrize("seed", range(1000, 1300))
def test_eight_members_converge_under_faults(seed: int) -> None:
    check(sim.run(seed, n=8))


def test_a_seed_replays_exactly() -> None:
    first, again = sim.run(7, n=12), sim.run(7, n=12)
    assert (first.digests, first.frames, first.alerts) == (
        again.digests,
        again.frames,
        again.alerts,
    )
    assert first.frames > 0


def test_state_transfer_happens_when_logs_are_truncated() -> None:
    transfers = sum(sim.run(seed, n=8).transfers for seed in range(1000, 1040))
    assert transfers > 0
