"""The pages: HTML forms over the operations of ``clusterd.web.ops`` (the JSON API does
the same with JSON).  Jinja2 escapes every value; a form that changes anything carries
the session's CSRF token; after a change the page is shown again (redirect), with
what happened or, for an invalid value, the form with the problems next to the fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from clusterd.core import layers
from clusterd.core.errors import ClusterdError, SessionExpired
from clusterd.schema.validation import InvalidSetting
from clusterd.web import forms, ops
from clusterd.web.app import COOKIE, HERE, Auth
from clusterd.web.context import Browser, Context

EVENTS_EVERY = 2.0  # s between the status pushed to an open page

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
env.filters["json"] = lambda value: json.dumps(value, indent=1, sort_keys=True)
env.filters["when"] = lambda at: time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def page(request: Request, template: str, browser: Browser | None, status: int = 200,
         **values: Any) -> HTMLResponse:  # fmt: skip
    ctx: Context = request.app.state.ctx
    role = None if browser is None else ctx.role(browser.user)
    notes, browser_events = [], []
    if browser is not None:
        browser_events, browser.events = browser.events, []
        notes = browser_events
    html = env.get_template(template).render(
        me=browser, role=role, machine=ctx.hostname, notes=notes,
        cluster=layers.cluster_name(ctx.store.state),
        pending=0 if browser is None else len(browser.session.pending), **values)  # fmt: skip
    return HTMLResponse(html, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    if exc.status_code == 401:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    return page(request, "error.html", None, exc.status_code, error=exc.detail)


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form()
    return {"raw": form, **{k: v for k, v in form.items() if isinstance(v, str)}}


def back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


async def session(request: Request, form: dict[str, Any] | None = None) -> Browser:
    return await Auth.browser(request, form)


def refused(request: Request, browser: Browser | None, exc: Exception) -> HTMLResponse:
    """The page that says why not (an expired session goes on to the login page)."""
    if isinstance(exc, SessionExpired):
        raise exc
    status = 403 if isinstance(exc, ops.Refused) else 400
    return page(request, "error.html", browser, status, error=str(exc))


# -- logging in -----------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    return page(request, "login.html", None, error=None,
                next=request.query_params.get("next", "/"))  # fmt: skip


async def login(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    where = str(form.get("next") or "/")
    where = where if where.startswith("/") and not where.startswith("//") else "/"
    client = request.client
    source = f"{client.host}:{client.port}" if client else "?"
    try:
        browser = await ctx.login(str(form.get("user", "")), str(form.get("passphrase", "")),
                                  source)  # fmt: skip
    except ClusterdError as exc:
        return page(request, "login.html", None, 401, error=str(exc), next=where)
    answer = back(where)
    answer.set_cookie(COOKIE, browser.token, httponly=True, secure=True, samesite="strict")
    return answer


async def logout(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    browser = await session(request, await _form(request))
    await ctx.logout(browser)
    answer = back("/login")
    answer.delete_cookie(COOKIE, httponly=True, secure=True, samesite="strict")
    return answer


# -- the cluster ------------------------------------------------------------------------------


Reader = Callable[[Context, Browser, Request], Awaitable[dict[str, Any]]]


def view(template: str, read: Reader) -> Callable[[Request], Awaitable[Response]]:
    """A page that shows what ``read`` finds for the session, or says why not."""

    async def handle(request: Request) -> Response:
        ctx: Context = request.app.state.ctx
        browser = await session(request)
        try:
            values = await read(ctx, browser, request)
        except (ClusterdError, ValueError) as exc:
            return refused(request, browser, exc)
        return page(request, template, browser, **values)

    return handle


async def _home(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    found = await ops.status(ctx, b)
    return {"member": found, "mesh": mesh(found)}


async def _cluster(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    return {"found": await ops.cluster(ctx, b), "groups": layers.groups(ctx.store.state),
            "prepared": layers.prepared(b.session.view)}  # fmt: skip


async def _features(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    ops.may_read(ctx, b)
    return {"features": ops.features(ctx)}


async def _history(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    return {"commits": ops.history(ctx, b)}


async def _commit(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    return {"c": ops.commit_detail(ctx, b, r.path_params["commit"])}


async def _check(ctx: Context, b: Browser, r: Request) -> dict[str, Any]:
    return {"report": await ops.clustercheck(ctx, b)}


def mesh(status: dict[str, Any]) -> dict[str, Any]:
    """The members on a circle and the links between them, for the picture: this
    member's own links with their state, and the links each member says it has (with
    its pings) between the others."""
    import math

    me, peers = status["hostname"], status.get("peers") or []
    names = [me, *[p["hostname"] for p in peers]]
    by_serial = {status["serial"]: me, **{p["serial"]: p["hostname"] for p in peers}}
    count = max(len(names), 1)
    points = {n: (150 + 110 * math.cos(2 * math.pi * i / count - math.pi / 2),
                  130 + 100 * math.sin(2 * math.pi * i / count - math.pi / 2))
              for i, n in enumerate(names)}  # fmt: skip
    links = [{"a": points[me], "b": points[p["hostname"]], "state": p["state"]} for p in peers]
    seen = {frozenset((me, p["hostname"])) for p in peers}
    for p in peers:
        if p["state"] != "up":
            continue  # (what it said before the link went is stale)
        for serial in p.get("links") or []:
            other = by_serial.get(serial)
            pair = frozenset((p["hostname"], other))
            if other is None or pair in seen:
                continue
            seen.add(pair)
            links.append({"a": points[p["hostname"]], "b": points[other], "state": "up"})
    return {"points": points, "links": links, "me": me}


async def cluster_change(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    browser = await session(request, form)
    action = str(form.get("action", ""))
    try:
        if action in ops.GROUP_OPS:
            args = {k: str(form[k]) for k in ("group", "old", "new", "machine", "move_to")
                    if form.get(k)}  # fmt: skip
            await ops.group_op(ctx, browser, action, args)
        elif action in ("prepjoin_new", "prepjoin_delete"):
            fields = ("hostname", "serial", "machine_key")
            ops.prepjoin(ctx, browser, action.split("_")[1],
                         {k: str(form[k]).strip() for k in fields if form.get(k)})  # fmt: skip
        elif action == "remove":
            await ops.remove(ctx, browser, str(form.get("machine", "")))
        elif action in ("disconnect", "reconnect"):
            await ops.set_disconnected(ctx, browser, str(form.get("machine", "")),
                                       action == "disconnect")  # fmt: skip
        else:
            raise ClusterdError(f"no action {action!r}")
    except (ClusterdError, KeyError) as exc:
        return refused(request, browser, exc)
    pending = " — pending, not yet committed" if action.startswith("prepjoin") else ""
    browser.events.append(f"{action}: done{pending}")
    return back("/cluster")


# -- settings ---------------------------------------------------------------------------------


async def settings(request: Request) -> Response:
    return _settings(request, await session(request))


def _settings(request: Request, browser: Browser, problems: list[str] | None = None,
              row: str | None = None, status: int = 200,
              sent: dict[str, Any] | None = None) -> Response:  # fmt: skip
    """The settings page; after a refused edit, ``problems`` beside the fields of
    ``row`` (None: the record), the form filled with what was ``sent``."""
    ctx: Context = request.app.state.ctx
    command = request.path_params["feature"]
    try:
        found = ops.feature_at(ctx, browser, command, request.query_params.get("mode"))
        explained = ops.explain(ctx, browser, command)
    except (ClusterdError, ValueError) as exc:
        return refused(request, browser, exc)
    feature = ops.feature_of(ctx, command)
    shown = found["value"] if found["defined_here"] else found["inherited"]
    rows: list[dict[str, Any]] = []
    record: list[forms.Field] = []
    existing = shown if feature.is_table and isinstance(shown, dict) else {}
    if feature.is_table:
        for name, value in sorted(existing.items()):
            mine = row == name
            rows.append({"name": name, "value": value,
                         "fields": forms.fields(feature, sent if mine and sent else value,
                                                problems if mine else None)})  # fmt: skip
    else:
        record = forms.fields(feature, sent or shown, problems)
    new = row is not None and row not in existing  # (a refused new row: its form again)
    new_row = forms.fields(feature, sent if new else {}, problems if new else None)
    may_write = ops.role_of(ctx, browser) not in ("read-only", "guest")
    return page(request, "settings.html", browser, status, f=found, rows=rows, record=record,
                new_row=new_row, new_name=row if new else "", problems=problems or [],
                modes=ops.modes(ctx, browser), explained=explained,
                may_write=may_write)  # fmt: skip


async def settings_edit(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    browser = await session(request, form)
    command, mode = request.path_params["feature"], request.query_params.get("mode") or ""
    op, row = str(form.get("op", "")), form.get("row")
    feature = ops.feature_of(ctx, command)
    args: dict[str, Any] = {k: form[k] for k in ("start", "to") if form.get(k)}
    if row is not None:
        args["row"] = str(row).strip()
    try:
        if op in ("set_record", "set_row"):
            args["value"] = forms.submitted(feature, form["raw"])
            if op == "set_row" and not args["row"]:
                raise InvalidSetting(["the row needs a name"])
        ops.edit(ctx, browser, command, mode, op, **args)
    except InvalidSetting as exc:
        return _settings(
            request, browser, exc.problems, row=args.get("row"), status=422, sent=args.get("value")
        )
    except (ClusterdError, KeyError, ValueError) as exc:
        return refused(request, browser, exc)
    browser.events.append(f"{command}: {op.replace('_', ' ')} — pending, not yet committed")
    return back(f"/settings/{command}?mode={mode}")


# -- pending, commit, history ------------------------------------------------------------------


async def pending_page(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    browser = await session(request)
    try:
        install = await ops.install_preview(ctx, browser)
    except SessionExpired:
        raise
    except ClusterdError as exc:
        install = {ctx.hostname: {"error": str(exc)}}
    return _pending(request, browser, install=install)


def _pending(request: Request, browser: Browser, conflicts: list[dict[str, Any]] | None = None,
             status: int = 200, install: dict[str, Any] | None = None) -> Response:  # fmt: skip
    ctx: Context = request.app.state.ctx
    try:
        found = ops.pending(ctx, browser)
    except ops.Refused as exc:
        return refused(request, browser, exc)
    return page(request, "pending.html", browser, status, found=found,
                conflicts=conflicts or [], install=install or {})  # fmt: skip


async def pending_change(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    browser = await session(request, form)
    try:
        if form.get("action") == "clear":
            browser.events.append(f"{ops.clear(ctx, browser)} pending change(s) discarded")
        else:
            made = await ops.commit(ctx, browser, str(form.get("comment", "")),
                                    form.get("on_conflict") or None)  # fmt: skip
            browser.events.append(made["text"])
    except ops.Conflicts as exc:
        return _pending(request, browser, exc.found, status=409)
    except ClusterdError as exc:
        return refused(request, browser, exc)
    return back("/pending")


async def passwd_page(request: Request) -> Response:
    return page(request, "passwd.html", await session(request), error=None)


async def passwd_change(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    browser = await session(request, form)
    try:
        done = await ops.passwd(ctx, browser, str(form.get("old", "")), str(form.get("new", "")),
                                str(form.get("again", "")))  # fmt: skip
    except SessionExpired:
        raise
    except ClusterdError as exc:
        return page(request, "passwd.html", browser, 400, error=str(exc))
    browser.events.append(done)
    return back("/passwd")


# -- clustercheck ------------------------------------------------------------------------------


async def check_force(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await _form(request)
    browser = await session(request, form)
    args = {k: str(form[k]) for k in ("feature", "mode", "host", "unit", "lost", "keep")
            if form.get(k)}  # fmt: skip
    try:
        done = await ops.force(ctx, browser, args)
    except ClusterdError as exc:
        return refused(request, browser, exc)
    browser.events.append(done["text"])
    return back("/check")


# -- live updates -------------------------------------------------------------------------------


async def events(request: Request) -> Response:
    """Server-sent events for an open page: ``history`` (the newest commit, from this
    process's image) at once after each commit applied here, and ``status`` (each
    member's link and sync state: the node's cheap answer, without the digest) every
    few seconds."""
    ctx: Context = request.app.state.ctx
    browser = await session(request)
    ops.may_read(ctx, browser)
    changed = asyncio.Event()
    ctx.changed.append(changed.set)

    async def stream() -> AsyncIterator[str]:
        asked = 0.0
        try:
            while True:
                if time.monotonic() - asked >= EVENTS_EVERY:
                    asked = time.monotonic()
                    peers = [{"hostname": p["hostname"], "state": p["state"],
                              "behind": p["behind"], "admin_off": p["admin_off"],
                              "sync": p["sync"]}
                             for p in await ctx.ask(browser, "peer_status")]  # fmt: skip
                    yield f"event: status\ndata: {json.dumps({'peers': peers})}\n\n"
                newest = ops.history(ctx, browser, 1)
                yield f"event: history\ndata: {json.dumps(newest)}\n\n"
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), asked + EVENTS_EVERY - time.monotonic())
        finally:
            ctx.changed.remove(changed.set)

    return StreamingResponse(stream(), media_type="text/event-stream")


def routes() -> list[Route]:
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", view("home.html", _home), methods=["GET"]),
        Route("/cluster", view("cluster.html", _cluster), methods=["GET"]),
        Route("/cluster", cluster_change, methods=["POST"]),
        Route("/settings", view("settings_index.html", _features), methods=["GET"]),
        Route("/settings/{feature}", settings, methods=["GET"]),
        Route("/settings/{feature}/edit", settings_edit, methods=["POST"]),
        Route("/pending", pending_page, methods=["GET"]),
        Route("/pending", pending_change, methods=["POST"]),
        Route("/history", view("history.html", _history), methods=["GET"]),
        Route("/history/{commit}", view("commit.html", _commit), methods=["GET"]),
        Route("/check", view("check.html", _check), methods=["GET"]),
        Route("/passwd", passwd_page, methods=["GET"]),
        Route("/passwd", passwd_change, methods=["POST"]),
        Route("/check", check_force, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
    ]
