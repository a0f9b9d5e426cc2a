"""The web interface in a real headless browser (Debian's chromium, driven by
Playwright) on real daemons: the journeys an admin takes, what read-only users and
guests see, a CSRF attempt and an expired session.  Screenshots of the main pages go to
``$CLUSTERD_SCREENSHOTS`` (``docs/web/`` holds the committed ones)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterd.dev.testbed import PASSPHRASE
from tests.webbed import WebBed, web_cluster

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (.ci/run installs it)")  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebBed]:
    with web_cluster(tmp_path) as found:
        yield found


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def shot(page: Any, name: str, tmp: Path) -> None:
    where = Path(os.environ.get("CLUSTERD_SCREENSHOTS") or tmp)
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / f"{name}.png"), full_page=True)


def logged_in(browser: Any, web: WebBed, i: int, user: str = "admin",
              passphrase: str = PASSPHRASE) -> Any:  # fmt: skip
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200,
                                                                      "height": 800})  # fmt: skip
    page = context.new_page()
    page.goto(web.url(i) + "/")
    assert "/login" in page.url
    page.fill("input[name=user]", user)
    page.fill("input[name=passphrase]", passphrase)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    return page


def test_override_at_a_group_commit_see_it_elsewhere_and_move_it_back(
    web: WebBed, browser: Any, tmp_path: Path
) -> None:
    m0, m1, m2 = web.machines
    page = logged_in(browser, web, 0)
    assert page.inner_text("header .user") == "admin (admin)"
    page.wait_for_selector(f"tr[data-peer='{m1.hostname}'] .state.up")
    shot(page, "status", tmp_path)
    # Change mode, and see where the settings are defined.
    page.goto(web.url(0) + "/settings/settz?mode=cluster")
    assert "nowhere (the factory defaults apply)" in page.inner_text(".cm")
    page.select_option("#mode-select", "group:Paris")
    page.wait_for_url(re.compile(r"mode=group%3AParis|mode=group:Paris"))
    assert page.inner_text("h2 .badge") == "inherited"
    # Override at the group (a copy of the inherited settings), edit, commit.
    page.click("button:has-text('Override settings')")
    page.wait_for_selector("text=define — pending, not yet committed")
    assert page.inner_text("h2 .badge") == "overridden here"
    page.fill("#f-timezone", "Europe/Paris")
    page.click("text=Save (pending)")
    page.wait_for_selector("text=set record — pending, not yet committed")
    shot(page, "settings", tmp_path)
    page.click("#pending-link")
    assert "Group Paris" in page.inner_text("table")
    assert "Europe/Paris" in page.inner_text(".diff")
    shot(page, "pending", tmp_path)
    page.fill("#comment", "Paris time")
    page.click("button[value=commit]")
    page.wait_for_selector("text=Changes committed")
    # On another member's interface: the machine in Paris changed, the others did not.
    other = logged_in(browser, web, 1)
    other.goto(web.url(1) + "/settings/settz?mode=cluster")
    row = other.locator(f"tr.explain[data-machine='{m2.hostname}']")
    assert row.locator(".from").inner_text() == "Group Paris"
    assert "Europe/Paris" in row.inner_text()
    for m in (m0, m1):
        mine = other.locator(f"tr.explain[data-machine='{m.hostname}']")
        assert mine.locator(".from").inner_text() == "the factory defaults"
    other.click(".cm a:has-text('Group Paris')")  # "defined at" links to that mode
    other.wait_for_url(re.compile(r"mode=group"))
    # Move the settings back up to the cluster.
    other.select_option("select[name=op]", "move")
    other.select_option("select[name=to]", "cluster")
    other.click("text=Apply")
    other.goto(web.url(1) + "/pending")
    other.fill("#comment", "back up")
    other.click("button[value=commit]")
    other.wait_for_selector("text=Changes committed")
    other.goto(web.url(1) + "/settings/settz?mode=cluster")
    froms = other.locator("tr.explain .from").all_inner_texts()
    assert froms == ["Cluster"] * 3
    other.goto(web.url(1) + "/history")
    listed = other.inner_text("#history")
    assert "back up" in listed and "Paris time" in listed
    # A commit made elsewhere appears on the open history page by itself.
    m2 = web.machines[2]
    m2.edit({"do": "set_record", "feature": "settz", "mode": "cluster",
             "value": {"timezone": "Asia/Tokyo"}}, comment="made on m2")  # fmt: skip
    sync_api.expect(other.locator("#history tbody tr").first).to_contain_text(
        "made on m2", timeout=20_000
    )
    shot(other, "history", tmp_path)
    other.click("#history tbody tr >> nth=0 >> a")
    other.wait_for_url(re.compile(r"/history/SER-002(:|%3A)"))
    assert "Asia/Tokyo" in other.inner_text("#writes")


def test_add_a_group_and_move_a_machine(web: WebBed, browser: Any, tmp_path: Path) -> None:
    m1 = web.machines[1]
    page = logged_in(browser, web, 0)
    page.goto(web.url(0) + "/cluster")
    page.fill("#new-group", "Rome")
    page.click("button[value=addgroup]")
    page.wait_for_selector("text=addgroup: done")
    page.select_option(f"select[aria-label='group for {m1.hostname}']", "Rome")
    row = page.locator("tr", has_text=m1.hostname).first
    row.locator("button[value=setgroup]").click()
    page.wait_for_selector("text=setgroup: done")
    assert "Rome" in page.locator("tr", has_text=m1.hostname).first.inner_text()
    shot(page, "cluster", tmp_path)


def test_read_only_and_guest_see_what_they_may(web: WebBed, browser: Any) -> None:
    rita = logged_in(browser, web, 0, "rita", "rita" * 3)
    rita.goto(web.url(0) + "/settings/userconfig?mode=cluster")
    assert rita.locator("text=Override settings").count() == 0
    assert rita.locator("text=Save (pending)").count() == 0
    assert "scrypt$" not in rita.content()
    rita.goto(web.url(0) + "/pending")
    assert rita.locator("button[value=commit]").count() == 0
    gus = logged_in(browser, web, 0, "gus", "gus" * 3)
    gus.goto(web.url(0) + "/settings/settz")
    assert "guest" in gus.inner_text(".error")
    # What a guest may do: change its own passphrase (and log in with the new one).
    gus.click("header a.user")
    gus.fill("input[name=old]", "gus" * 3)
    gus.fill("input[name=new]", "a new passphrase")
    gus.fill("input[name=again]", "a new passphrase")
    gus.click("button:has-text('Change')")
    gus.wait_for_selector("text=Passphrase of gus changed.")
    web.bed.wait(web.bed.converged, what="the new passphrase everywhere")
    again = logged_in(browser, web, 1, "gus", "a new passphrase")
    assert again.inner_text("header .user") == "gus (guest)"


def test_a_csrf_attempt_and_an_expired_session_are_refused(web: WebBed, browser: Any) -> None:
    page = logged_in(browser, web, 0)
    # Another site's form posts to ours with the session's cookie but without the token:
    # SameSite keeps the cookie home; even sent, the missing token refuses it.
    refused = page.request.post(web.url(0) + "/settings/settz/edit?mode=cluster",
                                form={"op": "define", "start": "defaults"})  # fmt: skip
    assert refused.status == 403 and "CSRF" in refused.text()
    page.goto(web.url(0) + "/pending")
    assert "There are no pending changes." in page.inner_text("main")
    # A session the node forgot (logged out elsewhere): back to the login page.
    context = page.context
    cookie = next(c for c in context.cookies() if c["name"] == "clusterd_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    context.add_cookies([cookie])  # (the old cookie, replayed)
    page.goto(web.url(0) + "/settings/settz")
    assert "/login" in page.url


def test_a_value_from_the_store_is_escaped(web: WebBed, browser: Any) -> None:
    hostile = "<script>alert(1)</script>@example.com"
    a = web.client(0)
    a.login("admin", PASSPHRASE)
    a.edit("unsubscribe", "cluster", op="define", start="empty")
    a.edit("unsubscribe", "cluster", op="set_row", row="x@example.com",
           value={"comment": hostile})  # fmt: skip
    assert a.post("/api/v1/commit", {"comment": hostile}).status == 200
    page = logged_in(browser, web, 0)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in ("/settings/unsubscribe?mode=cluster", "/history", "/pending"):
        page.goto(web.url(0) + path)
        assert "<script>alert(1)</script>" not in page.content()
    page.goto(web.url(0) + "/history")
    assert hostile in page.inner_text("#history") and dialogs == []


def disconnected_edits(web: WebBed) -> tuple[str, str]:
    """m1 and m2 disconnected, each sets the same unsubscribe row its own way, then
    reconnected: the later one wins, the other is recorded as overwritten unseen.
    Returns (the unit, m1's comment)."""
    _, m1, m2 = web.machines
    m0 = web.machines[0]
    m0.edit({"do": "define", "feature": "unsubscribe", "mode": "cluster", "start": "empty"})
    web.bed.wait(web.bed.converged, what="defined everywhere")
    for m in (m1, m2):
        m.op("disconnect")
    web.bed.wait(lambda: all(p["state"] != "up" for p in m0.status()["peers"]), what="away")
    row = {"do": "set_row", "feature": "unsubscribe", "mode": "cluster", "row": "x@example.com"}
    m1.edit({**row, "value": {"comment": "m1 away"}})
    m2.edit({**row, "value": {"comment": "m2 away"}})
    for m in (m1, m2):
        m.op("reconnect")
    web.bed.wait(web.bed.linked, timeout=30, what="relinked")
    web.bed.wait(web.bed.converged, timeout=30, what="converged on the later change")
    return "unsubscribe@cluster[x@example.com]", "m1 away"


def test_clustercheck_after_disconnected_edits_then_force_a_version(
    web: WebBed, browser: Any, tmp_path: Path
) -> None:
    unit, comment = disconnected_edits(web)
    m1 = web.machines[1]
    page = logged_in(browser, web, 0)
    page.goto(web.url(0) + "/check")
    loss = page.locator("section.loss")
    assert loss.count() == 1 and "x@example.com" in loss.inner_text()
    shot(page, "clustercheck", tmp_path)
    page.click(f"button:has-text('Force entire cluster to use {m1.hostname} version')")
    page.wait_for_selector(f"text=Forced: overwritten version of {unit}")
    web.bed.wait(web.bed.converged, what="converged on the forced version")
    values = {m.op("effective")["values"]["unsubscribe"]["x@example.com"]["comment"]
              for m in web.machines}  # fmt: skip
    assert values == {comment}
    page.goto(web.url(0) + "/check")
    assert page.locator("#clean").count() == 1


def test_an_invalid_value_is_shown_next_to_its_field_and_changes_nothing(
    web: WebBed, browser: Any
) -> None:
    page = logged_in(browser, web, 0)
    page.goto(web.url(0) + "/settings/smtproutes?mode=cluster")
    page.click("button:has-text('Override settings')")
    page.wait_for_selector("text=define — pending, not yet committed")
    page.click("summary:has-text('Add a row')")
    page.fill("#row-name", "example.org")
    page.fill("#add-row #f-destinations", '[{"host": "not a host!", "port": 99999}]')
    page.click("button:has-text('Add row (pending)')")
    field = page.locator("#add-row .field.invalid")
    assert field.count() == 1 and "destinations" in field.inner_text()
    problems = field.locator(".problem").all_inner_texts()
    assert any("not a host name" in p for p in problems), problems
    assert any("less than or equal to 65535" in p for p in problems), problems
    page.goto(web.url(0) + "/pending")
    assert "example.org" not in page.inner_text("main")


def test_prepjoin_from_the_browser_then_the_machine_joins_with_its_key(
    web: WebBed, browser: Any, tmp_path: Path
) -> None:
    from clusterd.dev.testbed import Machine

    m0 = web.machines[0]
    joiner = Machine(tmp_path / "joiner", 9, 0.5, {}, hostname="joiner.example.com")
    joiner.start()
    try:
        info = joiner.op("prepjoin_print")
        page = logged_in(browser, web, 0)
        page.goto(web.url(0) + "/cluster")
        page.fill("#pj-host", info["hostname"])
        page.fill("#pj-serial", info["serial"])
        page.fill("#pj-key", info["machine_key"])
        page.click("button[value=prepjoin_new]")
        page.wait_for_selector("text=prepjoin_new: done — pending, not yet committed")
        assert "joiner.example.com" in page.inner_text("#prepared")
        page.goto(web.url(0) + "/pending")
        page.fill("#comment", "joiner")
        page.click("button[value=commit]")
        page.wait_for_selector("text=Changes committed")
        joiner.op("join", address=m0.config.listen, port=m0.config.ssh_port,
                  fingerprint=m0.fingerprint())  # fmt: skip
        web.bed.wait(lambda: "joiner.example.com" in {p["hostname"] for p in
                                                      m0.status()["peers"]
                                                      if p["state"] == "up"},
                     timeout=30, what="the joiner linked")  # fmt: skip
        page.goto(web.url(0) + "/cluster")
        assert "joiner.example.com" in page.locator("table").first.inner_text()
        assert "No machine is prepared to join." in page.inner_text("#prepared")
    finally:
        joiner.stop()


def test_the_status_page_follows_a_member_going_away_without_a_reload(
    web: WebBed, browser: Any
) -> None:
    m1 = web.machines[1]
    page = logged_in(browser, web, 0)
    cell = page.locator(f"tr[data-peer='{m1.hostname}'] .sync")
    assert cell.inner_text() == "In Sync"
    assert page.locator("svg line.link.up").count() == 3  # the whole mesh of three
    m1.op("disconnect")
    sync_api.expect(cell).to_have_text("Disconnected (on purpose)", timeout=20_000)  # (no reload)
    assert "clusterconfig reconnect" in str(cell.get_attribute("title"))  # the action
    m1.op("reconnect")
    sync_api.expect(cell).to_have_text("In Sync", timeout=30_000)
