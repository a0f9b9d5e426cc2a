"""The JSON API, ``/api/v1/`` (``docs/web.md``; described by ``/api/v1/openapi.json``).

Every route is one operation of ``clusterd.web.ops``; errors are JSON with the status
that says what kind (401 no session, 403 not this role or no CSRF token, 409 a commit
conflict naming who holds each unit and their commit, 422 an invalid value with one
line per field, 400 anything else the request got wrong).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clusterd.core.errors import ClusterdError
from clusterd.web import openapi, ops
from clusterd.web.app import COOKIE, Auth, errors, read_json
from clusterd.web.context import Browser, Context

Operation = Callable[[Context, Browser, Request, Any], Awaitable[Any]]


def endpoint(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
    """A route that needs a session: the operation's answer as JSON, errors too."""

    async def handle(request: Request) -> Response:
        try:
            body = await read_json(request) if request.method in ("POST", "PUT") else None
            browser = await Auth.browser(request)
            ctx: Context = request.app.state.ctx
            return JSONResponse(await operation(ctx, browser, request, body))
        except Exception as exc:  # (errors() re-raises what is not ours)
            status, answer = errors(exc)
            return JSONResponse(answer, status_code=status)

    return handle


def _mode(request: Request) -> str | None:
    return request.query_params.get("mode")


def _object(body: Any, *names: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not all(n in body for n in names):
        raise ClusterdError(f"a JSON object with {', '.join(names)} expected")
    return body


def _source(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


async def challenge(request: Request) -> Response:
    """A key login, first step: ``{user, key}`` (an OpenSSH public key of the user's, as
    in sshconfig ``admin_keys``) -> ``{challenge}``, to sign with the private key."""
    ctx: Context = request.app.state.ctx
    try:
        body = _object(await read_json(request), "user", "key")
        made = await ctx.challenge(str(body["user"]), str(body["key"]), _source(request))
    except Exception as exc:
        status, answer = errors(exc)
        return JSONResponse(answer, status_code=401 if status == 400 else status)
    return JSONResponse({"challenge": made, "sign": "clusterd web login CHALLENGE"})


async def login(request: Request) -> Response:
    """A session: ``{user, passphrase}``, or a key login's ``{challenge, signature}``
    (base64 of the SSH signature of "clusterd web login " + the challenge)."""
    ctx: Context = request.app.state.ctx
    try:
        body = await read_json(request)
        if isinstance(body, dict) and "challenge" in body:
            args = _object(body, "challenge", "signature")
            browser = await ctx.key_login(str(args["challenge"]), str(args["signature"]),
                                          _source(request))  # fmt: skip
        else:
            args = _object(body, "user", "passphrase")
            browser = await ctx.login(str(args["user"]), str(args["passphrase"]),
                                      _source(request))  # fmt: skip
    except Exception as exc:
        status, answer = errors(exc)
        return JSONResponse(answer, status_code=401 if status == 400 else status)
    made = JSONResponse({"token": browser.token, "csrf": browser.csrf, "user": browser.user,
                         "role": ctx.role(browser.user)})  # fmt: skip
    made.set_cookie(COOKIE, browser.token, httponly=True, secure=True, samesite="strict")
    return made


async def _logout(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    await ctx.logout(b)
    return {"ok": True}


async def _me(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return {"user": b.user, "role": ctx.role(b.user), "csrf": b.csrf,
            "machine": ctx.hostname}  # fmt: skip


async def _passwd(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    args = _object(body, "old", "new")
    new = str(args["new"])
    return {"text": await ops.passwd(ctx, b, str(args["old"]), new, str(args.get("again", new)))}


async def _features(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    ops.may_read(ctx, b)
    return ops.features(ctx)


async def _modes(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    ops.may_read(ctx, b)
    return ops.modes(ctx, b)


async def _feature(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.feature_at(ctx, b, r.path_params["feature"], _mode(r))


async def _effective(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.effective(ctx, b, r.query_params.get("machine"))


async def _remove(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.remove(ctx, b, str(_object(body, "machine")["machine"]))


async def _explain(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.explain(ctx, b, r.path_params["feature"])


async def _edit(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    """POST /features/F/edit?mode=M {"op": ..., ...}: one edit of the pending changes."""
    args = _object(body, "op")
    value = ops.edit(ctx, b, r.path_params["feature"], _mode(r) or "", str(args.pop("op")),
                     **args)  # fmt: skip
    return {"ok": True, "value": value, "pending": len(b.session.pending)}


async def _pending(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.pending(ctx, b)


async def _install(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.install_preview(ctx, b)


async def _clear(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return {"cleared": ops.clear(ctx, b)}


async def _commit(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    args = body if isinstance(body, dict) else {}
    return await ops.commit(ctx, b, str(args.get("comment") or ""), args.get("on_conflict"))


async def _history(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.history(ctx, b)


async def _commit_detail(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return ops.commit_detail(ctx, b, r.path_params["commit"])


async def _status(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.status(ctx, b)


async def _cluster(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.cluster(ctx, b)


async def _group_op(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    args = _object(body, "op")
    op = str(args.pop("op"))
    return await ops.group_op(ctx, b, op, {k: str(v) for k, v in args.items()})


async def _prepjoin(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    args = _object(body, "op")
    ops.prepjoin(ctx, b, str(args.pop("op")), {k: str(v) for k, v in args.items()})
    return {"ok": True, "pending": len(b.session.pending)}


async def _connect(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    args = _object(body, "machine", "disconnected")
    return await ops.set_disconnected(ctx, b, str(args["machine"]), bool(args["disconnected"]))


async def _check(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.clustercheck(ctx, b)


async def _force(ctx: Context, b: Browser, r: Request, body: Any) -> Any:
    return await ops.force(ctx, b, _object(body))


async def _openapi(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    return JSONResponse(openapi.document(ctx.store.catalogue))


ROUTES: list[tuple[str, str, Operation, str]] = [
    ("/api/v1/logout", "POST", _logout, "End the session"),
    ("/api/v1/me", "GET", _me, "Who this session is: user, role, CSRF token"),
    ("/api/v1/passwd", "POST", _passwd, "Change one's own passphrase ({old, new})"),
    ("/api/v1/features", "GET", _features, "The features, with their kind and levels"),
    ("/api/v1/modes", "GET", _modes, "The cluster's modes: cluster, each group and machine"),
    ("/api/v1/effective", "GET", _effective,
     "A machine's whole effective configuration (?machine=NAME; this one's by default)"),
    ("/api/v1/features/{feature}", "GET", _feature,
     "A feature at a mode: where it is defined, its value or what it inherits"),
    ("/api/v1/features/{feature}/explain", "GET", _explain,
     "The effective value on each machine, and where it comes from"),
    ("/api/v1/features/{feature}/edit", "POST", _edit,
     "One edit of this session's pending changes (define, set, delete, copy, move)"),
    ("/api/v1/pending", "GET", _pending,
     "This session's pending changes, and per machine what they would change"),
    ("/api/v1/pending", "DELETE", _clear, "Discard this session's pending changes"),
    ("/api/v1/pending/install", "GET", _install,
     "Per member, the diffs of its service files the pending changes would make"),
    ("/api/v1/commit", "POST", _commit,
     "Commit the pending changes ({comment, on_conflict: overwrite|discard})"),
    ("/api/v1/history", "GET", _history, "The newest commits"),
    ("/api/v1/history/{commit}", "GET", _commit_detail,
     "One commit: who, when, where, each unit it wrote, and what it overwrote unseen"),
    ("/api/v1/status", "GET", _status, "This member: links, peers, sync, targets"),
    ("/api/v1/cluster", "GET", _cluster, "LIST and CONNSTATUS"),
    ("/api/v1/cluster/groups", "POST", _group_op,
     "addgroup, renamegroup, deletegroup, setgroup ({op, ...})"),
    ("/api/v1/cluster/prepjoin", "POST", _prepjoin,
     "PREPJOIN new {hostname, serial, machine_key} or delete {hostname}: a pending change"),
    ("/api/v1/cluster/remove", "POST", _remove,
     "REMOVEMACHINE ({machine}): it leaves the cluster, keeping its settings"),
    ("/api/v1/cluster/connection", "POST", _connect,
     "DISCONNECT or RECONNECT a machine ({machine, disconnected})"),
    ("/api/v1/clustercheck", "GET", _check,
     "clustercheck: members that differ, changes overwritten unseen, facts"),
    ("/api/v1/clustercheck/force", "POST", _force,
     "Force a version on the whole cluster ({feature, mode, host} or {unit, lost, keep})"),
]  # fmt: skip


def routes() -> list[Route]:
    found = [Route("/api/v1/login", login, methods=["POST"]),
             Route("/api/v1/login/challenge", challenge, methods=["POST"]),
             Route("/api/v1/openapi.json", _openapi, methods=["GET"])]  # fmt: skip
    found += [Route(path, endpoint(op), methods=[method]) for path, method, op, _ in ROUTES]
    return found
