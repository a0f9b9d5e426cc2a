"""``commit confirmed`` and ``confirm`` in the shell, in-process with scripted answers:
the prompt, confirming, re-issuing, bad MINUTES, and the daemon's own rollback at the
deadline (``Confirms.tick``, here on a standalone store: no links)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from clusterd.core import confirm
from clusterd.core.errors import StoreError
from clusterd.node.daemon import Daemon
from clusterd.schema.validation import InvalidSetting
from clusterd.services.applier import Applier, Failure
from clusterd.services.targetconfig import Target
from tests.shellhelp import Term
from tests.test_shell_rollback import in_cluster_mode, tz

CONFIRM_BY = re.compile(r"\(Cluster americas\) \[Confirm by \d\d:\d\d(:\d\d)?\]> ")


def rows(d: Daemon) -> list[confirm.Pending]:
    return confirm.pending(d.store.state)


async def test_the_prompt_shows_the_deadline_and_confirm_clears_it(ny: Term) -> None:
    await in_cluster_mode(ny)
    assert "Confirm" not in ny.prompt
    await ny.ok("settz set timezone=Asia/Tokyo")
    out = await ny.ok("commit confirmed 5 tokyo")
    assert "Rolled back at" in out and "(5 min) unless confirmed" in out
    [row] = rows(ny.daemon)
    assert row.minutes == 5 and row.deadline == pytest.approx(time.time() + 300, abs=5)
    assert CONFIRM_BY.fullmatch(ny.prompt), ny.prompt
    [listed] = (await ny.daemon.status())["confirms"]
    assert (listed["commit"], listed["user"], listed["minutes"]) == (row.key, "admin", 5)
    assert "Commit confirmed: no rollback is pending." in await ny.ok("confirm")
    assert rows(ny.daemon) == [] and "Confirm" not in ny.prompt
    assert tz(ny.daemon) == "Asia/Tokyo"
    assert "No confirmed commit is waiting." in await ny.ok("confirm")


async def test_a_plain_commit_confirms_with_or_without_changes(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed", "")  # (asks a comment, as commit does)
    assert rows(ny.daemon)[0].minutes == 10  # the default
    await ny.ok("settz set timezone=Europe/Paris")
    out = await ny.ok("commit paris")
    assert "Commit confirmed: no rollback is pending." in out and rows(ny.daemon) == []
    await ny.ok("settz set timezone=UTC")
    await ny.ok("commit confirmed 3 utc")
    assert "Commit confirmed" in await ny.ok("commit")  # nothing pending: confirms
    assert rows(ny.daemon) == [] and tz(ny.daemon) == "UTC"
    assert "There are no changes to commit." in await ny.ok("commit")


async def test_the_probe_is_kept_in_the_row(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed --probe links 5 tokyo")
    [row] = rows(ny.daemon)
    assert (row.probe, row.minutes) == ("links", 5)
    assert (await ny.daemon.status())["confirms"][0]["probe"] == "links"
    assert ny.daemon.store.commit_log(1)[0].comment == "tokyo"
    await ny.ok("settz set timezone=Europe/Paris")
    await ny.ok("commit confirmed --probe targets,links 5 paris")  # (either order)
    assert [r.probe for r in rows(ny.daemon)] == ["links", "links,targets"]


async def test_reissuing_extends_every_deadline(ny: Term) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed 1 tokyo")
    first = rows(ny.daemon)[0].deadline
    await ny.ok("settz set timezone=Europe/Paris")
    await ny.ok("commit confirmed 30 paris")
    assert [r.deadline for r in rows(ny.daemon)] == [rows(ny.daemon)[1].deadline] * 2
    assert rows(ny.daemon)[0].deadline > first + 1000
    await ny.ok("commit confirmed 60")  # nothing pending: the deadline moves again
    assert len(rows(ny.daemon)) == 2
    assert rows(ny.daemon)[0].deadline == pytest.approx(time.time() + 3600, abs=5)


@pytest.mark.parametrize(
    "minutes",
    [
        "0",
        "65536",
        "soon",
        "-1",
        "1.5",
        "--probe",
        "--probe mesh 5",
        "--probe links,links 5",
        "--probe links, 5",
        "--probe links targets",
    ],
)
async def test_bad_minutes_are_a_usage_error(ny: Term, minutes: str) -> None:
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Asia/Tokyo")
    status, out = await ny.run(f"commit confirmed {minutes}")
    assert status == 2, out
    usage = "Usage: commit confirmed [--probe links|targets|links,targets] [MINUTES [COMMENT]]"
    assert usage in out
    assert ny.pending == 1 and rows(ny.daemon) == []  # nothing committed


async def test_the_daemon_rolls_back_at_the_deadline(ny: Term) -> None:
    d = ny.daemon
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Europe/Paris")
    await ny.ok("commit paris")
    d.config = d.config.model_copy(update={"confirm_minute": 0.2})
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed 1 tokyo")
    d.confirms.tick()  # before the deadline: nothing
    assert tz(d) == "Asia/Tokyo"
    await asyncio.sleep(0.3)
    d.confirms.tick()
    await asyncio.sleep(0.1)
    assert tz(d) == "Europe/Paris" and rows(d) == []
    made = d.store.commit_log(1)[0]
    assert made.user == "clusterd"
    assert made.comment.startswith(f"rollback of {d.config.serial}:")
    assert made.comment.endswith("not confirmed in 1 min")
    d.confirms.tick()  # nothing left: nothing more
    assert d.store.commit_log(1)[0].id == made.id
    status, out = await ny.run("rollback 1", "y")  # clusterd's, but an admin may undo it
    assert status == 0, out
    assert tz(d) == "Asia/Tokyo" and rows(d) == []


async def test_a_failed_rollback_waits_for_the_store_or_alerts_once(
    ny: Term, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ny.daemon
    await in_cluster_mode(ny)
    d.config = d.config.model_copy(update={"confirm_minute": 0.01})
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed 1 tokyo")
    real, failures = d.store.commit, [StoreError("disk full"), InvalidSetting(["bad value"])]

    def failing(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(d.store, "commit", failing)
    await asyncio.sleep(0.05)
    d.confirms.tick()  # the store is down: tried again later
    await asyncio.sleep(0.05)
    assert len(rows(d)) == 1 and not d.alerts
    d.confirms.tick()  # a value refused: one alert, not tried again
    await asyncio.sleep(0.05)
    assert len(rows(d)) == 1 and "bad value" in d.alerts[-1]["text"]
    d.confirms.tick()
    await asyncio.sleep(0.05)
    assert len(rows(d)) == 1 and tz(d) == "Asia/Tokyo" and len(d.alerts) == 1
    await ny.ok("confirm")  # an admin ends it
    assert rows(d) == []


async def test_probe_targets_is_decided_by_each_targets_first_apply_holding_it(ny: Term) -> None:
    """``Confirms.target_done`` with real appliers of the daemon's targets, their state
    set as an apply leaves it: only a target that reads what the commit wrote, in an
    apply that holds it, and only its first such apply, decides."""
    d = ny.daemon
    await in_cluster_mode(ny)
    await ny.ok("settz set timezone=Europe/Paris")
    await ny.ok("commit paris")
    await ny.ok("settz set timezone=Asia/Tokyo")
    await ny.ok("commit confirmed --probe targets 5 tokyo")
    [row] = rows(d)
    cid = row.commit.id

    def ended(name: str, reads: str, failed: bool, seq: int) -> Applier:
        applier = Applier(Target(name=name, reload="true", features=[reads]), d.targets)
        applier.including = {cid.origin: seq}
        applier.state = "failed" if failed else "applied"
        applier.failure = Failure("reload", "true exited 1: no", None) if failed else None
        return applier

    d.confirms.target_done(ended("ntp", "ntpconfig", True, cid.seq))  # reads no settz
    d.confirms.target_done(ended("tz", "settz", True, cid.seq - 1))  # an older commit's
    d.confirms.target_done(ended("tz", "settz", False, cid.seq))  # applied: decided
    d.confirms.target_done(ended("tz", "settz", True, cid.seq + 1))  # (a later apply)
    d.confirms.tick()
    await asyncio.sleep(0.1)
    assert rows(d) == [row] and tz(d) == "Asia/Tokyo"
    d.confirms.target_done(ended("tz2", "settz", True, cid.seq))
    d.confirms.tick()
    await asyncio.sleep(0.1)
    assert rows(d) == [] and tz(d) == "Europe/Paris"
    made = d.store.commit_log(1)[0]
    assert made.user == "clusterd" and made.comment == (
        f"rollback of {row.key}: probe failed: target tz2 failed on {d.config.hostname} "
        "(reload: true exited 1: no)"
    )
