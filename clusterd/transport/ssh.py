"""SSH transports: the cluster subsystem on the admin port and on the CCS port.

Peers log in as user ``clusterd`` with their machine key; the key must be the
``machine_key`` of a member in the replicated membership, which tells us who the peer
is.  The dialer checks the server's host key against the member's pinned ``host_key``
(no trust on first use).  Each link is one SSH connection carrying one session on the
``clusterd`` subsystem; frames flow as raw bytes both ways.

``AdminServer`` listens on the admin SSH port.  Its sessions are ``ChannelSession``s
that decide per request what they become: the cluster subsystem for a peer today; the
admin shell arrives on the same class (issue 5), so shell and subsystem share the port.
``CcsServer`` serves the cluster subsystem only: shells, exec (and so SCP), SFTP, PTYs
and every kind of forwarding are refused, whoever asks.

asyncssh errors stop here: dialling raises ``TransportError`` with the alert kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh

from clusterd.errors import TransportError
from clusterd.members import Endpoint, key_text

SUBSYSTEM = "clusterd"
PEER_USER = "clusterd"
log = logging.getLogger("clusterd.transport")


class Mesh(Protocol):
    """What a transport tells the daemon about links."""

    def peer_for_key(self, key: str) -> str | None: ...
    def link_up(self, link: LinkIO, peer: str, outbound: bool) -> int: ...
    def link_data(self, link_id: int, data: bytes) -> None: ...
    def link_down(self, link_id: int, reason: str) -> None: ...
    def auth_failed(self, source: str, reason: str) -> None: ...


class LinkIO(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class _LinkChannel:
    """Both ends of a link: bytes in to the mesh, bytes out to the channel."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.chan: Any = None
        self.link_id: int | None = None
        self.closed_reason = "connection closed"

    def write(self, data: bytes) -> None:
        if self.chan is not None:
            self.chan.write(data)

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()

    def _data(self, data: bytes) -> None:
        if self.link_id is not None:
            self.mesh.link_data(self.link_id, data)

    def _lost(self, exc: Exception | None) -> None:
        if self.link_id is not None:
            link_id, self.link_id = self.link_id, None
            self.mesh.link_down(link_id, str(exc) if exc else self.closed_reason)


class ChannelSession(_LinkChannel, asyncssh.SSHServerSession[bytes]):
    """One session on a server: the cluster subsystem for an authenticated peer."""

    def __init__(self, server: PeerServer) -> None:
        super().__init__(server.mesh)
        self.server = server

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        return False

    def shell_requested(self) -> bool:
        log.warning("%s: refused a shell on the %s port", self.server.source, self.server.name)
        return False

    def exec_requested(self, command: str) -> bool:
        log.warning(
            "%s: refused exec %r on the %s port", self.server.source, command, self.server.name
        )
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem == SUBSYSTEM and self.server.peer is not None:
            return True
        log.warning(
            "%s: refused subsystem %r on the %s port",
            self.server.source,
            subsystem,
            self.server.name,
        )
        return False

    def session_started(self) -> None:
        assert self.server.peer is not None
        self.link_id = self.mesh.link_up(self, self.server.peer, outbound=False)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def close(self) -> None:
        super().close()
        if self.server.conn is not None:
            self.server.conn.close()


class PeerServer(asyncssh.SSHServer):
    """Authenticates peers by machine key; refuses every kind of forwarding."""

    name = "cluster"

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer: str | None = None
        self.source = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        host, port = conn.get_extra_info("peername")[:2]
        self.source = f"{host}:{port}"

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        text = key_text(key.export_public_key().decode())
        serial = self.mesh.peer_for_key(text) if username == PEER_USER else None
        if serial is None:
            why = "not a member's machine key" if username == PEER_USER else "unknown user"
            self.mesh.auth_failed(
                self.source, f"user {username!r}: {why} ({key.get_fingerprint()})"
            )
            return False
        self.peer = serial
        return True

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
    """The admin SSH port: cluster subsystem for peers (admin shell: issue 5)."""

    name = "admin"


class CcsServer(PeerServer):
    """The CCS port: the cluster subsystem and nothing else, ever."""

    name = "CCS"


async def listen(
    factory: Callable[[], PeerServer], host: str, port: int, host_key: asyncssh.SSHKey
) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        factory,
        host,
        port,
        server_host_keys=[host_key],
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
    mesh: Mesh, peer: Endpoint, machine_key: asyncssh.SSHKey, timeout: float
) -> _ClientChannel:
    """Open a link to ``peer``; the caller registers it with ``mesh.link_up``."""
    if not peer.host_key:
        raise TransportError("authentication error", f"no host key recorded for {peer.hostname}")
    try:
        trusted = [asyncssh.import_public_key(peer.host_key)]
    except (asyncssh.KeyImportError, ValueError) as exc:
        text = f"bad host key for {peer.hostname}: {exc}"
        raise TransportError("authentication error", text) from None
    where = f"{peer.hostname} ({peer.address}:{peer.port}, {peer.transport})"
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                peer.address,
                peer.port,
                username=PEER_USER,
                client_keys=[machine_key],
                known_hosts=(trusted, [], []),
                agent_path=None,
                config=None,
                preferred_auth="publickey",
            ),
            timeout,
        )
    except asyncssh.PermissionDenied:
        raise TransportError("authentication error", f"{where} refused our machine key") from None
    except asyncssh.HostKeyNotVerifiable:
        text = f"{where} presented a host key that is not the one membership records"
        raise TransportError("authentication error", text) from None
    except asyncssh.KeyExchangeFailed as exc:
        raise TransportError("connection failure", f"{where}: {exc.reason}") from None
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
