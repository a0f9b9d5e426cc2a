"""Targets on running members (no service needed: the commands are small scripts).

* a burst of commits gives exactly one reload per target (debounce ``wait``);
* a map emptied by a commit is refused until ``target force``;
* a hand edit of the live files shows as drift;
* 100 targets whose reload hangs delay neither the links nor the commits; the daemon
  kills them at their time-out, and any still running when it stops;
* a bad targets.d file stops ``clusterd run`` with the file and the key.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clusterd.dev.testbed import Machine, Testbed
from tests.test_security_load import Probe

UNSUB = {"do": "set_row", "feature": "unsubscribe", "mode": "cluster"}
COUNTER = "import sys\nwith open(sys.argv[1], 'a') as fh:\n    fh.write('reload\\n')\n"


def declare(m: Machine, text: str) -> None:
    (m.dir / "targets.d").mkdir(exist_ok=True)
    (m.dir / "targets.d" / "test.toml").write_text(text)


def target(m: Machine, name: str) -> dict[str, object]:
    return dict(m.status()["targets"][name])


def reloads(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_one_reload_per_burst_guards_force_and_drift(tmp_path: Path) -> None:
    counted, live, pf = tmp_path / "reloads.log", tmp_path / "live", tmp_path / "pf"
    template, counter = tmp_path / "list.j2", tmp_path / "counter.py"
    counter.write_text(COUNTER)
    template.write_text("{% for a in values.unsubscribe or {} %}{{ a }}\n{% endfor %}")
    with Testbed(tmp_path, 2) as bed:
        a, b = bed.machines
        declare(
            b,
            f"""
[[target]]
name = "list"
templates = {{ "unsubscribed.txt" = "{template}" }}
features = ["unsubscribe"]
path = "{live}"
reload = "{sys.executable} {counter} {counted}"
wait = "0.5s:3s"

[[target]]
name = "pf"
renderer = "postfix"
path = "{pf}"
max_shrink = 0.5
""",
        )
        bed.start()
        bed.wait(bed.linked, what="linked")
        bed.wait(lambda: target(b, "list")["state"] == "applied", what="applied at start")
        at_start = reloads(counted)
        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        for i in range(20):  # a burst: one commit each, well within the 0.5 s of quiet
            a.edit({**UNSUB, "row": f"u{i}@example.com", "value": {"comment": ""}})
        bed.wait(lambda: (live / "unsubscribed.txt").exists()
                 and len((live / "unsubscribed.txt").read_text().splitlines()) == 20,
                 what="the burst rendered")  # fmt: skip
        time.sleep(1.5)  # (any later reload would have come by now)
        assert reloads(counted) == at_start + 1, "one reload for the burst"
        assert target(b, "list")["applied"] == f"SER-000:{a.status()['vv']['SER-000']}"
        # The map of 20 addresses emptied: refused, the live map kept, until forced.
        bed.wait(lambda: "u19@example.com" in (pf / "unsubscribe").read_text(), what="pf")
        a.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
        bed.wait(lambda: target(b, "pf")["state"] == "failed", what="the guard refused")
        error = target(b, "pf")["error"]
        assert isinstance(error, dict) and error["stage"] == "guard"
        assert "map unsubscribe would go from 20 to 0 entries" in error["text"]
        assert "u19@example.com" in (pf / "unsubscribe").read_text()
        forced = b.op("target", action="force", name="pf")
        assert forced["forced"] is True
        bed.wait(lambda: target(b, "pf")["state"] == "applied", what="forced through")
        assert "u19@example.com" not in (pf / "unsubscribe").read_text()
        # A hand edit of the live files is drift.
        done = f"SER-000:{a.status()['vv']['SER-000']}"
        bed.wait(lambda: target(b, "list")["applied"] == done, what="list at the last commit")
        assert target(b, "list")["drift"] is False
        (live / "unsubscribed.txt").write_text("edited by hand\n")
        bed.wait(lambda: target(b, "list")["drift"] is True, timeout=15, what="drift seen")
        # Unknown targets and actions are refused with the reason.
        assert "no target 'nosuch'" in b.refused("target", action="force", name="nosuch")
        assert "unknown target action" in b.refused("target", action="explode", name="pf")
        assert "'back' is a whole number" in b.refused("target", action="rollback", name="pf",
                                                       back="2; rm -rf /")  # fmt: skip
        assert "no 40 back" in b.refused("target", action="rollback", name="pf", back=40)
        rolled = b.op("target", action="rollback", name="pf")  # the generation before force
        assert rolled["reloaded"] is True and "u19@example.com" in (pf / "unsubscribe").read_text()


def test_a_hundred_hanging_reloads_delay_neither_links_nor_commits(tmp_path: Path) -> None:
    with Testbed(tmp_path, 2, ping=1.0) as bed:
        a, b = bed.machines
        declare(
            b,
            "".join(
                f"""
[[target]]
name = "hang{i}"
features = ["settz"]
reload = "sleep 60"
timeout = 3
wait = "0"
"""
                for i in range(100)
            ),
        )
        bed.start()
        bed.wait(bed.linked, what="linked")
        with Probe(b) as probe:
            started = time.monotonic()
            for zone in ("Asia/Tokyo", "Europe/Paris", "UTC"):
                a.edit({"do": "define", "feature": "settz", "mode": "cluster",
                        "start": "defaults"} if zone == "Asia/Tokyo" else
                       {"do": "set_record", "feature": "settz", "mode": "cluster",
                        "value": {"timezone": zone}})  # fmt: skip
            bed.wait(bed.converged, what="converged while 100 reloads hang")
            assert time.monotonic() - started < 5
            bed.wait(lambda: all(t["error"] for t in b.status()["targets"].values()),
                     timeout=30, what="every hanging reload killed at its time-out")  # fmt: skip
        assert probe.down == [] and probe.dropped_alerts == [], (probe.down, probe.failed)
        assert probe.slowest < 0.5, probe.slowest
        texts = {t["error"]["text"] for t in b.status()["targets"].values()}
        assert texts == {"sleep timed out after 3 s: killed"}
        assert b.proc is not None and b.proc.poll() is None
        b.stop()  # reloads still hanging are killed with the daemon, not left behind
        left = subprocess.run(["pgrep", "-f", "^sleep 60$"], capture_output=True, text=True)
        assert left.stdout.strip() == "", "a reload outlived the daemon"


def test_a_bad_targets_file_stops_the_daemon_with_its_name_and_key(tmp_path: Path) -> None:
    bed = Testbed(tmp_path, 1, seed=False)
    (m,) = bed.machines
    declare(m, '[[target]]\nname = "x"\nrenderer = "sendmail"\npath = "/tmp/x"\n')
    done = subprocess.run([sys.executable, "-m", "clusterd", "run", "--data-dir", str(m.dir)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "test.toml: target 1: renderer: Value error, no built-in renderer 'sendmail'" in (
        done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr
    declare(m, '[[target]]\nname = "x"\nreload = "true"\nfeatures = ["nosuch"]\n')
    done = subprocess.run([sys.executable, "-m", "clusterd", "run", "--data-dir", str(m.dir)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "no feature 'nosuch'" in done.stderr, done.stderr
    assert not (m.dir / "control.sock").exists()  # refused before anything started


def test_canary_holds_the_group_back_force_passes_and_a_stopped_canary_is_replaced(
    tmp_path: Path,
) -> None:
    """Three members with the same canary target; its probe fails when the rendered list
    names ``poison``.  m0 (lowest serial) is the canary: a poisoned list goes live there
    only, is reverted, and holds m1 and m2 back; ``target force`` applies on one member
    at once; with m0 stopped, m1 is the canary and m2 follows it."""
    template = tmp_path / "list.j2"
    template.write_text("{% for a in values.unsubscribe or {} %}{{ a }}\n{% endfor %}")
    live = {i: tmp_path / f"live{i}" for i in range(3)}
    with Testbed(tmp_path, 3) as bed:
        for i, m in enumerate(bed.machines):
            declare(m, f"""
[[target]]
name = "list"
templates = {{ "unsubscribed.txt" = "{template}" }}
features = ["unsubscribe"]
path = "{live[i]}"
probe = "sh -c '! grep -q poison {{live}}/unsubscribed.txt'"
settle = 0
wait = "0.1s"
canary = true
canary_delay = 0.3
""")  # fmt: skip
        bed.start()
        bed.wait(bed.linked, what="linked")
        m0, m1, m2 = bed.machines
        m2.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"},
                {**UNSUB, "row": "ok@example.com", "value": {"comment": ""}})  # fmt: skip
        first = f"SER-002:{m2.status()['vv']['SER-002']}"
        for m in bed.machines:
            bed.wait(lambda m=m: target(m, "list")["applied"] == first,
                     what=f"the list on {m.hostname}")  # fmt: skip
        m2.edit({**UNSUB, "row": "poison@example.com", "value": {"comment": ""}})
        poison = f"SER-002:{m2.status()['vv']['SER-002']}"
        for m in (m1, m2):
            bed.wait(lambda m=m: (target(m, "list")["error"] or {}).get("stage") == "canary",
                     what=f"{m.hostname} held back")  # fmt: skip
        assert (target(m0, "list")["error"] or {}).get("stage") == "probe"
        held = target(m1, "list")["error"]
        assert held["commit"] == poison and f"the canary {m0.hostname} failed" in held["text"]
        for i in range(3):
            assert "poison" not in (live[i] / "unsubscribed.txt").read_text()
        # Forced, m1 applies without the canary (and its own probe reverts it).
        assert m1.op("target", action="force", name="list")["forced"] is True
        bed.wait(lambda: (target(m1, "list")["error"] or {}).get("stage") == "probe",
                 what="m1 applied, forced")  # fmt: skip
        # m0 stopped: m1 is the canary now, m2 follows it.
        m0.stop()
        bed.wait(lambda: bed.linked([m1, m2]) and not any(
            p["state"] == "up" for p in m2.status()["peers"] if p["hostname"] == m0.hostname),
            what="m0 gone")  # fmt: skip
        m2.edit({"do": "delete_row", "feature": "unsubscribe", "mode": "cluster",
                 "row": "poison@example.com"})  # fmt: skip
        clean = f"SER-002:{m2.status()['vv']['SER-002']}"
        for m in (m1, m2):
            bed.wait(lambda m=m: target(m, "list")["applied"] == clean,
                     what=f"the clean list on {m.hostname}")  # fmt: skip
        assert target(m2, "list")["applied_at"] >= target(m1, "list")["applied_at"]
