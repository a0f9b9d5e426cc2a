"""The web application: the JSON API (``clusterd.web.api``) and the pages
(``clusterd.web.pages``) on one Starlette app, with what every response shares
(``docs/web.md``): the session from its cookie or bearer token, CSRF on every change
made with a cookie, security headers, bounded request bodies, and errors as words.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clusterd.core.errors import ClusterdError, SessionExpired
from clusterd.schema.validation import InvalidSetting
from clusterd.web.context import Browser, Context
from clusterd.web.ops import Conflicts, Refused

HERE = Path(__file__).parent
COOKIE = "clusterd_session"
MAX_BODY = 1024 * 1024  # bytes of a request body; more is refused (413)
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000"),
]


class Secured:
    """Security headers on every response; a request body past ``MAX_BODY`` refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await JSONResponse({"error": f"a request body is at most {MAX_BODY} bytes"},
                               status_code=413)(scope, receive, send)  # fmt: skip
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise HTTPException(413, f"a request body is at most {MAX_BODY} bytes")
            return message

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *HEADERS]
            await send(message)

        await self.app(scope, bounded, headed)


class Auth:
    """Who a request is: its session (cookie or ``Authorization: Bearer``), and whether
    it must carry the CSRF token (a cookie comes with every request a browser makes,
    whoever made the page; a bearer token only with the requests of who holds it)."""

    @staticmethod
    def token(request: Request) -> tuple[str | None, bool]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip(), False
        return request.cookies.get(COOKIE), True

    @staticmethod
    async def browser(request: Request, form: dict[str, Any] | None = None) -> Browser:
        """The session of ``request``; 401 without one, 403 for a change made with a
        cookie that does not carry the session's CSRF token."""
        ctx: Context = request.app.state.ctx
        token, by_cookie = Auth.token(request)
        browser = ctx.browser(token)
        if browser is None:
            raise HTTPException(401, "log in first (or the session expired)")
        if by_cookie and request.method in UNSAFE:
            sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf")
            if sent != browser.csrf:
                raise HTTPException(403, "refused: the form's CSRF token is missing or wrong")
        return browser


def errors(exc: Exception) -> tuple[int, dict[str, Any]]:
    """An exception of ours as an HTTP status and a JSON body."""
    if isinstance(exc, HTTPException):
        return exc.status_code, {"error": exc.detail}
    if isinstance(exc, SessionExpired):
        return 401, {"error": str(exc)}
    if isinstance(exc, Refused):
        return 403, {"error": str(exc)}
    if isinstance(exc, Conflicts):
        return 409, {"error": str(exc), "conflicts": exc.found}
    if isinstance(exc, InvalidSetting):
        return 422, {"error": "; ".join(exc.problems), "problems": exc.problems}
    if isinstance(exc, ClusterdError | KeyError | ValueError | TypeError):
        return 400, {"error": str(exc)}
    raise exc


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise HTTPException(400, f"not JSON: {exc}") from None


Handler = Callable[[Request], Awaitable[Response]]


def build(ctx: Context) -> Starlette:
    from clusterd.web import api, pages

    app = Starlette(
        routes=[*api.routes(), *pages.routes(),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[Middleware(Secured)],
        exception_handlers={HTTPException: pages.http_error},
    )  # fmt: skip
    app.state.ctx = ctx
    return app
