"""Who may log in, as what, and what a login may open: the decisions the SSH servers ask.

A connection's identity is one of three ``Login`` kinds, fixed when SSH authentication
*completes* (``clusterd.mesh.transport.server``), never by an earlier attempt:

* ``PeerLogin``: user ``clusterd`` with a member's machine key.  Opens a link.
* ``JoinLogin``: user ``clusterd-join`` with a key registered by PREPJOIN.  Joins.
* ``AdminLogin``: a user of ``userconfig`` with a passphrase, or with a key of
  ``sshconfig admin_keys``, or ``admin`` with the machine's local admin key.  Opens
  shells; a passphrase login of role admin may also join another machine (the join
  subsystem), nobody else may.

Roles are read again at every use (``role``): a user deleted or demoted on any member
loses the right as soon as the commit arrives here, even in a shell already open.
Key logins never count towards the lockout and are never locked out (keys cannot be
guessed); wrong passphrases are counted per source address (``clusterd.trust.ratelimit``).

Passphrases are checked with scrypt in a small thread pool (30-65 ms each), never on the
event loop; an unknown user costs the same scrypt against a dummy hash, so timing does
not tell which user names exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from clusterd.core import layers
from clusterd.mesh.members import key_text
from clusterd.schema.access import hash_passphrase, verify_passphrase
from clusterd.trust.join import Joiner
from clusterd.trust.ratelimit import Limiter

log = logging.getLogger(__name__)
MAX_HELD = 256  # refused member logins kept until a join is over (``Logins.hold``)

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

READ_ONLY_ROLES = frozenset({"read-only", "guest"})
# Only these roles manage who may log in (users, SSH keys and algorithms).
ADMIN_ONLY_FEATURES = frozenset({"userconfig", "sshconfig"})


@dataclass(frozen=True, slots=True)
class PeerLogin:
    serial: str


@dataclass(frozen=True, slots=True)
class JoinLogin:
    joiner: Joiner


@dataclass(frozen=True, slots=True)
class AdminLogin:
    user: str
    method: Literal["passphrase", "key", "local-key"]
    key: str = ""  # the key that logged in (key methods)

    @property
    def joiner(self) -> Joiner | None:
        """A passphrase login may join another machine (if its role is admin then)."""
        return Joiner("passphrase", self.user) if self.method == "passphrase" else None


Login = PeerLogin | JoinLogin | AdminLogin


def role_in(effective: Callable[[str], Any], login: AdminLogin) -> str | None:
    """The role ``login`` has in a configuration (``effective``: a feature's effective
    value on this machine, as ``Daemon.effective`` gives it); None: the user, or the key
    it logged in with, is gone.  The node asks it of its store, a shell worker of its
    image of the store."""
    if login.method == "local-key":
        return "admin"  # whoever holds the data directory's key holds the machine
    row = (effective("userconfig").value or {}).get(login.user)
    if row is None:
        return None
    if login.method == "key":
        keys = effective("sshconfig").value["admin_keys"]
        if not any(k["user"] == login.user and key_text(k["key"]) == login.key for k in keys):
            return None
    return str(row["role"])


@functools.cache
def _dummy_hash() -> str:
    """What an unknown user's passphrase is checked against (same cost as a real one)."""
    return hash_passphrase(secrets.token_urlsafe(24))


class Logins:
    """Authentication for one daemon: keys, passphrases, roles, failures, lockout."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        c = daemon.config
        self.limiter = Limiter(c.login_failures, c.login_window, c.login_lockout)
        self._hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scrypt")
        # While this machine joins a cluster: member logins refused for an unknown key,
        # (key, source, why), judged once the join is over (``joining``)
        self._held: list[tuple[str, str, str]] | None = None

    def close(self) -> None:
        self._hashing.shutdown(wait=False, cancel_futures=True)

    # -- what the state says ------------------------------------------------------------

    def users(self) -> dict[str, Any]:
        """This machine's effective userconfig."""
        return self.daemon.effective("userconfig").value or {}

    def peer_for_key(self, key: str) -> str | None:
        me = self.daemon.config.serial
        for serial, peer in self.daemon.peers.items():
            if peer.machine_key and key_text(peer.machine_key) == key and serial != me:
                return serial
        return None

    def removed_for_key(self, key: str) -> str | None:
        """Why ``key`` is no member's any more, if it was one: removed by whom, where,
        when (the ``removed`` row of its machine)."""
        state = self.daemon.store.state
        for host, version in state.entries("removed", layers.CLUSTER).rows.items():
            row = version.value
            if (
                row is None
                or row.get("renamed_to")
                or key_text(str(row.get("machine_key") or "")) != key
            ):
                continue
            where = layers.hostnames(state).get(version.origin, version.origin)
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(row["at"])))
            return (f"{host} was removed from the cluster by {row['by']!r} on {where} at "
                    f"{when}")  # fmt: skip
        return None

    def prepared_for_key(self, key: str) -> str | None:
        for host, row in layers.prepared(self.daemon.store.state).items():
            if key_text(str(row["machine_key"])) == key:
                return host
        return None

    def _is_local_admin_key(self, key: str) -> bool:
        local = self.daemon.config.admin_key.with_suffix(".pub")
        try:
            return key_text(local.read_text(encoding="utf-8")) == key
        except OSError:
            return False

    def admin_key_login(self, user: str, key: str) -> AdminLogin | None:
        """The login a key gives ``user``: the local admin key is admin's; other keys are
        given to users in sshconfig ``admin_keys``."""
        if user == "admin" and self._is_local_admin_key(key):
            return AdminLogin(user, "local-key", key)
        login = AdminLogin(user, "key", key)
        return login if self.role(login) is not None else None

    def role(self, login: AdminLogin) -> str | None:
        """The role ``login`` has *now* (None: the user, or its key, is gone)."""
        return role_in(self.daemon.effective, login)

    # -- passphrases --------------------------------------------------------------------

    async def check_passphrase(self, user: str, passphrase: str) -> tuple[str | None, str]:
        """(the user's role, "") when the passphrase is right, else (None, why not)."""
        row = self.users().get(user)
        hashed = _dummy_hash() if row is None else str(row["passphrase_hash"])
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._hashing, verify_passphrase, passphrase, hashed)
        if row is None or not ok:
            return None, f"wrong passphrase for user {user!r}"
        return str(row["role"]), ""

    async def hash(self, passphrase: str) -> str:
        """``hash_passphrase`` off the event loop (passwd)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hashing, hash_passphrase, passphrase)

    # -- failures and lockout -----------------------------------------------------------

    @contextlib.contextmanager
    def joining(self) -> Iterator[None]:
        """Around a join of this machine.  The members learn of it from the admission
        commit and dial it at once, often before it has taken the cluster's state and
        knows their keys: those logins are refused as always, but alerted only if, once
        the join is over, the key is still no member's (a join that failed: all are)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for key, source, why in held:
                if self.peer_for_key(key) is None:
                    self.failed(source, why)
                else:
                    log.info("%s: a member dialed before this machine had joined (refused; "
                             "it dials again)", source)  # fmt: skip

    def hold(self, key: str, source: str, why: str) -> bool:
        """Keep a member login refused for an unknown key until a join in progress is
        over (``joining``): True when one is (and fewer than ``MAX_HELD`` wait: a flood
        of logins during a join is alerted at once)."""
        if self._held is None or len(self._held) >= MAX_HELD:
            return False
        self._held.append((key, source, why))
        return True

    def failed(self, source: str, reason: str, *, counts: bool = False) -> None:
        """Log and alert a refused login; ``counts`` (a wrong passphrase) adds a failure
        towards the lockout of the source's address.  Nothing takes failures away but
        time (``clusterd.trust.ratelimit``: no reset on success)."""
        d = self.daemon
        if counts:
            d.logins.append({"at": time.time(), "source": source, "ok": False, "why": reason})
        d.alert("authentication error", source, f"login from {source} refused: {reason}")
        host = source.rpartition(":")[0] or source
        if counts and self.limiter.failed(host, d.now()):
            text = f"{host}: {self.limiter.limit} failed logins; locked out for "
            d.alert("authentication error", host, text + f"{self.limiter.lockout:.0f} s")

    def blocked(self, host: str) -> str | None:
        """Why passphrases from ``host`` are not even checked now (its lockout), or None."""
        left = self.limiter.blocked(host, self.daemon.now())
        if not left:
            return None
        return f"too many failed logins from {host}: try again in {left:.0f} s"
