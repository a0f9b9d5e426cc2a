"""Real Postfix instances driven by targets of running members, with real mail on
loopback (and, at the end, a relay that wants a login inside TLS: the route's
"outgoing" credentials).

Three members; m1 and m2 each have a Postfix target (``clusterd.dev.postfixbed``: the
built-in renderer, ``clusterd postfix-check`` in staging, ``postfix reload``, an SMTP
probe) and their own Postfix instance on 127.0.0.1.  Sinks A and B are SMTP servers
(aiosmtpd).  An admin on m0 routes ``example.org`` to A at cluster level (mail through
both Postfixes reaches A), m1's group overrides it to B (mail through m1 reaches B,
through m2 still A), a bad value is refused by validation while Postfix keeps running
with the last good files, the next good commit applies, and a value that fails the
probe is reverted.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from clusterd.dev import postfixbed
from clusterd.dev.testbed import Machine, Testbed, free_port
from clusterd.node import identity
from tests.test_alertmail_processes import Sink
from tests.test_watch import Lines

pytestmark = pytest.mark.skipif(
    not postfixbed.available(),
    reason="needs Postfix (.ci/run installs it) and root (Postfix's own user runs it)",
)


def sink() -> tuple[Sink, Controller]:
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return handler, controller


def mail(port: int, to: str, subject: str, address: str = "127.0.0.1") -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", to, subject
    msg.set_content("hello")
    with smtplib.SMTP(address, port, timeout=20) as smtp:
        smtp.send_message(msg)


def received(s: Sink, subject: str) -> bool:
    return any(m["Subject"] == subject for _, m in s.mails)


def status(m: Machine) -> dict[str, Any]:
    return dict(m.status()["targets"]["postfix"])


def applied(bed: Testbed, commit: str, *members: int) -> None:
    """Until the targets of ``members`` (m1) say ``commit`` is applied: reloaded, probed."""
    for i in members or (1,):
        m = bed.machines[i]
        bed.wait(lambda m=m: status(m)["applied"] == commit, timeout=30,
                 what=f"{commit} applied on {m.hostname}")  # fmt: skip


def route(port: int) -> dict[str, Any]:
    return {"destinations": [{"host": "127.0.0.1", "port": port, "priority": 0}]}


@dataclass
class Mail:
    """Three members: m0 (newyork) commits; m1 (chicago) and m2 (losangeles) each run
    a Postfix through a target; sinks A and B receive."""

    bed: Testbed
    live: dict[int, Path]  # member index -> its target's live link
    port: dict[int, int]  # member index -> its Postfix's SMTP port
    a: tuple[Sink, int]
    b: tuple[Sink, int]


@contextlib.contextmanager
def postfixes(tmp_path: Path, canary: bool) -> Iterator[Mail]:
    """m1 and m2 with a Postfix each.  Without canary: on 127.0.0.1, a port each, the
    listener at machine level.  With it: on 127.0.0.11 and 127.0.0.12, one port and one
    listener at cluster level (a change of it is a change for everyone)."""
    (a, ca), (b, cb) = sink(), sink()
    bed = Testbed(tmp_path, 3)
    services, live = [], {}
    address = {1: "127.0.0.11", 2: "127.0.0.12"} if canary else {1: "127.0.0.1", 2: "127.0.0.1"}
    shared = free_port()
    port = {i: shared if canary else free_port() for i in (1, 2)}
    for i in (1, 2):
        services.append(Path(tempfile.mkdtemp(prefix="clusterd-postfix-", dir="/tmp")))
        os.chmod(services[-1], 0o755)
        live[i] = postfixbed.declare(bed.machines[i], services[-1], port[i], address=address[i],
                                     canary=canary)  # fmt: skip
    try:
        bed.start()
        bed.wait(bed.linked, what="linked")
        if canary:
            postfixbed.shared_listener(bed.machines, address, shared)
        else:
            for i in (1, 2):
                postfixbed.listen(bed.machines[i], port[i])
        for i in (1, 2):
            m = bed.machines[i]
            bed.wait(lambda m=m, i=i: status(m)["state"] == "applied" and status(m)["applied"]
                     and _greets(port[i], address[i]), timeout=60,
                     what=f"Postfix started by {m.hostname}'s target")  # fmt: skip
        yield Mail(bed, live, port, (a, ca.port), (b, cb.port))
    finally:
        bed.stop()
        for path in live.values():
            postfixbed.stop(path)
        ca.stop()
        cb.stop()
        for service in services:
            shutil.rmtree(service, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Mail]:
    with postfixes(tmp_path, canary=False) as mail_bed:
        yield mail_bed


def test_a_route_committed_anywhere_reaches_postfix_and_a_bad_value_never_does(
    cluster: Mail,
) -> None:
    bed, live = cluster.bed, cluster.live[1]
    listen, other = cluster.port[1], cluster.port[2]
    (a, a_port), (b, b_port) = cluster.a, cluster.b
    m0, m1, _ = bed.machines
    # Step 1: a route at cluster level, committed on m0, carries mail through both
    # Postfixes (m1, m2) to sink A.
    m0.edit({"do": "define", "feature": "smtproutes", "mode": "cluster", "start": "empty"},
            {"do": "set_row", "feature": "smtproutes", "mode": "cluster", "row": "example.org",
             "value": route(a_port)})  # fmt: skip
    applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}", 1, 2)
    assert f"example.org smtp:[127.0.0.1]:{a_port}" in (live / "transport").read_text()
    mail(listen, "bob@example.org", "step 1 via m1")
    mail(other, "bob@example.org", "step 1 via m2")
    bed.wait(lambda: received(a, "step 1 via m1") and received(a, "step 1 via m2"),
             timeout=30, what="step 1 at sink A through both")  # fmt: skip
    # Step 2: the group Paris (m1's) overrides the route to sink B; m2 keeps A.
    m0.op("addgroup", group="Paris")
    m0.op("setgroup", machine=m1.hostname, group="Paris")
    m0.edit({"do": "define", "feature": "smtproutes", "mode": "group:Paris", "start": "empty"},
            {"do": "set_row", "feature": "smtproutes", "mode": "group:Paris",
             "row": "example.org", "value": route(b_port)})  # fmt: skip
    applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}")  # (reloaded and probed)
    assert f"[127.0.0.1]:{b_port}" in (live / "transport").read_text()
    assert f"[127.0.0.1]:{a_port}" in (cluster.live[2] / "transport").read_text()
    mail(listen, "bob@example.org", "step 2 via m1")
    mail(other, "bob@example.org", "step 2 via m2")
    bed.wait(lambda: received(b, "step 2 via m1") and received(a, "step 2 via m2"),
             timeout=30, what="step 2: m1 to B, m2 to A")  # fmt: skip
    assert not received(a, "step 2 via m1") and not received(b, "step 2 via m2")
    # Step 3: a second listener on the same port passes the schema; Postfix's master would
    # fail to bind it.  Validation refuses it: the live files stay, Postfix keeps working.
    good = os.readlink(live)
    before = (Path(good) / "master.cf").read_text()
    me = f"machine:{m1.hostname}"
    m1.edit({"do": "set_row", "feature": "listenerconfig", "mode": me, "row": "Twin",
             "value": {"interface": "Data", "port": listen, "type": "private"}})  # fmt: skip
    bed.wait(lambda: status(m1)["state"] == "failed", timeout=30, what="validation failed")
    failed = status(m1)
    assert failed["error"]["stage"] == "validate"
    assert "defined twice" in failed["error"]["text"]
    assert failed["error"]["commit"] == f"SER-001:{m1.status()['vv']['SER-001']}"
    assert os.readlink(live) == good and (Path(good) / "master.cf").read_text() == before
    assert any(x["kind"] == "target failed" for x in m1.status()["alerts"])
    # clustercheck on m0 names the member whose target failed, and why.
    checked = subprocess.run(identity.local_ssh(m0.config, "clustercheck -j"),
                             capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)  # fmt: skip
    assert checked.returncode == 1, checked.stdout
    facts = [f for f in json.loads(checked.stdout)["facts"] if f["kind"] == "target"]
    assert [(f["member"], f["target"]) for f in facts] == [(m1.hostname, "postfix")]
    assert "failed at validate" in facts[0]["message"] and "defined twice" in facts[0]["message"]
    mail(listen, "bob@example.org", "step 3")
    bed.wait(lambda: received(b, "step 3"), timeout=30, what="mail during the failure")
    # The next good commit applies.
    m1.edit({"do": "delete_row", "feature": "listenerconfig", "mode": me, "row": "Twin"})
    m0.edit({"do": "set_row", "feature": "smtproutes", "mode": "group:Paris",
             "row": "example.org", "value": route(a_port)})  # fmt: skip
    bed.wait(lambda: status(m1)["state"] == "applied"
             and f"[127.0.0.1]:{a_port}" in (live / "transport").read_text(), timeout=30,
             what="the next good commit applied")  # fmt: skip
    assert status(m1)["error"] is None and os.readlink(live) != good
    applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}")
    mail(listen, "bob@example.org", "step 4")
    bed.wait(lambda: received(a, "step 4"), timeout=30, what="step 4 at sink A")
    # Rollback by hand, through the shell over SSH: B is the route again.
    done = subprocess.run(identity.local_ssh(m1.config, "target rollback postfix"),
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is live again" in done.stdout
    assert f"[127.0.0.1]:{b_port}" in (live / "transport").read_text()


def test_a_value_that_passes_validation_but_fails_the_probe_is_reverted(
    cluster: Mail,
) -> None:
    """The listener moved onto a port another server holds: ``postfix check`` has nothing
    against it, but Postfix no longer answers where the probe asks.  Within 5 s the last
    good files are live again, reloaded, and the target says why."""
    bed, live, listen, (_, taken) = cluster.bed, cluster.live[1], cluster.port[1], cluster.a
    m1 = bed.machines[1]
    good = os.readlink(live)
    moved = {"interface": "Data", "port": taken, "type": "private"}
    m1.edit({"do": "set_row", "feature": "listenerconfig", "mode": f"machine:{m1.hostname}",
             "row": "In", "value": moved})  # fmt: skip
    bed.wait(lambda: os.readlink(live) != good, timeout=20, what="the bad files swapped in")
    swapped = time.monotonic()  # (then reloaded; the probe fails)
    bed.wait(lambda: os.readlink(live) == good, timeout=10, what="the good files back")
    assert time.monotonic() - swapped < 5.0
    bed.wait(lambda: (status(m1)["error"] or {}).get("stage") == "probe", what="said why")
    error = status(m1)["error"]
    assert f"127.0.0.1:{listen}" in error["text"] and "reverted to" in error["text"]
    bed.wait(lambda: any(x["kind"] == "target reverted" for x in m1.status()["alerts"]),
             what="the revert alerted")  # fmt: skip
    bed.wait(lambda: _greets(listen), timeout=10, what="Postfix answering again")


# -- canary rollout ------------------------------------------------------------------------


@pytest.fixture
def canaries(tmp_path: Path) -> Iterator[Mail]:
    """m0, the lowest serial, has no Postfix target: m1 is the canary of the (single)
    group."""
    with postfixes(tmp_path, canary=True) as mail_bed:
        yield mail_bed


def test_with_canary_a_value_that_breaks_postfix_reaches_one_member_only(
    canaries: Mail,
) -> None:
    """Step 4 with canary on: a listener moved (``postfix check`` passes, the probe
    fails), committed for the whole cluster, goes live on the canary (m1) only; it is
    reverted there, and m2 holds back and says why.  The next good commit reaches m1
    first, then m2."""
    bed, port = canaries.bed, canaries.port[1]
    m0, m1, m2 = bed.machines
    (a, a_port), (b, b_port) = canaries.a, canaries.b
    # A good change: the canary first, then m2 after it applied and probed.
    m0.edit({"do": "define", "feature": "smtproutes", "mode": "cluster", "start": "empty"},
            {"do": "set_row", "feature": "smtproutes", "mode": "cluster", "row": "example.org",
             "value": route(a_port)})  # fmt: skip
    applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}", 1, 2)
    assert status(m2)["applied_at"] >= status(m1)["applied_at"]
    mail(port, "bob@example.org", "canary: good via m2", "127.0.0.12")
    bed.wait(lambda: received(a, "canary: good via m2"), timeout=30, what="mail through m2")
    # The bad value, for everyone.  m2's live files must never change.
    good = {i: os.readlink(canaries.live[i]) for i in (1, 2)}
    seen_on_m2: set[str] = set()
    m0.edit(postfixbed.listener_edit(a_port))
    bad = f"SER-000:{m0.status()['vv']['SER-000']}"
    deadline = time.monotonic() + 30
    went_live_on_m1 = False
    while time.monotonic() < deadline:
        seen_on_m2.add(os.readlink(canaries.live[2]))
        went_live_on_m1 |= os.readlink(canaries.live[1]) != good[1]
        error = status(m2)["error"] or {}
        if error.get("stage") == "canary" and (status(m1)["error"] or {}).get("stage") == "probe":
            break
        time.sleep(0.05)
    assert went_live_on_m1, "the canary never tried the bad value"
    assert seen_on_m2 == {good[2]}, "the bad value reached m2's live files"
    held = status(m2)
    assert held["state"] == "failed" and held["error"]["commit"] == bad, held
    assert f"the canary {m1.hostname} failed: probe" in held["error"]["text"]
    assert status(m1)["error"]["commit"] == bad
    bed.wait(lambda: os.readlink(canaries.live[1]) == good[1], timeout=10, what="m1 reverted")
    for _ in range(20):  # m2 keeps its files, and serving, while the canary is failed
        assert os.readlink(canaries.live[2]) == good[2] and _greets(port, "127.0.0.12")
        time.sleep(0.1)
    # The next good commit (the listener back, a new route) applies: m1, then m2.
    m0.edit(postfixbed.listener_edit(port),
            {"do": "set_row", "feature": "smtproutes", "mode": "cluster", "row": "example.org",
             "value": route(b_port)})  # fmt: skip
    applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}", 1, 2)
    assert status(m2)["error"] is None and status(m2)["applied_at"] >= status(m1)["applied_at"]
    for i in (1, 2):
        assert f"[127.0.0.1]:{b_port}" in (canaries.live[i] / "transport").read_text()
    mail(port, "bob@example.org", "canary: next via m2", "127.0.0.12")
    bed.wait(lambda: received(b, "canary: next via m2"), timeout=30, what="the next via m2")


def _greets(port: int, address: str = "127.0.0.1") -> bool:
    try:
        with smtplib.SMTP(address, port, timeout=5) as smtp:
            return smtp.noop()[0] == 250
    except OSError:
        return False


# -- invalid values never reach the live files --------------------------------------------

LISTENER = {"interface": "Data", "type": "private"}
ports = st.integers(1, 65535)
bad_values = st.one_of(
    # a second listener on the port the first holds: refused by validation
    st.builds(lambda row: ("listenerconfig", row, "PORT"),
              st.from_regex(r"T[a-z]{1,6}", fullmatch=True)),
    # values the schema refuses at commit
    st.builds(lambda port: ("listenerconfig", "Bad", {"interface": "Data", "port": port}),
              st.one_of(st.integers(max_value=0), st.integers(min_value=65536))),
    st.builds(lambda host: ("smtproutes", "example.org", {"destinations": [{"host": host}]}),
              st.text(st.characters(codec="ascii"), min_size=1, max_size=20)
              .filter(lambda h: not h.replace(".", "").replace("-", "").isalnum())),
    st.builds(lambda name: ("listenerconfig", name, {"interface": "Nowhere", "port": 2600,
                                                     "type": "private"}),
              st.from_regex(r"N[a-z]{1,6}", fullmatch=True)),
)  # fmt: skip


def _invalid_values_never_go_live(mail_bed: tuple[Testbed, Path, int], values: Any) -> None:
    bed, live, port = mail_bed
    (m,) = bed.machines
    me = f"machine:{m.hostname}"
    before = postfix_files(live)
    for feature, row, value in values:
        if value == "PORT":
            value = {**LISTENER, "port": port}
        mode = "cluster" if feature == "smtproutes" else me
        answer = m.ask(
            {
                "op": "edit",
                "edits": [
                    {"do": "set_row", "feature": feature, "mode": mode, "row": row, "value": value}
                ],
            }
        )
        if answer.get("ok"):  # accepted: the target refuses it, and it is taken back
            commit = answer["commit"]
            bed.wait(lambda c=commit: (status(m)["error"] or {}).get("commit") == c,
                     timeout=30, what=f"{commit} refused by the target")  # fmt: skip
            assert status(m)["error"]["stage"] in ("render", "validate")
            m.edit({"do": "delete_row", "feature": feature, "mode": mode, "row": row})
        assert postfix_files(live) == before  # byte for byte
        assert _greets(port)
    bed.wait(lambda: status(m)["error"] is None, timeout=30, what="good again")


def postfix_files(live: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(os.readlink(live)).iterdir())}


@pytest.fixture
def mail_bed(tmp_path: Path) -> Iterator[tuple[Testbed, Path, int]]:
    bed = Testbed(tmp_path, 1)
    service = Path(tempfile.mkdtemp(prefix="clusterd-postfix-", dir="/tmp"))
    os.chmod(service, 0o755)
    port = free_port()
    live = postfixbed.declare(bed.machines[0], service, port)
    try:
        bed.start()
        postfixbed.listen(bed.machines[0], port)
        bed.wait(lambda: status(bed.machines[0])["state"] == "applied", timeout=60,
                 what="Postfix started")  # fmt: skip
        yield bed, live, port
    finally:
        bed.stop()
        postfixbed.stop(live)
        shutil.rmtree(service, ignore_errors=True)


PROPERTY = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow],
                    phases=[Phase.explicit, Phase.generate])  # fmt: skip


@settings(max_examples=3, **PROPERTY)
@given(values=st.lists(bad_values, min_size=5, max_size=8))
def test_invalid_values_never_reach_the_live_files(
    mail_bed: tuple[Testbed, Path, int], values: Any
) -> None:
    """CI's bounded run: 3 lists of 5 to 8 invalid values, on one running member."""
    _invalid_values_never_go_live(mail_bed, values)


@pytest.mark.slow
@settings(max_examples=125, **PROPERTY)
@given(values=st.lists(bad_values, min_size=8, max_size=8))
def test_a_thousand_invalid_values_never_reach_the_live_files(
    mail_bed: tuple[Testbed, Path, int], values: Any
) -> None:
    """The soak: 125 lists of 8, 1,000 invalid values."""
    _invalid_values_never_go_live(mail_bed, values)


# -- outgoing credentials: a relay that wants a login inside TLS ---------------------------

PASSWORD = "s3cret pass:word%"  # (a space, a colon and a percent sign inside)


def tls_context(where: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.example.net")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    (where / "relay.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "relay.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(where / "relay.pem", where / "relay.key")
    return context


class Relay(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.logins: list[tuple[str, bool]] = []

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:  # fmt: skip
        ok = isinstance(data, LoginPassword) and data.password.decode() == PASSWORD
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        return AuthResult(success=ok)


def test_mail_to_a_relay_that_wants_a_login_goes_authenticated_inside_tls(
    cluster: Mail, tmp_path: Path
) -> None:
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=free_port(),
                            tls_context=tls_context(tmp_path), require_starttls=True,
                            auth_required=True, auth_require_tls=True,
                            authenticator=relay.authenticate)  # fmt: skip
    controller.start()
    try:
        bed, live = cluster.bed, cluster.live[1]
        m0 = bed.machines[0]
        m0.edit({"do": "define", "feature": "smtpauthconfig", "mode": "cluster",
                 "start": "empty"},
                {"do": "set_row", "feature": "smtpauthconfig", "mode": "cluster",
                 "row": "relaylogin", "value": {"type": "outgoing", "username": "gateway",
                                                "password": PASSWORD}},
                {"do": "define", "feature": "destconfig", "mode": "cluster",
                 "start": "defaults"},
                {"do": "set_row", "feature": "destconfig", "mode": "cluster",
                 "row": "example.net", "value": {"tls": "required"}},
                {"do": "define", "feature": "smtproutes", "mode": "cluster", "start": "empty"},
                {"do": "set_row", "feature": "smtproutes", "mode": "cluster",
                 "row": "example.net", "value": {
                     "destinations": [{"host": "127.0.0.1", "port": controller.port}],
                     "smtp_auth_profile": "relaylogin"}})  # fmt: skip
        applied(bed, f"SER-000:{m0.status()['vv']['SER-000']}")
        hop = f"[127.0.0.1]:{controller.port}"
        assert f"{hop} gateway:{PASSWORD}" in (live / "sasl_passwd").read_text()
        assert f"{hop} encrypt" in (live / "tls_policy").read_text()
        for name in ("sasl_passwd", "sasl_passwd.db"):
            assert (live / name).stat().st_mode & 0o777 == 0o600, name
        mail(cluster.port[1], "carol@example.net", "authenticated")
        bed.wait(lambda: received(relay, "authenticated"), timeout=60,
                 what="the mail at the relay")  # fmt: skip
        assert ("gateway", True) in relay.logins and all(ok for _, ok in relay.logins)
        # Nobody reads the password back: watch (read-only users may run it) says "set".
        watcher = Lines([sys.executable, "-m", "clusterd", "watch", "--data-dir",
                         str(m0.dir), "--feature", "smtpauthconfig", "--since", "0"])  # fmt: skip
        try:
            entries = watcher.take(1)
            while "relaylogin" not in (entries[-1]["value"] or {}):
                entries += watcher.take(1)
        finally:
            watcher.close()
        assert entries[-1]["value"]["relaylogin"]["password"] == "set"
        assert PASSWORD not in json.dumps(entries)
    finally:
        controller.stop()
