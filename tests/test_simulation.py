"""Seeded simulation of whole clusters over the in-memory network (tests/sim.py).

Every member is the shipped ``clusterd.mesh.member.Member``.  Its host is either a pure
replica (fast: thousands of seeds) or a real SQLite store with the daemon's own glue
(``clusterd.node.storehost``), so peers' commits, state transfers and local commits take
the daemon's path.

CI runs a bounded set: 60 seeds of 50 members and 300 of 8 over replicas, 100 of 8 and 4
of 50 over stores.  ``pytest tests/test_simulation.py --seeds 1000`` runs more of the
50-member kind, ``python -m tests.sim --seeds 10000 --members 8 --store`` the store kind,
and ``python -m tests.sim --seed N [--store]`` replays one seed, printing what happened.
"""

from __future__ import annotations

import pytest

from tests import sim


def check(outcome: sim.Outcome) -> None:
    replay = f"replay: python -m tests.sim --seed {outcome.seed} [--store] --members "
    assert len(outcome.digests) == 1, f"members did not converge; {replay}"
    assert not outcome.problems, f"{outcome.problems[:5]}; {replay}"


@pytest.mark.seeds(60)
def test_fifty_members_converge_under_faults(sim_seed: int) -> None:
    check(sim.run(sim_seed, n=50))


@pytest.mark.parametrize("seed", range(1000, 1300))
def test_eight_members_converge_under_faults(seed: int) -> None:
    check(sim.run(seed, n=8))


@pytest.mark.parametrize("seed", range(2000, 2100))
def test_eight_members_over_real_stores_converge_under_faults(seed: int) -> None:
    check(sim.run(seed, n=8, store=True))


@pytest.mark.parametrize("seed", range(2000, 2004))
def test_fifty_members_over_real_stores_converge_under_faults(seed: int) -> None:
    check(sim.run(seed, n=50, store=True))


def test_a_store_backed_run_makes_state_transfers() -> None:
    """Truncated store logs: state transfers go through the daemon's install path."""
    assert sum(sim.run(seed, n=8, store=True).transfers for seed in range(1000, 1020)) > 0


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
