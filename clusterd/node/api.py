"""The one way in for every front end: the admin shell, the control socket (and the
``clusterd`` command line through it) and the web front end to come.

A front end holds a ``ClusterAPI``, never the daemon: it reads the store (``store``,
read only: every change is a commit), asks members through the links, and changes the
cluster only with ``commit`` or an operation of ``admin`` (``clusterd.node.admin``: create,
join, remove, disconnect, CCS ...).

``commit`` is the only commit path for people, and the role rules live here so every
front end enforces the same ones: a read-only role commits nothing, only an admin
changes users and SSH settings, everyone may change their own passphrase.  After the
store's durable write its listeners publish ``effective.json`` (``clusterd.node.publish``)
and send the commit to the members (``Daemon._on_outcomes``), whoever committed.

This module imports no front end; ``clusterd/`` never imports ``cli/``
(tests/test_layers_imports.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clusterd.core import confirm as confirms
from clusterd.core import layers
from clusterd.core.errors import ClusterdError, StoreError
from clusterd.core.versions import Commit
from clusterd.mesh.protocol import catch_up
from clusterd.store.session import Session
from clusterd.trust.logins import ADMIN_ONLY_FEATURES, READ_ONLY_ROLES, AdminLogin

if TYPE_CHECKING:
    from clusterd.mesh.members import Endpoint
    from clusterd.mesh.peers import Answered, Peer
    from clusterd.node.admin import Admin
    from clusterd.node.config import DaemonConfig
    from clusterd.node.daemon import Daemon
    from clusterd.store.store import Store
    from clusterd.trust.dns import Lookup


def require_write(user: str, role: str, what: str) -> None:
    """Refuse a change to a read-only role."""
    if role in READ_ONLY_ROLES:
        raise ClusterdError(f"{user} ({role}) may not {what}")


def require_admin(user: str, role: str, feature: str, doing: str = "") -> None:
    """Users and SSH settings are an admin's (operators cannot manage users)."""
    if feature in ADMIN_ONLY_FEATURES and role != "admin":
        raise ClusterdError(
            f"{user} ({role}) may not {doing or 'change ' + feature}: only admins manage "
            "users and SSH settings"
        )


class ClusterAPI:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    # -- this machine -------------------------------------------------------------------

    @property
    def config(self) -> DaemonConfig:
        return self._daemon.config

    @property
    def hostname(self) -> str:
        return self._daemon.config.hostname

    @property
    def store(self) -> Store:
        """For reading (state, catalogue, the log, losses); changes go through commit."""
        return self._daemon.store

    @property
    def admin(self) -> Admin:
        return self._daemon.admin

    @property
    def disconnected(self) -> bool:
        return self._daemon.node.disconnected

    @property
    def handshake_timeout(self) -> float:
        return self._daemon.timing.handshake_timeout

    @property
    def timeout(self) -> float:
        return self._daemon.timeout

    @property
    def former_names(self) -> Mapping[str, str]:
        return self._daemon.follower.former_names

    def effective(self, feature: str) -> layers.Resolved:
        return self._daemon.effective(feature)

    async def status(self) -> dict[str, Any]:
        return await self._daemon.status()

    def peer_status(self) -> list[dict[str, Any]]:
        return self._daemon.peer_status()

    def progress(self) -> dict[str, Any]:
        """What ``status`` says of the links and the catch-up, without the digest."""
        peers, vv = self._daemon.peer_status(), dict(self._daemon.store.state.vv)
        return {"peers": peers, "vv": vv, "catch_up": catch_up(vv, peers)}

    def members(self) -> dict[str, Endpoint]:
        """The other members by serial, as membership says."""
        return dict(self._daemon.peers)

    def link(self, serial: str) -> Peer | None:
        """What the links know of a member (state, reason, admin_off), or None."""
        return self._daemon.node.peers.get(serial)

    # -- users and roles ----------------------------------------------------------------

    def users(self) -> dict[str, Any]:
        return self._daemon.users()

    def role(self, login: AdminLogin) -> str | None:
        """The login's role now (None: its user or key is gone)."""
        return self._daemon.auth.role(login)

    async def check_passphrase(self, user: str, passphrase: str) -> bool:
        return (await self._daemon.auth.check_passphrase(user, passphrase))[0] is not None

    async def hash_passphrase(self, passphrase: str) -> str:
        return await self._daemon.auth.hash(passphrase)

    # -- changing -----------------------------------------------------------------------

    def session(self, user: str, *, bounded: bool = True) -> Session:
        """Pending changes of one person, up to ``max_pending_changes`` (``bounded``; the
        control socket's requests are bounded by its line length instead)."""
        limit = self._daemon.config.max_pending_changes if bounded else None
        return Session(self._daemon.store, user, limit)

    async def commit(
        self,
        session: Session,
        comment: str,
        *,
        role: str,
        on_conflict: str = "keep",
        passwd_of: str | None = None,
        confirm: int | None = None,
        confirming: bool = False,
        probe: str | None = None,
    ) -> Commit | None:
        """Commit ``session``'s pending changes as its user in ``role`` (as it is now: the
        caller reads it again just before), and return once it is durable.  The write is
        the store's writer's (off the links' loop); if it fails, the session's changes are
        pending again and ``StoreError`` says why.  ``passwd_of``: the session holds only
        that user's new passphrase, which every user may change for itself and an admin
        for anyone.

        ``confirming`` (the shell's ``commit`` and ``confirm``): the pending confirmed
        commits are confirmed (their rows of ``confirm`` removed).  ``confirm`` (MINUTES)
        makes a confirmed commit instead, and moves every pending one's deadline to its
        own (docs/history.md, 5); ``probe`` "links": rolled back at once if a member
        loses a link in the next 3 ping intervals, "targets": if a member's service
        target fails to apply it, "links,targets": both.  Other commits (the control
        socket's, a rollback's) leave them pending."""
        user = session.user
        if passwd_of is not None:
            if passwd_of != user and role != "admin":
                raise ClusterdError("only an admin may change another user's passphrase")
            if {unit.feature for unit, _ in session.pending.items()} - {"userconfig"}:
                raise ClusterdError("a passphrase change holds the passphrase only")
        else:
            require_write(user, role, "commit changes")
            for feature in sorted({unit.feature for unit, _ in session.pending.items()}):
                require_admin(user, role, feature)
        saved, hostname = session.pending.saved(), session.store.hostname
        state, deadline = session.store.state, None
        if confirm is not None:
            deadline = time.time() + confirm * self.config.confirm_minute
            for unit, row in confirms.extended(state, deadline):
                session.pending.write(state, unit, row, checked=True)
        elif confirming:
            for unit in confirms.confirmed(state):
                session.pending.write(state, unit, None, checked=True)
        asked = (
            None
            if deadline is None or confirm is None
            else confirms.Asked(deadline, confirm, probe)
        )
        try:
            made = session.commit(comment, on_conflict=on_conflict, confirm=asked)
        except BaseException:
            session.pending.restore(saved)
            raise
        try:
            await session.store.durable(made)
        except StoreError:
            session.pending.restore(saved)
            session.store.hostname = hostname  # (a standalone rename, undone)
            raise
        return made

    # -- service targets (docs/services.md) ----------------------------------------------

    async def install_preview(self, writes: list[Any]) -> dict[str, Any]:
        """Per member, what pending writes would do to its service files."""
        from clusterd.node import preview

        return await preview.everywhere(self._daemon, writes)

    def targets(self) -> dict[str, Any]:
        return self._daemon.targets.status()

    async def target_rollback(self, user: str, role: str, name: str, back: int) -> dict[str, Any]:
        """The generation ``back`` before the live one, live again (and reloaded)."""
        require_write(user, role, "roll a target back")
        return await self._daemon.targets.get(name).rollback(back)

    def target_force(self, user: str, role: str, name: str) -> dict[str, Any]:
        """The next apply of ``name`` passes the guards against emptied maps, once."""
        require_write(user, role, "force a target")
        return self._daemon.targets.force(name)

    async def truncate_log(self, keep: int) -> int:
        """Drop the changes of all but the ``keep`` newest commits from the log (by the
        store's writer, after the batches queued before)."""
        return await self._daemon.store.truncate_queued(keep)

    def stop(self) -> None:
        self._daemon.stop()

    # -- asking the members and the world ----------------------------------------------

    async def ask(self, serial: str, kind: str, args: dict[str, Any], timeout: float) -> Answered:
        return await self._daemon.ask(serial, kind, args, timeout)

    async def node_checks(self, asked: Mapping[str, Any]) -> dict[str, Any]:
        return await self._daemon.node_checks(asked)

    async def chain_check(self) -> dict[str, Any]:
        return await self._daemon.chain_check()

    async def lookup(self, name_or_address: str, reverse: bool) -> Lookup:
        resolver = self._daemon.resolver
        if reverse:
            return await resolver.reverse(name_or_address)
        return await resolver.forward(name_or_address)

    # -- sessions (who is logged in) -----------------------------------------------------

    def admit(self, shell: Any) -> str | None:
        """Count a shell or command session in (``who``, ``last``); or why not: its user
        has ``max_sessions_per_user`` open already (the words to end it with)."""
        limit, user = self.config.max_sessions_per_user, shell.user
        if sum(s.user == user for s in self._daemon.shells) >= limit:
            self.refuse(f"sessions {user}", f"{user}: {limit} sessions open (max_sessions_"
                        f"per_user): refused another from {shell.source}")  # fmt: skip
            return (f"Error: {user} already has {limit} sessions open on "
                    f"{self.config.hostname}; close one first.")  # fmt: skip
        self._daemon.shells.add(shell)
        self._daemon.logins.append({"at": shell.since, "source": shell.source, "ok": True,
                                    "user": user, "command": shell.command})  # fmt: skip
        return None

    def sessions(self) -> list[dict[str, Any]]:
        """Who is logged in here: user, source, command (None: a shell), since."""
        return sorted(({"user": s.user, "source": s.source, "command": s.command,
                        "since": s.since} for s in self._daemon.shells),
                      key=lambda s: s["since"])  # fmt: skip

    def leave(self, shell: Any) -> None:
        self._daemon.shells.discard(shell)

    @property
    def logins(self) -> Any:
        return self._daemon.logins

    def refuse(self, kind: str, text: str) -> None:
        """Count and (throttled) log a refusal (``status``'s gate counts)."""
        self._daemon.gate.refuse(kind, text)
