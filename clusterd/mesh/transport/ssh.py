"""SSH links: dialling a member, and the byte channel both ends of a link share.

Peers log in as user ``clusterd`` with their machine key; the key must be the
``machine_key`` of a member in the replicated membership, which tells us who the peer
is.  The dialer checks the server's host key against the member's pinned ``host_key``
(no trust on first use).  Each link is one SSH connection carrying one session on the
``clusterd`` subsystem; frames flow as raw bytes both ways.  The servers, and who may
log in how, are ``clusterd.mesh.transport.server``.

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

from clusterd.core.errors import TransportError
from clusterd.mesh.members import Endpoint
from clusterd.trust.join import Algorithms, BannerClient, mismatch

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
    """What a link tells the daemon."""

    @property
    def config(self) -> LinkSettings: ...
    def link_data(self, link_id: int, data: bytes) -> None: ...
    def link_down(self, link_id: int, reason: str) -> None: ...


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
        """Send a frame; never raises: a channel that cannot take it any more (closed
        under us, a reconnect racing the other side's) becomes the link's loss, reported
        to the mesh after the current event, like any other way a link goes down."""
        if self.chan is None:
            return
        if not self.delay and not self.jitter:
            self._put(data)
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
            if not self._put(self._held.popleft()[1]):
                return
        if self._held:
            self._timer = loop.call_at(self._held[0][0], self._release)

    def _put(self, data: bytes) -> bool:
        try:
            self.chan.write(data)
            return True
        except (OSError, RuntimeError, asyncssh.Error) as exc:
            self._drop()
            self.chan = None  # nothing more is written to it
            asyncio.get_running_loop().call_soon(self._lost, exc)
            return False

    def _drop(self) -> None:
        """Forget the frames still held (the link is closing or gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()

    def close(self) -> None:
        self._drop()
        if self.chan is not None:
            with contextlib.suppress(OSError, RuntimeError, asyncssh.Error):
                self.chan.close()

    def _data(self, data: bytes) -> None:
        if self.link_id is not None:
            self.mesh.link_data(self.link_id, data)

    def _lost(self, exc: Exception | None) -> None:
        self._drop()
        if self.link_id is not None:
            link_id, self.link_id = self.link_id, None
            self.mesh.link_down(link_id, str(exc) if exc else self.closed_reason)


async def listen(
    factory: Callable[[], asyncssh.SSHServer],
    host: str,
    port: int,
    host_key: asyncssh.SSHKey,
    algs: Algorithms,
    login_timeout: float,
) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        factory,
        host,
        port,
        server_host_keys=[host_key],
        **algs.server_options(),
        login_timeout=login_timeout,
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
