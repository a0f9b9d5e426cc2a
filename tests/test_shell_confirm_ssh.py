"""``commit confirmed`` on three real daemons, through the real OpenSSH client: a
confirmation in time keeps the commit; an unconfirmed one is rolled back everywhere by
the cluster itself, by another member when its origin is gone, keeping later work of
others; ``--probe links`` and ``--probe targets`` roll back at once.
``confirm_minute`` (test-only) makes a minute last ``MINUTE`` seconds."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterd.dev.testbed import Machine, Testbed
from tests.test_shell_rollback_ssh import run, settz
from tests.test_shell_ssh import ssh

PING = 0.5
MINUTE = 2.0  # seconds in one minute of commit confirmed


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Testbed]:
    with Testbed(tmp_path, 3, ping=PING, confirm_minute=MINUTE) as bed:
        bed.start()
        bed.wait(bed.linked, what="links")
        yield bed


def paris_then_tokyo(trio: Testbed, minutes: int) -> float:
    """Paris committed plainly, then Tokyo confirmed; the deadline."""
    a = trio.machines[0]
    run(a, "clustermode cluster; settz set timezone=Europe/Paris; commit paris")
    run(a, f"clustermode cluster; settz set timezone=Asia/Tokyo; commit confirmed {minutes} tokyo")
    [pending] = a.status()["confirms"]
    assert pending["minutes"] == minutes
    return float(pending["deadline"])


def machine_tz(m: Machine, host: str) -> object:
    return m.op("get", feature="settz", mode=f"machine:{host}")["value"]


def test_a_confirmation_in_time_keeps_the_commit(trio: Testbed) -> None:
    _, b, c = trio.machines
    deadline = paris_then_tokyo(trio, 3)
    trio.wait(lambda: b.status()["confirms"] != [], what="the pending row on b")
    assert "Commit confirmed: no rollback is pending." in run(b, "confirm")  # any member
    time.sleep(max(0.0, deadline + 2 * PING - time.time()) + 0.5)
    for m in trio.machines:
        assert settz(m) == {"timezone": "Asia/Tokyo"}
        assert m.status()["confirms"] == []
    [last] = json.loads(run(c, "commitdetail 1 --json"))
    assert last["comment"] == "confirm"


def test_unconfirmed_it_is_rolled_back_everywhere_keeping_later_work(trio: Testbed) -> None:
    a, b, c = trio.machines
    deadline = paris_then_tokyo(trio, 2)
    assert "Confirm by" in run(a, "status")
    trio.wait(lambda: b.status()["confirms"] != [], what="the pending row on b")
    # Another member's later commit to another unit (the control socket's: it does not
    # confirm, as only the shell's commit and confirm do): kept by the rollback.
    b.edit({"do": "set_record", "feature": "settz", "mode": f"machine:{c.hostname}",
            "value": {"timezone": "UTC"}})  # fmt: skip
    for m in trio.machines:
        trio.wait(lambda m=m: settz(m) == {"timezone": "Europe/Paris"}, what=f"paris on {m}")
    assert time.time() <= deadline + 2 * PING + 0.5  # (+ the last look's round trip)
    trio.wait(trio.converged, what="convergence")
    for m in trio.machines:
        assert machine_tz(m, c.hostname) == {"timezone": "UTC"}
        assert m.status()["confirms"] == []
    [made] = json.loads(run(c, "commitdetail 1 --json"))
    assert made["user"] == "clusterd" and made["comment"].startswith("rollback of")


def test_another_member_rolls_back_when_the_origin_is_gone(trio: Testbed) -> None:
    a, b, c = trio.machines
    deadline = paris_then_tokyo(trio, 3)
    trio.wait(lambda: all(m.status()["confirms"] for m in (b, c)), what="the row on b and c")
    a.stop(signal.SIGKILL)
    for m in (b, c):
        trio.wait(lambda m=m: settz(m) == {"timezone": "Europe/Paris"}, what=f"paris on {m}")
    assert time.time() <= deadline + 2 * PING + 0.5
    [made] = json.loads(run(c, "commitdetail 1 --json"))
    first = min(b, c, key=lambda m: m.serial)  # the smallest serial acts first
    assert made["user"] == "clusterd" and made["origin"] == first.hostname


def test_probe_links_rolls_back_at_once_when_a_link_is_lost(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=1.0, confirm_minute=MINUTE) as bed:
        bed.start()
        bed.wait(bed.linked, what="links")
        a, b, c = bed.machines
        run(a, "clustermode cluster; settz set timezone=Europe/Paris; commit paris")
        run(a, "clustermode cluster; settz set timezone=Asia/Tokyo; "
               "commit confirmed --probe links 30 tokyo")  # fmt: skip
        bed.wait(lambda: all(m.status()["confirms"] for m in (b, c)), what="the row on b, c")
        c.stop(signal.SIGKILL)  # within 3 ping intervals: a and b lose their link to c
        started = time.time()
        for m in (a, b):
            bed.wait(lambda m=m: settz(m) == {"timezone": "Europe/Paris"}, what=f"paris on {m}")
        assert time.time() - started < 10  # long before the deadline (60 s)
        [made] = json.loads(run(b, "commitdetail 1 --json"))
        assert made["user"] == "clusterd" and "probe failed: links lost after it" in made["comment"]


CHECKER = """import sys
text = open(sys.argv[1]).read()
if "Tokyo" in text:
    print("Tokyo is refused here")
    sys.exit(1)
"""


def rendered(live: Path) -> str | None:
    return (live / "tz.txt").read_text() if (live / "tz.txt").exists() else None


def test_probe_targets_rolls_back_at_once_when_a_target_fails(tmp_path: Path) -> None:
    checker, template, live = tmp_path / "check.py", tmp_path / "tz.j2", tmp_path / "tz"
    checker.write_text(CHECKER)
    template.write_text("{{ (values.settz or {}).get('timezone', '') }}\n")
    with Testbed(tmp_path, 3, ping=PING, confirm_minute=MINUTE) as bed:
        a, b, c = bed.machines
        (c.dir / "targets.d").mkdir()
        (c.dir / "targets.d" / "tz.toml").write_text(f"""
[[target]]
name = "tz"
templates = {{ "tz.txt" = "{template}" }}
features = ["settz"]
path = "{live}"
validate = "{sys.executable} {checker} {{staging}}/tz.txt"
wait = "0"
""")  # fmt: skip
        bed.start()
        bed.wait(bed.linked, what="links")
        run(a, "clustermode cluster; settz set timezone=Europe/Paris; commit paris")
        bad = ssh(a, "clustermode cluster; settz set timezone=UTC; commit confirmed --probe mesh 5")
        assert bad.returncode == 2 and "--probe takes links, targets or both" in bad.stdout
        assert a.status()["confirms"] == []  # (nothing committed)

        # A value the target takes: pending until confirmed, whatever the target did.
        run(a, "clustermode cluster; settz set timezone=Europe/Berlin; "
               "commit confirmed --probe targets 30 berlin")  # fmt: skip
        [berlin] = a.status()["confirms"]
        assert berlin["probe"] == "targets"
        bed.wait(lambda: rendered(live) == "Europe/Berlin\n", what="berlin on c")
        time.sleep(4 * PING)
        for m in bed.machines:
            assert [r["commit"] for r in m.status()["confirms"]] == [berlin["commit"]]
            assert settz(m) == {"timezone": "Europe/Berlin"}
        run(b, "confirm")
        bed.wait(lambda: all(m.status()["confirms"] == [] for m in bed.machines), what="confirmed")

        # A value c's target refuses: c rolls it back at once, on every member.
        run(a, "clustermode cluster; settz set timezone=Asia/Tokyo; "
               "commit confirmed --probe links,targets 30 tokyo")  # fmt: skip
        started = time.time()
        [tokyo] = a.status()["confirms"]
        assert tokyo["probe"] == "links,targets"
        for m in bed.machines:
            bed.wait(lambda m=m: settz(m) == {"timezone": "Europe/Berlin"}, what=f"berlin on {m}")
            bed.wait(lambda m=m: m.status()["confirms"] == [], what=f"no row on {m}")
        assert time.time() - started < 10  # long before the deadline (60 s)
        [made] = json.loads(run(b, "commitdetail 1 --json"))
        assert made["user"] == "clusterd" and made["origin"] == c.hostname
        assert made["comment"].startswith(
            f"rollback of {tokyo['commit']}: probe failed: target tz failed on {c.hostname} "
            "(validate: "
        ), made["comment"]
        assert "Tokyo is refused here" in made["comment"]
        assert rendered(live) == "Europe/Berlin\n"  # (Tokyo never went live)
