"""What a person sees through the real OpenSSH client of a member it has no link to
(issue 17, item 10): LIST flags it, and clustercheck names a refusal's reason rather
than calling a member that tried to link "disconnected"."""

from __future__ import annotations

from pathlib import Path

from clusterd.dev.testbed import Machine, Testbed
from clusterd.node import config as cfg
from tests.test_shell_ssh import ssh


def state_of(m: Machine, hostname: str) -> str:
    return next(str(p["state"]) for p in m.status()["peers"] if p["hostname"] == hostname)


def listed(m: Machine) -> list[str]:
    done = ssh(m, "clustermode cluster; clusterconfig list")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_list_flags_a_stopped_member_and_one_disconnected_on_purpose(tmp_path: Path) -> None:
    with Testbed(tmp_path, 3, ping=0.5) as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b, c = bed.machines
        rows = [f"Machine {m.hostname} (Serial #: {m.serial})" for m in bed.machines]
        assert set(rows) <= set(listed(a))  # all linked: the reference's lines, as they were
        c.stop()
        assert ssh(b, "clusterconfig disconnect").returncode == 0
        bed.wait(lambda: state_of(a, c.hostname) != "up", what="a sees c go")
        bed.wait(lambda: state_of(a, b.hostname) == "disconnected", what="a sees b leave")
        lines = listed(a)
        assert rows[0] in lines  # the login host: never flagged
        assert f"{rows[1]} [disconnected on purpose]" in lines
        assert f"{rows[2]} [disconnected]" in lines


def test_a_member_refused_for_its_version_is_named_so(tmp_path: Path) -> None:
    """b still holds a's DISCONNECT flag when a, upgraded, reconnects and is refused:
    b's clustercheck used to say a "is disconnected"."""
    with Testbed(tmp_path, 2, ping=0.5, software_version="1.0") as bed:
        bed.start()
        bed.wait(bed.linked, what="linked")
        a, b = bed.machines
        assert ssh(a, "clusterconfig disconnect").returncode == 0
        a.stop()
        a.config = cfg.save(a.config, software_version="2.0")
        a.start()
        assert ssh(a, "clusterconfig reconnect").returncode == 1
        bed.wait(lambda: state_of(b, a.hostname) == "refused", what="b refuses a")
        versions = (f"software versions differ: {a.hostname} runs 2.0, {b.hostname} runs "
                    "1.0; members must run the same version")  # fmt: skip
        checked = ssh(b, "clustermode cluster; clustercheck")
        assert checked.returncode == 1
        assert (f"{a.hostname} could not be checked: its link was refused: {versions}"
                in checked.stdout.splitlines()), checked.stdout  # fmt: skip
        assert "disconnected" not in checked.stdout
        checked = ssh(a, "clustermode cluster; clustercheck")
        assert (f"{b.hostname} could not be checked: refused by {b.hostname}: {versions}"
                in checked.stdout.splitlines()), checked.stdout  # fmt: skip
        assert f"Machine {a.hostname} (Serial #: {a.serial}) [disconnected: link refused]" in (
            listed(b)
        )
