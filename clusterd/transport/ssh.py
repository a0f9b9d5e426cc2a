"""SSH transports: the cluster subsystem on the admin port and on the CCS port.

Peers log in as user ``clusterd`` with their machine key; the key must be the
``machine_key`` of a member in the replicated membership, which tells us who the peer
is.  The dialer checks the server's host key against the member's pinned ``host_key``
(no trust on first use).  Each link is one SSH connection carrying one session on the
``clusterd`` subsystem; frames flow as raw bytes both ways.

A joining machine logs in as a cluster admin with the passphrase (admin port only) or
as user ``clusterd-join`` with a machine key registered by PREPJOIN, and opens the
``clusterd-join`` subsystem for one request (``clusterd.join``).  Every refused login
is logged, raised as an alert and explained to the client in an SSH banner; failed
passphrases and join keys count towards the per-source lockout, keys refused for an
admin user do not (clients offer every key they hold before the passphrase).

``AdminServer`` listens on the admin SSH port.  Its sessions are ``ChannelSession``s
that decide per request what they become: a link, a join; the admin shell arrives on
the same class (issue 5), so everything shares the port.  ``CcsServer`` serves links
and key joins only: shells, exec (and so SCP), SFTP, PTYs and every kind of forwarding
are refused, whoever asks.  Both negotiate only the algorithms of ``sshconfig``.

asyncssh errors stop here: dialling raises ``TransportError`` with the alert kind.

Fault injection (``link_delay_ms``, ``link_jitter_ms`` in ``clusterd.toml``; both 0, the
default, is off): every frame the daemon writes on a link, inbound or outbound, is held
for delay + uniform(0, jitter) ms before it reaches the channel.  A frame is never
released before an earlier one of the same link (its due time is at least the previous
frame's), so each link keeps its order; one timer per link releases what is due.
Closing the link, or losing it, drops the frames still held (a goodbye written just
before a close too).  The SSH handshake itself is not delayed.  Off, ``write`` goes
straight to the channel as it always did: no timer, no queue.  The kernel's netem
would do this below TCP; this is for machines without it (fault campaigns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh

from clusterd.errors import TransportError
from clusterd.join import KEY_USER as JOIN_USER
from clusterd.join import SUBSYSTEM as JOIN_SUBSYSTEM
from clusterd.join import (
    Algorithms,
    BannerClient,
    JoinAnswer,
    Joiner,
    JoinLine,
    JoinRequest,
    mismatch,
)
from clusterd.members import Endpoint, key_text

SUBSYSTEM = "clusterd"
PEER_USER = "clusterd"
log = logging.getLogger("clusterd.transport")


class LinkSettings(Protocol):
    """The daemon configuration's fault-injection settings (``DaemonConfig``)."""

    @property
    def link_delay_ms(self) -> float: ...
    @property
    def link_jitter_ms(self) -> float: ...


class Mesh(Protocol):
    """What a transport asks of, and tells, the daemon."""

    @property
    def config(self) -> LinkSettings: ...
    def peer_for_key(self, key: str) -> str | None: ...
    def prepared_for_key(self, key: str) -> str | None: ...
    def login(self, user: str, passphrase: str) -> tuple[str | None, str]: ...
    async def reverse_check(self, serial: str, address: str) -> str | None: ...
    def auth_blocked(self, source: str) -> str | None: ...
    def admit_request(self, request: JoinRequest | str, joiner: Joiner) -> JoinAnswer: ...
    def role_for_key(self, user: str, key: str) -> str | None: ...
    def open_shell(self, user: str, role: str, chan: Any, command: str | None) -> ShellIO: ...
    def link_up(self, link: LinkIO, peer: str, outbound: bool) -> int: ...
    def link_data(self, link_id: int, data: bytes) -> None: ...
    def link_down(self, link_id: int, reason: str) -> None: ...
    def auth_failed(self, source: str, reason: str, *, counts: bool = False) -> None: ...


class ShellIO(Protocol):
    """An admin shell on a channel (``cli.serve.ShellChannel``)."""

    def start(self) -> None: ...
    def feed(self, data: bytes) -> None: ...
    def stop(self) -> None: ...


class LinkIO(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class _LinkChannel:
    """Both ends of a link: bytes in to the mesh, bytes out to the channel (held for
    ``link_delay_ms`` + up to ``link_jitter_ms`` when those are set: module docstring)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.chan: Any = None
        self.link_id: int | None = None
        self.closed_reason = "connection closed"
        self.delay = mesh.config.link_delay_ms / 1000.0  # seconds
        self.jitter = mesh.config.link_jitter_ms / 1000.0
        self._held: deque[tuple[float, bytes]] = deque()  # (due loop time, frame), in order
        self._timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> None:
        if self.chan is None:
            return
        if not self.delay and not self.jitter:
            self.chan.write(data)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + self.delay + random.uniform(0.0, self.jitter)
        if self._held:
            due = max(due, self._held[-1][0])  # never overtake an earlier frame
        self._held.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(due, self._release)

    def _release(self) -> None:
        """Write every held frame that is due, in order; wait for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        while self._held and self._held[0][0] <= loop.time():
            try:
                self.chan.write(self._held.popleft()[1])
            except (OSError, asyncssh.Error):  # the channel closed under us
                self._drop()
                return
        if self._held:
            self._timer = loop.call_at(self._held[0][0], self._release)

    def _drop(self) -> None:
        """Forget the frames still held (the link is closing or gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()

    def close(self) -> None:
        self._drop()
        if self.chan is not None:
            self.chan.close()

    def _data(self, data: bytes) -> None:
        if self.link_id is not None:
            self.mesh.link_data(self.link_id, data)

    def _lost(self, exc: Exception | None) -> None:
        self._drop()
        if self.link_id is not None:
            link_id, self.link_id = self.link_id, None
            self.mesh.link_down(link_id, str(exc) if exc else self.closed_reason)


class ChannelSession(_LinkChannel, asyncssh.SSHServerSession[bytes]):
    """One session on a server: the cluster subsystem for an authenticated peer."""

    def __init__(self, server: PeerServer) -> None:
        super().__init__(server.mesh)
        self.server = server
        self.join: JoinLine | None = None  # a join session, not a link
        self.answered = False  # a join session answers one request, then ignores input
        self.shell: ShellIO | None = None  # an admin shell (interactive or one command)
        self.command: str | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        return self.server.admin is not None

    def shell_requested(self) -> bool:
        if self.server.admin is not None:
            self.shell = self.mesh.open_shell(*self.server.admin, self.chan, None)
            return True
        log.warning("%s: refused a shell on the %s port", self.server.source, self.server.name)
        return False

    def exec_requested(self, command: str) -> bool:
        if self.server.admin is not None:
            self.shell = self.mesh.open_shell(*self.server.admin, self.chan, command)
            return True
        log.warning(
            "%s: refused exec %r on the %s port", self.server.source, command, self.server.name
        )
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == SUBSYSTEM and self.server.peer is not None:
            return True
        if subsystem == JOIN_SUBSYSTEM and self.server.joiner is not None:
            self.join = JoinLine()
            return True
        log.warning(
            "%s: refused subsystem %r on the %s port",
            self.server.source,
            subsystem,
            self.server.name,
        )
        return False

    def session_started(self) -> None:
        if self.shell is not None:
            self.shell.start()
        elif self.join is None:
            assert self.server.peer is not None
            self.link_id = self.mesh.link_up(self, self.server.peer, outbound=False)

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.shell is not None:
            self.shell.feed(data)
            return
        if self.join is None:
            self._data(data)
            return
        if self.answered:
            return
        request = self.join.feed(data)
        if request is not None:
            self._answer(request)

    def eof_received(self) -> bool:
        if self.shell is not None:
            return True  # half-open: a command runs on after its input ends (ssh host CMD)
        if self.join is not None and not self.answered:
            self._answer(self.join.feed(b"\n") or "empty join request")
        return False

    def _answer(self, request: JoinRequest | str) -> None:
        assert self.server.joiner is not None
        self.answered = True
        answer = self.mesh.admit_request(request, self.server.joiner)
        self.chan.write(answer.model_dump_json().encode() + b"\n")
        self.chan.exit(0 if answer.ok else 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.shell is not None:
            self.shell.stop()
        self._lost(exc)

    def close(self) -> None:
        super().close()
        if self.server.conn is not None:
            self.server.conn.close()


class PeerServer(asyncssh.SSHServer):
    """Authenticates peers and joining machines by key; refuses every kind of forwarding.

    User ``clusterd`` with a member's machine key opens a link; user ``clusterd-join``
    with a key registered by PREPJOIN may join.  Join attempts from a source that
    failed too often are refused until its lockout ends (``Mesh.auth_blocked``)."""

    name = "cluster"
    passwords = False

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer: str | None = None
        self.joiner: Joiner | None = None
        self.admin: tuple[str, str] | None = None  # (user, role) of a shell login (admin port)
        self.source = "?"
        self.host = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.host, port = conn.get_extra_info("peername")[:2]
        self.source = f"{self.host}:{port}"

    def begin_auth(self, username: str) -> bool:
        return True

    def _refuse(self, reason: str, *, counts: bool) -> bool:
        """Log and alert, tell the client why (an SSH banner), fail this attempt."""
        if self.conn is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self.conn.send_auth_banner(reason + "\n")
        self.mesh.auth_failed(self.source, reason, counts=counts)
        return False

    def password_auth_supported(self) -> bool:
        return self.passwords

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        blocked = self.mesh.auth_blocked(self.host)
        if blocked:
            return self._refuse(blocked, counts=False)
        role, reason = self.mesh.login(username, password)
        if role is None:
            return self._refuse(reason, counts=True)
        self.joiner = Joiner("passphrase", username, role=role)
        self.admin = (username, role) if self.passwords else None
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        text = key_text(key.export_public_key().decode())
        if username == PEER_USER:
            serial = self.mesh.peer_for_key(text)
            if serial is None:
                why = f"not a member's machine key ({key.get_fingerprint()})"
                return self._refuse(f"user {username!r}: {why}", counts=False)
            reason = await self.mesh.reverse_check(serial, self.host)
            if reason is not None:
                return self._refuse(reason, counts=False)
            self.peer = serial
            return True
        blocked = self.mesh.auth_blocked(self.host)
        if blocked:
            return self._refuse(blocked, counts=False)
        if username == JOIN_USER:
            host = self.mesh.prepared_for_key(text)
            if host is None:
                # Counts: user clusterd-join is only ever a joining machine offering its
                # one machine key (clusterd join offers nothing else), so a refusal is a
                # failed join attempt, and repeated ones (probing which keys PREPJOIN
                # holds, flooding the alerts) are what the lockout is for.
                why = f"key {key.get_fingerprint()} is not registered with PREPJOIN here"
                return self._refuse(why, counts=True)
            self.joiner = Joiner("key", host, text)
            return True
        role = self.mesh.role_for_key(username, text) if self.passwords else None
        if role is not None:
            self.admin = (username, role)
            return True
        # Does not count: an SSH client offers every key it has (OpenSSH: ~/.ssh/id_*,
        # the agent's) before it asks for the passphrase, so a refused key is no failed
        # login, and a key cannot be guessed anyway.  The lockout is against passphrase
        # guessing; still logged and alerted (and explained in a banner).
        return self._refuse(f"key {key.get_fingerprint()} is not an admin key of user "
                            f"{username!r}", counts=False)  # fmt: skip

    def session_requested(self) -> ChannelSession:
        return ChannelSession(self)

    def connection_requested(self, *args: Any) -> bool:
        log.warning("%s: refused port forwarding on the %s port", self.source, self.name)
        return False

    def server_requested(self, *args: Any) -> bool:
        log.warning("%s: refused remote forwarding on the %s port", self.source, self.name)
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        return False

    def unix_server_requested(self, *args: Any) -> bool:
        return False


class AdminServer(PeerServer):
    """The admin SSH port: links, joins by passphrase or key (the admin shell: issue 5)."""

    name = "admin"
    passwords = True


class CcsServer(PeerServer):
    """The CCS port: the cluster subsystem and nothing else, ever."""

    name = "CCS"


async def listen(
    factory: Callable[[], PeerServer],
    host: str,
    port: int,
    host_key: asyncssh.SSHKey,
    algs: Algorithms,
) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        factory,
        host,
        port,
        server_host_keys=[host_key],
        **algs.server_options(),
        encoding=None,
        sftp_factory=None,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
    )


class _ClientChannel(_LinkChannel, asyncssh.SSHClientSession[bytes]):
    def __init__(self, mesh: Mesh) -> None:
        super().__init__(mesh)
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.close()
        self._lost(exc)

    def close(self) -> None:
        super().close()
        if self.conn is not None:
            self.conn.close()


async def dial(
    mesh: Mesh,
    peer: Endpoint,
    address: str,
    machine_key: asyncssh.SSHKey,
    algs: Algorithms,
    timeout: float,
    local: str | None = None,
) -> _ClientChannel:
    """Open a link to ``peer`` from ``local`` (the address we listen on, so the far side
    reverse-resolves the right one); the caller registers it with ``mesh.link_up``."""
    if not peer.host_key:
        raise TransportError("authentication error", f"no host key recorded for {peer.hostname}")
    try:
        trusted = [asyncssh.import_public_key(peer.host_key)]
    except (asyncssh.KeyImportError, ValueError) as exc:
        text = f"bad host key for {peer.hostname}: {exc}"
        raise TransportError("authentication error", text) from None
    where = f"{peer.hostname} ({address}:{peer.port}, {peer.transport})"
    client = BannerClient()
    bind = {"local_addr": (local, 0)} if local and local not in ("0.0.0.0", "::", "") else {}
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client,
                address,
                peer.port,
                username=PEER_USER,
                client_keys=[machine_key],
                known_hosts=(trusted, [], []),
                agent_path=None,
                config=None,
                preferred_auth="publickey",
                **algs.client_options(),
                **bind,
            ),
            timeout,
        )
    except asyncssh.PermissionDenied:
        said = f": {client.banners[-1]}" if client.banners else ""
        text = f"{where} refused our machine key{said}"
        raise TransportError("authentication error", text) from None
    except asyncssh.HostKeyNotVerifiable:
        text = f"{where} presented a host key that is not the one membership records"
        raise TransportError("authentication error", text) from None
    except asyncssh.KeyExchangeFailed as exc:
        raise TransportError("connection failure", mismatch(exc, where, algs)) from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        text = str(exc) or exc.__class__.__name__
        raise TransportError("connection failure", f"cannot reach {where}: {text}") from None
    try:
        _, session = await asyncio.wait_for(
            conn.create_session(lambda: _ClientChannel(mesh), subsystem=SUBSYSTEM, encoding=None),
            timeout,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        conn.close()
        text = str(exc) or exc.__class__.__name__
        text = f"{where} refused the cluster subsystem: {text}"
        raise TransportError("connection failure", text) from None
    assert isinstance(session, _ClientChannel)
    session.conn = conn
    return session
