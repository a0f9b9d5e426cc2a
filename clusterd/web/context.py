"""What the web application holds: the image of the store, the node to ask, and the
browser sessions this worker serves (``docs/web.md``).

The node made each session (it checked the passphrase) and checks every change a
session asks for; this side keeps what a session needs between requests: its user,
its CSRF token and its pending changes (a store ``Session``, as each shell has).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.errors import SessionExpired
from clusterd.trust.logins import AdminLogin, role_in

if TYPE_CHECKING:
    from clusterd.store.session import Session
    from clusterd.store.store import Store

Ask = Callable[..., Awaitable[Any]]  # (token, call name, *args, **kwargs) -> the answer


@dataclass
class Browser:
    """One logged-in session, as this worker knows it."""

    token: str
    user: str
    csrf: str
    session: Session
    expires: float  # monotonic; the node's own clock decides, this only forgets
    minutes: float
    events: list[str] = field(default_factory=list)  # what happened, for the next page


class Context:
    def __init__(self, store: Store, ask: Ask, info: dict[str, Any]) -> None:
        self.store = store
        self._ask = ask
        self.config = info["config"]
        self.serial: str = self.config.serial
        self.browsers: dict[str, Browser] = {}
        self.changed: list[Callable[[], None]] = []  # told after each batch applied here

    # -- this machine, as the image says -------------------------------------------------

    @property
    def hostname(self) -> str:
        for name, row in layers.machines(self.store.state).items():
            if row.get("serial") == self.serial:
                return name
        return self.store.hostname

    def effective(self, feature: str) -> layers.Resolved:
        state = self.store.state
        return layers.resolve(state, self.store.catalogue[feature],
                              layers.chain(state, self.hostname))  # fmt: skip

    def role(self, user: str) -> str | None:
        """The role ``user`` has now (None: gone).  What a page shows; the node decides
        every change itself."""
        return role_in(self.effective, AdminLogin(user, "passphrase"))

    # -- the node ------------------------------------------------------------------------

    async def ask(self, browser: Browser | None, name: str, *args: Any, **kwargs: Any) -> Any:
        token = None if browser is None else browser.token
        try:
            return await self._ask(token, name, *args, **kwargs)
        except SessionExpired:
            if browser is not None:
                self.browsers.pop(browser.token, None)
            raise

    async def login(self, user: str, passphrase: str, source: str) -> Browser:
        return self._browser(await self._ask(None, "login", user, passphrase, source))

    async def challenge(self, user: str, key: str, source: str) -> str:
        """A key login's challenge (``docs/web.md``), for the user's public ``key``."""
        return str(await self._ask(None, "login_challenge", user, key, source))

    async def key_login(self, challenge: str, signature: str, source: str) -> Browser:
        return self._browser(await self._ask(None, "login_key", challenge, signature, source))

    def _browser(self, made: dict[str, Any]) -> Browser:
        from clusterd.store.session import Session

        browser = Browser(made["token"], made["user"], made["csrf"],
                          Session(self.store, made["user"], self.config.max_pending_changes),
                          time.monotonic() + made["minutes"] * 60, made["minutes"])  # fmt: skip
        self.browsers[browser.token] = browser
        return browser

    async def logout(self, browser: Browser) -> None:
        self.browsers.pop(browser.token, None)
        with contextlib.suppress(SessionExpired):  # (the node forgot it already)
            await self._ask(browser.token, "logout")

    def browser(self, token: str | None) -> Browser | None:
        """The session of ``token``, if this worker knows it and it has not expired here."""
        found = self.browsers.get(token or "")
        if found is None:
            return None
        now = time.monotonic()
        if found.expires < now:
            self.browsers.pop(found.token, None)
            return None
        found.expires = now + found.minutes * 60
        return found
