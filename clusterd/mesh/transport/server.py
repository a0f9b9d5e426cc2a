"""The SSH servers: who a connection is, and the one kind of session its login opens.

Authentication state is per *attempt*.  Each ``validate_*`` call starts a new attempt
and forgets the previous one's result; a check that passes only names a candidate
login for that attempt.  The connection's ``login`` is set in ``auth_completed`` from
the attempt that completed (the last one, for the user asyncssh reports), and never
changes after.  A public-key *query* (no signature) that the server answers "OK" thus
gives nothing: if the client then logs in another way, the login is that other way's.

Each login kind opens one kind of session (``session_requested``):

======================  ================================  ==========================
login                   session                            may open
======================  ================================  ==========================
``PeerLogin``           ``LinkSession``                   subsystem ``clusterd``
``JoinLogin``           ``JoinSession``                   subsystem ``clusterd-join``
``AdminLogin``          ``AdminSession`` (admin port)     shell, exec (one command),
                                                          ``clusterd-join`` if the
                                                          login is a passphrase of
                                                          a user whose role is admin
======================  ================================  ==========================

``CcsServer`` has no password method and gives no admin keys, so it can produce no
``AdminLogin`` and has no code path to a shell: the CCS port carries links and key joins
only, by construction.  Everything else a session is asked (PTYs on links, SFTP, exec
on the CCS port...) is refused and logged.  Port forwarding of every kind is refused on
both ports.  ``clusterd.mesh.transport.limits`` bounds connections, attempts and channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import asyncssh

from clusterd.core.text import printable
from clusterd.mesh.members import key_text
from clusterd.mesh.transport.limits import Gate
from clusterd.mesh.transport.ssh import PEER_USER, SUBSYSTEM, LinkSettings, _LinkChannel
from clusterd.trust.join import KEY_USER as JOIN_USER
from clusterd.trust.join import SUBSYSTEM as JOIN_SUBSYSTEM
from clusterd.trust.join import JoinAnswer, Joiner, JoinLine, JoinRequest
from clusterd.trust.logins import AdminLogin, JoinLogin, Login, Logins, PeerLogin

log = logging.getLogger("clusterd.transport")


class ShellIO(Protocol):
    """An admin shell on a channel (``cli.serve.ShellChannel``)."""

    def start(self) -> None: ...
    def feed(self, data: bytes) -> None: ...
    def eof(self) -> None: ...
    def stop(self) -> None: ...
    def writable(self, yes: bool) -> None: ...


class Mesh(Protocol):
    """What the servers ask of, and tell, the daemon."""

    @property
    def config(self) -> LinkSettings: ...
    @property
    def auth(self) -> Logins: ...
    @property
    def gate(self) -> Gate: ...
    async def reverse_check(self, serial: str, address: str) -> str | None: ...
    async def admit_request(self, request: JoinRequest | str, joiner: Joiner) -> JoinAnswer: ...
    def open_shell(self, login: AdminLogin, chan: Any, command: str | None) -> ShellIO | None: ...
    def link_up(self, link: Any, peer: str, outbound: bool) -> int: ...
    def link_data(self, link_id: int, data: bytes) -> None: ...
    def link_down(self, link_id: int, reason: str) -> None: ...


def _what(text: str) -> str:
    """A client's words as a log line may quote them: escaped, and at most 80 long."""
    shown = printable(text)
    return repr(shown if len(shown) <= 80 else shown[:77] + "...")


class _Session(asyncssh.SSHServerSession[bytes]):
    """Refuses (and logs) every request its login may not make; subclasses allow some."""

    def __init__(self, server: PeerServer) -> None:
        self.server = server
        self.chan: Any = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        return False

    def shell_requested(self) -> bool:
        self.server.refused("a shell")
        return False

    def exec_requested(self, command: str) -> bool:
        self.server.refused(f"exec {_what(command)}")
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        self.server.refused(f"subsystem {_what(subsystem)}")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.channel_closed()


class LinkSession(_LinkChannel, _Session):
    """A member's link: the ``clusterd`` subsystem, frames both ways."""

    def __init__(self, server: PeerServer, peer: str) -> None:
        _LinkChannel.__init__(self, server.mesh)
        _Session.__init__(self, server)
        self.peer = peer

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == SUBSYSTEM:
            return True
        return super().subsystem_requested(subsystem)

    def session_started(self) -> None:
        self.link_id = self.server.mesh.link_up(self, self.peer, outbound=False)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        _Session.connection_lost(self, exc)
        self._lost(exc)

    def close(self) -> None:
        super().close()
        if self.server.conn is not None:
            self.server.conn.close()


class _JoinExchange:
    """The member side of one join request on a channel: one line in, one answer out.
    ``refusal``: the caller may not join; every request gets that answer, unread."""

    def __init__(self, mesh: Mesh, chan: Any, joiner: Joiner, refusal: str = "") -> None:
        self.mesh, self.chan, self.joiner = mesh, chan, joiner
        self.refusal = refusal
        self.line = JoinLine()
        self.answered = False
        self.task: asyncio.Future[None] | None = None  # the answer, once the line is read

    def feed(self, data: bytes) -> None:
        if not self.answered:
            request = self.line.feed(data)
            if request is not None:
                self._answer(request)

    def eof(self) -> None:
        if not self.answered:
            self._answer(self.line.feed(b"\n") or "empty join request")

    def _answer(self, request: JoinRequest | str) -> None:
        self.answered = True
        self.task = asyncio.ensure_future(self._reply(request))

    async def _reply(self, request: JoinRequest | str) -> None:
        if self.refusal:
            answer = JoinAnswer(ok=False, error=self.refusal)
        else:
            try:
                answer = await self.mesh.admit_request(request, self.joiner)
            except Exception:  # never the joiner's to see; the log has it
                log.exception("join request failed")
                answer = JoinAnswer(ok=False, error="the member failed to answer; see its log")
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.write(answer.model_dump_json().encode() + b"\n")
            self.chan.exit(0 if answer.ok else 1)


class JoinSession(_Session):
    """A machine joining with its PREPJOIN key: the ``clusterd-join`` subsystem only."""

    def __init__(self, server: PeerServer, joiner: Joiner) -> None:
        super().__init__(server)
        self.joiner = joiner
        self.join: _JoinExchange | None = None

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == JOIN_SUBSYSTEM:
            self.join = _JoinExchange(self.server.mesh, self.chan, self.joiner)
            return True
        return super().subsystem_requested(subsystem)

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.join is not None:
            self.join.feed(data)

    def eof_received(self) -> bool:
        if self.join is not None:
            self.join.eof()
            return True  # half-open until the answer is written (it closes the channel)
        return False


class AdminSession(_Session):
    """An admin's session on the admin port: a shell, one command, or (a passphrase
    login whose role is admin now) a join of another machine."""

    def __init__(self, server: PeerServer, login: AdminLogin) -> None:
        super().__init__(server)
        self.login = login
        self.shell: ShellIO | None = None
        self.join: _JoinExchange | None = None

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        return True

    def shell_requested(self) -> bool:
        self.shell = self.server.mesh.open_shell(self.login, self.chan, None)
        return self.shell is not None or super().shell_requested()

    def exec_requested(self, command: str) -> bool:
        self.shell = self.server.mesh.open_shell(self.login, self.chan, command)
        return self.shell is not None or super().exec_requested(command)

    def subsystem_requested(self, subsystem: str) -> bool:
        joiner = self.login.joiner
        if subsystem == JOIN_SUBSYSTEM and joiner is not None:
            # Only an admin's join request is read: others get this answer and learn
            # nothing of the cluster (its members, serials, groups).
            role = self.server.mesh.auth.role(self.login)
            refusal = "" if role == "admin" else (
                f"user {self.login.user!r} is not a cluster admin (role {role}): only an "
                "admin may add a machine")  # fmt: skip
            if refusal:
                self.server.refused(f"a join by user {self.login.user!r} (role {role})")
            joiner = Joiner("passphrase", self.login.user, role=str(role))
            self.join = _JoinExchange(self.server.mesh, self.chan, joiner, refusal)
            return True
        return super().subsystem_requested(subsystem)

    def session_started(self) -> None:
        if self.shell is not None:
            self.shell.start()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.shell is not None:
            self.shell.feed(data)
        elif self.join is not None:
            self.join.feed(data)

    def eof_received(self) -> bool:
        if self.join is not None:
            self.join.eof()
            return True  # half-open until the answer is written (it closes the channel)
        if self.shell is not None:
            self.shell.eof()
        return True  # half-open: a command runs on after its input ends (ssh host CMD)

    def pause_writing(self) -> None:
        if self.shell is not None:
            self.shell.writable(False)

    def resume_writing(self) -> None:
        if self.shell is not None:
            self.shell.writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.shell is not None:
            self.shell.stop()


class PeerServer(asyncssh.SSHServer):
    """Members (user ``clusterd``, machine key) and PREPJOIN joins (user
    ``clusterd-join``, the registered key).  The CCS port is exactly this."""

    name = "CCS"

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.conn: asyncssh.SSHServerConnection | None = None
        self.login: Login | None = None  # set once, when authentication completes
        self.source = "?"
        self.host = "?"
        self.channels = 0
        self._attempts = 0
        self._candidate: tuple[int, str, Login] | None = None  # (attempt, user, login)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source} {self.login}>"

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.host, port = str(peer[0]), peer[1]
        self.source = f"{self.host}:{port}"
        if not self.mesh.gate.opened(self):
            conn.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.mesh.gate.closed(self)

    def refused(self, what: str) -> None:
        log.warning("%s: refused %s on the %s port", self.source, what, self.name)

    # -- authentication -----------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self._candidate = None
        return True  # every user must authenticate

    def _begin_attempt(self) -> int | None:
        """A new attempt: the previous one's result is forgotten.  None: too many."""
        self._candidate = None
        self._attempts += 1
        if self._attempts > self.mesh.gate.max_auth_tries:
            self.mesh.gate.too_many_attempts(self)
            if self.conn is not None:
                self.conn.abort()
            return None
        return self._attempts

    def _accept(self, attempt: int, username: str, login: Login) -> bool:
        """This attempt's checks passed: ``login`` is what it gives if it completes."""
        if attempt != self._attempts:
            return False  # a later attempt started meanwhile
        self._candidate = (attempt, username, login)
        return True

    def _refuse(self, reason: str, *, counts: bool, alert: bool = True) -> bool:
        """Log and alert (unless ``alert`` is False: held, ``Logins.hold``), tell the
        client why (an SSH banner), fail this attempt."""
        if self.conn is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self.conn.send_auth_banner(reason + "\n")
        if alert:
            self.mesh.auth.failed(self.source, reason, counts=counts)
        return False

    def auth_completed(self) -> None:
        user = self.conn.get_extra_info("username") if self.conn is not None else None
        found = self._candidate
        self._candidate = None
        if found is None or found[0] != self._attempts or found[1] != user:
            log.error("%s: authentication completed without a login: closed", self.source)
            if self.conn is not None:
                self.conn.abort()
            return
        self.login = found[2]
        self.mesh.gate.authenticated(self, member=isinstance(self.login, PeerLogin))

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        attempt = self._begin_attempt()
        if attempt is None:
            return False
        text = key_text(key.export_public_key().decode())
        fp = key.get_fingerprint()
        auth = self.mesh.auth
        if username == PEER_USER:
            serial = auth.peer_for_key(text)
            if serial is None:
                why = auth.removed_for_key(text) or f"not a member's machine key ({fp})"
                why = f"user {username!r}: {why}"
                if auth.hold(text, self.source, why):  # joining: judged once it is over
                    return self._refuse(why, counts=False, alert=False)
                return self._refuse(why, counts=False)
            reason = await self.mesh.reverse_check(serial, self.host)
            if reason is not None:
                return self._refuse(reason, counts=False)
            return self._accept(attempt, username, PeerLogin(serial))
        if username == JOIN_USER:
            host = auth.prepared_for_key(text)
            if host is None:
                why = f"key {fp} is not registered with PREPJOIN here"
                return self._refuse(why, counts=False)
            return self._accept(attempt, username, JoinLogin(Joiner("key", host, text)))
        login = self._admin_key(username, text)
        if login is None:
            why = f"key {fp} is not an admin key of user {printable(username)!r}"
            return self._refuse(self._admin_refusal(why), counts=False)
        return self._accept(attempt, username, login)

    def _admin_key(self, username: str, key: str) -> AdminLogin | None:
        return None  # no admin logs in on the CCS port

    def _admin_refusal(self, why: str) -> str:
        return f"{why}: the {self.name} port takes members and PREPJOIN keys only"

    # -- channels -----------------------------------------------------------------------

    def session_requested(self) -> _Session | bool:
        if not self.mesh.gate.channel(self):
            return False
        return self._session()

    def _session(self) -> _Session:
        login = self.login
        if isinstance(login, PeerLogin):
            return LinkSession(self, login.serial)
        if isinstance(login, JoinLogin):
            return JoinSession(self, login.joiner)
        return _Session(self)  # nothing allowed (cannot happen: no other login here)

    def channel_closed(self) -> None:
        self.channels = max(0, self.channels - 1)

    def connection_requested(self, *args: Any) -> bool:
        self.refused("port forwarding")
        return False

    def server_requested(self, *args: Any) -> bool:
        self.refused("remote forwarding")
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        self.refused("socket forwarding")
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        self.refused("remote socket forwarding")
        return False


CcsServer = PeerServer


class AdminServer(PeerServer):
    """The admin SSH port: everything the CCS port takes, plus admins (passphrase or
    key) with shells, one-command calls, and passphrase joins."""

    name = "admin"

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        attempt = self._begin_attempt()
        if attempt is None:
            return False
        blocked = self.mesh.auth.blocked(self.host)
        if blocked:
            return self._refuse(blocked, counts=False)
        role, reason = await self.mesh.auth.check_passphrase(username, password)
        if role is None:
            return self._refuse(reason, counts=True)
        return self._accept(attempt, username, AdminLogin(username, "passphrase"))

    def _admin_key(self, username: str, key: str) -> AdminLogin | None:
        return self.mesh.auth.admin_key_login(username, key)

    def _admin_refusal(self, why: str) -> str:
        # Does not count: an SSH client offers every key it has (OpenSSH: ~/.ssh/id_*,
        # the agent's) before it asks for the passphrase, so a refused key is no failed
        # login, and a key cannot be guessed anyway.
        return why

    def _session(self) -> _Session:
        if isinstance(self.login, AdminLogin):
            return AdminSession(self, self.login)
        return super()._session()
