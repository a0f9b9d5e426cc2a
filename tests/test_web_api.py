"""The web interface's JSON API on real daemons, over HTTPS, as a script uses it: the
journeys of the browser tests, the roles, CSRF, expired sessions, conflicts, hostile
and oversized requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import PASSPHRASE
from tests.webbed import Client, WebBed, web_cluster


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebBed]:
    with web_cluster(tmp_path) as found:
        yield found


def admin(web: WebBed, i: int = 0) -> Client:
    client = web.client(i)
    assert client.login("admin", PASSPHRASE).status == 200
    return client


def explain(client: Client, feature: str) -> dict[str, tuple[str, object]]:
    answer = client.get(f"/api/v1/features/{feature}/explain")
    assert answer.status == 200, answer.body
    return {e["machine"]: (e["from"], e["value"]) for e in answer.body}


def test_override_at_a_group_commit_and_move_it_back_up(web: WebBed) -> None:
    m0, m1, m2 = web.machines
    a = admin(web, 0)
    modes = [m["key"] for m in a.get("/api/v1/modes").body]
    assert modes[:1] == ["cluster"] and "group:Paris" in modes and f"machine:{m2.hostname}" in modes
    at_group = a.get("/api/v1/features/settz?mode=group:Paris").body
    assert at_group["defined_here"] is False and at_group["badge"] == "inherited"
    assert at_group["inherited_from"] == "the factory defaults"
    # Override at the group, starting from the inherited settings, and edit there.
    assert a.edit("settz", "group:Paris", op="define", start="inherited").status == 200
    assert a.edit("settz", "group:Paris", op="set_record",
                  value={"timezone": "Europe/Paris"}).status == 200  # fmt: skip
    pending = a.get("/api/v1/pending").body
    assert [(c["feature"], c["mode"]) for c in pending["changes"]] == [("settz", "Group Paris")]
    preview = pending["preview"]
    assert preview[m2.hostname]["changes"]["settz"][1] == {"timezone": "Europe/Paris"}
    assert preview[m0.hostname]["changes"] == {} and preview[m1.hostname]["changes"] == {}
    made = a.post("/api/v1/commit", {"comment": "Paris time"})
    assert made.status == 200 and made.body["commit"].startswith("SER-000:"), made.body
    assert a.get("/api/v1/pending").body["changes"] == []
    # On another member's interface: the group's machine changed, the others did not.
    b = admin(web, 1)
    web.bed.wait(lambda: explain(b, "settz")[m2.hostname][0] == "Group Paris", what="applied")
    seen = explain(b, "settz")
    assert seen[m2.hostname] == ("Group Paris", {"timezone": "Europe/Paris"})
    assert seen[m0.hostname] == ("the factory defaults", {"timezone": "UTC"})
    defined = b.get("/api/v1/features/settz?mode=cluster").body["defined_at"]
    assert [d["key"] for d in defined] == ["group:Paris"]
    history = b.get("/api/v1/history").body
    assert history[0]["id"] == made.body["commit"] and history[0]["comment"] == "Paris time"
    detail = b.get(f"/api/v1/history/{made.body['commit']}").body
    assert detail["user"] == "admin" and detail["origin"] == m0.hostname
    assert {(w["feature"], w["mode"]) for w in detail["writes"]} == {("settz", "Group Paris")}
    assert b.get("/api/v1/history/nonsense").status == 400
    users = next(c for c in history if c["comment"] == "users")
    written = b.get(f"/api/v1/history/{users['id']}").body["writes"]
    assert {w["value"]["passphrase_hash"] for w in written if w["feature"] == "userconfig"
            and w["row"]} == {"set"}  # fmt: skip
    # Copied to every group, then deleted at every group: as before.
    assert b.edit("settz", "group:Paris", op="copy", to="allgroups").status == 200
    groups = [d["key"] for d in b.get("/api/v1/features/settz?mode=cluster").body["defined_at"]]
    assert groups == ["group:Main_Group", "group:Paris"]
    assert b.edit("settz", "cluster", op="undefine", to="allgroups").status == 200
    assert b.get("/api/v1/features/settz?mode=cluster").body["defined_at"] == []
    b.request("DELETE", "/api/v1/pending")
    # Move the settings back up to the cluster: everyone has them, from the cluster.
    assert b.edit("settz", "group:Paris", op="move", to="cluster").status == 200
    assert b.post("/api/v1/commit", {"comment": "up"}).status == 200
    web.bed.wait(lambda: {f for f, _ in explain(a, "settz").values()} == {"Cluster"},
                 what="moved up, seen on m0")  # fmt: skip
    assert {v["timezone"] for _, v in explain(a, "settz").values()} == {"Europe/Paris"}  # type: ignore[index]


def test_add_a_group_and_move_a_machine(web: WebBed) -> None:
    a = admin(web)
    m1 = web.machines[1]
    assert a.post("/api/v1/cluster/groups", {"op": "addgroup", "group": "Rome"}).status == 200
    moved = a.post("/api/v1/cluster/groups",
                   {"op": "setgroup", "machine": m1.hostname, "group": "Rome"})  # fmt: skip
    assert moved.status == 200, moved.body
    cluster = a.get("/api/v1/cluster").body
    assert cluster["machines"][m1.hostname]["group"] == "Rome"
    assert "Rome" in cluster["groups"]
    assert {m["hostname"] for m in cluster["connstatus"]["members"]} == {
        m.hostname for m in web.machines[1:]}  # fmt: skip
    renamed = a.post("/api/v1/cluster/groups", {"op": "renamegroup", "old": "Rome", "new": "Roma"})
    assert renamed.status == 200, renamed.body
    gone = a.post("/api/v1/cluster/groups",
                  {"op": "deletegroup", "group": "Roma", "move_to": "Paris"})  # fmt: skip
    assert gone.status == 200, gone.body
    cluster = a.get("/api/v1/cluster").body
    assert "Roma" not in cluster["groups"] and cluster["machines"][m1.hostname]["group"] == "Paris"
    bad = a.post("/api/v1/cluster/groups", {"op": "setgroup", "machine": "nosuch.example.com",
                                            "group": "Rome"})  # fmt: skip
    assert bad.status == 400 and "nosuch" in bad.body["error"]


def test_a_conflict_names_who_holds_the_unit_and_their_commit(web: WebBed) -> None:
    first, second = admin(web, 0), admin(web, 1)
    for client in (first, second):
        client.edit("unsubscribe", "cluster", op="define", start="empty")
    assert first.post("/api/v1/commit", {"comment": "mine"}).status == 200
    commit = first.get("/api/v1/history").body[0]["id"]
    web.bed.wait(web.bed.converged, what="converged")
    refused = second.post("/api/v1/commit", {"comment": "theirs"})
    assert refused.status == 409, refused.body
    [conflict] = refused.body["conflicts"]
    assert conflict["holder"] == web.machines[0].hostname and conflict["commit"] == commit
    assert second.get("/api/v1/pending").body["changes"], "a refused commit keeps the changes"
    done = second.post("/api/v1/commit", {"comment": "theirs", "on_conflict": "overwrite"})
    assert done.status == 200 and done.body["commit"]


def test_roles_read_only_and_guest(web: WebBed) -> None:
    rita, gus = web.client(0), web.client(0)
    assert rita.login("rita", "rita" * 3).status == 200
    assert gus.login("gus", "gus" * 3).status == 200
    assert rita.get("/api/v1/features/settz?mode=cluster").status == 200
    refused = rita.edit("settz", "cluster", op="define", start="defaults")
    assert refused.status == 403
    assert "rita (read-only) may not change settings" in refused.body["error"]
    assert rita.post("/api/v1/commit", {}).status == 403
    assert rita.post("/api/v1/cluster/groups", {"op": "addgroup", "group": "X"}).status == 403
    for path in ("/api/v1/features", "/api/v1/features/settz", "/api/v1/pending",
                 "/api/v1/history", "/api/v1/status", "/api/v1/cluster"):  # fmt: skip
        answer = gus.get(path)
        assert answer.status == 403 and "guest" in answer.body["error"], (path, answer.body)
    wrong = gus.post("/api/v1/passwd", {"old": "not it at all", "new": "whatever123"})
    assert wrong.status == 403 and "nothing changed" in wrong.body["error"]
    short = gus.post("/api/v1/passwd", {"old": "gus" * 3, "new": "short"})
    assert short.status == 400 and "8 characters" in short.body["error"]
    users = rita.get("/api/v1/features/userconfig?mode=cluster").body["value"]
    assert {row["passphrase_hash"] for row in users.values()} == {"set"}


def test_csrf_sessions_and_hostile_requests(web: WebBed) -> None:
    a = admin(web)
    # With the cookie (as a page's script), a change needs the CSRF header.
    no_token = a.post("/api/v1/features/settz/edit?mode=cluster", {"op": "define",
                      "start": "defaults"}, bearer=False, csrf=False)  # fmt: skip
    assert no_token.status == 403 and "CSRF" in no_token.body["error"]
    assert a.get("/api/v1/pending").body["changes"] == []
    with_token = a.post("/api/v1/features/settz/edit?mode=cluster", {"op": "define",
                        "start": "defaults"}, bearer=False)  # fmt: skip
    assert with_token.status == 200
    assert a.request("DELETE", "/api/v1/pending").body == {"cleared": 1}
    # No session, a forged one, a logged-out one.
    anonymous = web.client(0)
    assert anonymous.get("/api/v1/modes").status == 401
    anonymous.token = "forged"
    assert anonymous.get("/api/v1/modes").status == 401
    gone = admin(web)
    assert gone.post("/api/v1/logout").status == 200
    assert gone.get("/api/v1/modes").status == 401
    # Wrong passphrases: the same words for an unknown user; refused, nothing made.
    for user in ("admin", "nosuch"):
        refused = web.client(0).login(user, "wrong passphrase")
        assert refused.status == 401 and refused.body["error"] == "wrong user or passphrase"
    # Hostile and oversized requests: a clear error, nothing changed, the daemon alive.
    assert a.post("/api/v1/commit", raw=b"{not json").status == 400
    assert a.post("/api/v1/features/settz/edit?mode=cluster", raw=b"x" * (2 * 1024 * 1024)
                  ).status == 413  # fmt: skip
    assert a.edit("nosuch", "cluster", op="define", start="empty").status == 400
    assert a.edit("settz", "group:Nowhere", op="define", start="empty").status == 400
    assert a.edit("settz", "cluster", op="explode").status == 400
    bad = a.edit("settz", "cluster", op="set_record", value={"timezone": "Mars/Olympus"})
    assert bad.status in (400, 422) and "Mars/Olympus" in bad.body["error"]
    assert a.get("/api/v1/pending").body["changes"] in ([], [{"feature": "settz",
             "mode": "Cluster", "row": None, "value": {"timezone": "UTC"}}])  # fmt: skip
    assert web.machines[0].status()["web"]["worker"] is True


def test_an_idle_session_expires(tmp_path: Path) -> None:
    with web_cluster(tmp_path, n=2, web=(0,), web_session_minutes=0.03) as web:
        a = admin(web)
        assert a.get("/api/v1/modes").status == 200
        time.sleep(2.5)
        expired = a.get("/api/v1/modes")
        assert expired.status == 401, expired.body


def test_the_openapi_description_comes_from_the_schema(web: WebBed) -> None:
    a = admin(web)
    doc = a.get("/api/v1/openapi.json").body
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/commit" in doc["paths"] and "post" in doc["paths"]["/api/v1/commit"]
    settz = doc["components"]["schemas"]["feature.settz"]
    assert settz["properties"]["timezone"]["default"] == "UTC"
    routes = doc["components"]["schemas"]["feature.smtproutes"]
    assert routes["type"] == "object" and "additionalProperties" in routes


def test_clustercheck_and_force_through_the_api(web: WebBed) -> None:
    from tests.test_web_browser import disconnected_edits

    unit, comment = disconnected_edits(web)
    a = admin(web, 1)
    report = a.get("/api/v1/clustercheck").body
    [loss] = report["lost"]
    assert loss["unit"] == unit and report["clean"] is False
    rita = web.client(1)
    rita.login("rita", "rita" * 3)
    refused = rita.post("/api/v1/clustercheck/force", {"unit": unit, "lost": loss["lost"],
                                                       "keep": "overwritten"})  # fmt: skip
    assert refused.status == 403
    done = a.post("/api/v1/clustercheck/force", {"unit": unit, "lost": loss["lost"],
                                                 "keep": "overwritten"})  # fmt: skip
    assert done.status == 200 and done.body["commit"], done.body
    web.bed.wait(web.bed.converged, what="converged on the forced version")
    assert {m.op("effective")["values"]["unsubscribe"]["x@example.com"]["comment"]
            for m in web.machines} == {comment}  # fmt: skip
    assert a.get("/api/v1/clustercheck").body["clean"] is True
    again = a.post("/api/v1/clustercheck/force", {"unit": unit, "lost": loss["lost"]})
    assert again.status == 400 and "no recorded loss" in again.body["error"]


def test_the_install_preview_shows_each_members_service_files_to_be(tmp_path: Path) -> None:
    """m0 and m2 render a list of the unsubscribed addresses (a template target); a
    pending row shows, per member, the diff of that file, and m1 (no target) says so."""
    template = tmp_path / "list.j2"
    template.write_text("{% for a in values.unsubscribe or {} %}{{ a }}\n{% endfor %}")

    def targets(bed: Any) -> None:
        for i in (0, 2):
            m = bed.machines[i]
            (m.dir / "targets.d").mkdir()
            (m.dir / "targets.d" / "list.toml").write_text(f"""
[[target]]
name = "list"
templates = {{ "unsubscribed.txt" = "{template}" }}
features = ["unsubscribe"]
path = "{tmp_path / f"live{i}"}"
wait = "0"
""")

    with web_cluster(tmp_path, before=targets) as web:
        a = admin(web)
        m0, m1, m2 = web.machines
        a.edit("unsubscribe", "cluster", op="define", start="empty")
        a.edit("unsubscribe", "cluster", op="set_row", row="new@example.com",
               value={"comment": ""})  # fmt: skip
        install = a.get("/api/v1/pending/install")
        assert install.status == 200, install.body
        for m in (m0, m2):
            diff = install.body[m.hostname]["targets"]["list"]["files"]["unsubscribed.txt"]
            assert "+new@example.com" in diff and "pending/unsubscribed.txt" in diff
        assert install.body[m1.hostname] == {"targets": {}}
        live = tmp_path / "live0" / "unsubscribed.txt"
        assert not live.exists() or "new@" not in live.read_text()  # (a preview writes nothing)
        a.request("DELETE", "/api/v1/pending")
        assert a.get("/api/v1/pending/install").body == {}


def test_a_web_worker_that_dies_is_replaced_and_the_links_stay(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    with web_cluster(tmp_path, n=2, web=(0,)) as web:
        m0 = web.machines[0]
        assert admin(web).get("/api/v1/modes").status == 200
        assert m0.proc is not None
        pgrep = ["pgrep", "-P", str(m0.proc.pid), "-f", "clusterd.webworker"]
        mine = subprocess.run(pgrep, capture_output=True, text=True).stdout.split()
        assert len(mine) == 1, mine
        os.kill(int(mine[0]), signal.SIGKILL)
        web.bed.wait(lambda: m0.status()["web"]["started"] == 2, what="a new web worker")
        web.bed.wait(lambda: web.client(0).login("admin", PASSPHRASE).status == 200,
                     what="the web answering again")  # fmt: skip
        assert web.bed.linked() and m0.proc.poll() is None


def test_a_key_login_and_the_passphrase_lockout(web: WebBed) -> None:
    import base64

    import asyncssh

    key = asyncssh.read_private_key(web.keys["rita"])
    public = key.export_public_key().decode()
    client = web.client(0)
    asked = client.post("/api/v1/login/challenge", {"user": "rita", "key": public})
    assert asked.status == 200, asked.body
    challenge = asked.body["challenge"]
    bad = base64.b64encode(key.sign(b"clusterd web login something else", b"ssh-ed25519"))
    refused = client.post("/api/v1/login", {"challenge": challenge, "signature": bad.decode()})
    assert refused.status == 401  # (and the challenge is spent)
    challenge = client.post("/api/v1/login/challenge", {"user": "rita", "key": public}).body[
        "challenge"]  # fmt: skip
    signed = key.sign(b"clusterd web login " + challenge.encode(), b"ssh-ed25519")
    answer = {"challenge": challenge, "signature": base64.b64encode(signed).decode()}
    made = client.post("/api/v1/login", answer)
    assert made.status == 200 and made.body["user"] == "rita" and made.body["role"] == "read-only"
    client.token = made.body["token"]
    assert client.get("/api/v1/me").body["user"] == "rita"
    replay = web.client(0).post("/api/v1/login", answer)
    assert replay.status == 401
    # rita's key is not gus's, nor admin's.
    for user in ("gus", "admin"):
        other = web.client(0).post("/api/v1/login/challenge", {"user": user, "key": public})
        assert other.status == 401 and other.body["error"] == "wrong user or key"
    # Wrong passphrases lock the address out, as over SSH (5 in a minute): then even the
    # right one is refused, and key logins still work.
    for _ in range(5):
        assert web.client(0).login("admin", "not the passphrase").status == 401
    locked = web.client(0).login("admin", PASSPHRASE)
    assert locked.status == 401 and "too many failed logins" in locked.body["error"]
    again = web.client(0).post("/api/v1/login/challenge", {"user": "rita", "key": public})
    assert again.status == 200


def test_effective_configuration_and_remove_a_machine(web: WebBed) -> None:
    a = admin(web)
    m0, _, m2 = web.machines
    mine = a.get("/api/v1/effective").body
    assert mine["machine"] == m0.hostname and mine["features"]["settz"]["from"]
    users = mine["features"]["userconfig"]["value"]
    assert {row["passphrase_hash"] for row in users.values()} == {"set"}
    assert a.get(f"/api/v1/effective?machine={m2.hostname}").body["machine"] == m2.hostname
    assert a.get("/api/v1/effective?machine=nosuch.example.com").status == 400
    rita = web.client(0)
    rita.login("rita", "rita" * 3)
    assert rita.post("/api/v1/cluster/remove", {"machine": m2.hostname}).status == 403
    gone = a.post("/api/v1/cluster/remove", {"machine": m2.hostname})
    assert gone.status == 200, gone.body
    web.bed.wait(lambda: m2.hostname not in a.get("/api/v1/cluster").body["machines"],
                 what="m2 removed")  # fmt: skip
    web.bed.wait(lambda: m2.status()["cluster"] is None, timeout=30, what="m2 left")
