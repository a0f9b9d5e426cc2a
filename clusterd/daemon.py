"""The daemon: drives the protocol ``Node`` with asyncio, the store and the transports.

Every event (a link opened, bytes arrived, a timer, a local commit) goes to the node;
``execute`` carries out the actions it returns, in order.  Everything runs on one event
loop thread, so the node and the store are never used concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import asyncssh

from clusterd import layers
from clusterd.config import DaemonConfig
from clusterd.digest import state_digest
from clusterd.errors import BadCommit, ClusterdError, ProtocolError, TransportError
from clusterd.members import MEMBERSHIP, Endpoint, endpoints, key_text
from clusterd.merge import Outcome
from clusterd.messages import FrameReader, decode_body, encode
from clusterd.peers import (
    Action,
    Alert,
    Answered,
    Apply,
    Ask,
    Close,
    Dial,
    Identity,
    Install,
    Note,
    Send,
    Timing,
)
from clusterd.protocol import Node
from clusterd.store import Store
from clusterd.transport import ssh
from clusterd.versions import Commit, Snapshot, VersionVector

log = logging.getLogger("clusterd.daemon")
MAX_ALERTS = 200


class StoreLog:
    """The protocol's read-only view of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def version_vector(self) -> VersionVector:
        return self.store.state.vv

    def missing_from(self, vv: VersionVector) -> list[Commit] | None:
        return self.store.commits_missing_from(vv)

    def snapshot(self) -> Snapshot:
        return self.store.export_state()


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store = Store(config.database_url, origin=config.serial, hostname=config.hostname)
        self.host_key = asyncssh.read_private_key(config.host_key)
        self.machine_key = asyncssh.read_private_key(config.machine_key)
        self.started_at = time.time()
        self.timing = Timing.for_interval(config.ping_interval)
        self.peers: dict[str, Endpoint] = {}
        self.node = Node(self._identity(), StoreLog(self.store), [], self.timing)
        self.ios: dict[int, ssh.LinkIO] = {}
        self.readers: dict[int, FrameReader] = {}
        self.next_link = 1
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.waiting: dict[int, asyncio.Future[Answered]] = {}
        self.servers: list[asyncssh.SSHAcceptor | asyncio.AbstractServer] = []
        self.stopping = asyncio.Event()
        self._membership_changed = True
        self.store.listeners.append(self._on_outcomes)
        self._summary: dict[str, Any] | None = None  # digest and losses, until a change
        self._reload_members()

    def __repr__(self) -> str:
        return f"<Daemon {self.config.hostname} {self.node!r}>"

    def _identity(self) -> Identity:
        c = self.config
        name = layers.cluster_name(self.store.state) or ""
        return Identity(c.serial, c.hostname, name, c.software)

    # -- running ------------------------------------------------------------------------

    async def serve(self) -> None:
        from clusterd import control

        c = self.config
        self.servers.append(
            await ssh.listen(lambda: ssh.AdminServer(self), c.listen, c.ssh_port, self.host_key)
        )
        if c.ccs_enabled:
            self.servers.append(
                await ssh.listen(lambda: ssh.CcsServer(self), c.listen, c.ccs_port, self.host_key)
            )
        self.servers.append(await control.serve(self))
        log.info(
            "%s serving on %s:%d (ccs %s)",
            c.hostname,
            c.listen,
            c.ssh_port,
            c.ccs_port if c.ccs_enabled else "off",
        )
        self.execute(self.node.start(self.now()))
        ticker = asyncio.create_task(self._ticks())
        try:
            await self.stopping.wait()
        finally:
            ticker.cancel()
            self.execute(self.node.stop(self.now()))
            for server in self.servers:
                server.close()
            await asyncio.sleep(0.05)  # let goodbyes leave
            self.store.close()
            log.info("%s stopped", c.hostname)

    def stop(self) -> None:
        self.stopping.set()

    async def _ticks(self) -> None:
        every = min(1.0, self.config.ping_interval / 4)
        while True:
            await asyncio.sleep(every)
            self.execute(self.node.tick(self.now()))

    @staticmethod
    def now() -> float:
        return time.monotonic()

    # -- actions ------------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                self._execute(action)
            except ClusterdError as exc:
                log.error("could not carry out %s: %s", type(action).__name__, exc)
        if self._membership_changed:
            self._reload_members()

    def _execute(self, action: Action) -> None:
        match action:
            case Send(link, msg):
                io = self.ios.get(link)
                if io is not None:
                    io.write(encode(msg))
            case Close(link, reason):
                io = self.ios.get(link)
                if io is not None:
                    log.info("closing link %d: %s", link, reason)
                    io.close()
            case Dial(peer):
                asyncio.get_running_loop().create_task(self._dial(peer))
            case Apply(commits, peer):
                self._apply(list(commits), peer)
            case Install(snapshot, peer):
                log.info("state transfer from %s: %d commits", peer, len(snapshot.commits))
                self.store.merge_state(snapshot)
                self._membership_changed = True
                self._summary = None
            case Alert(kind, peer, text):
                name = self.peers[peer].hostname if peer in self.peers else peer
                log.warning("ALERT %s: %s: %s", kind, name, text)
                self.alerts.append({"at": time.time(), "kind": kind, "peer": name, "text": text})
            case Note(text):
                log.info("%s", text)
            case Ask(peer, qid, kind, args):
                ok, body = self.answer(kind, args)
                self.execute(self.node.answer(peer, qid, ok, body, self.now()))
            case Answered():
                future = self.waiting.pop(action.qid, None)
                if future is not None and not future.done():
                    future.set_result(action)

    def _apply(self, commits: list[Commit], peer: str) -> None:
        try:
            self.store.apply_remote(commits)
        except BadCommit as exc:
            self.execute(self.node.rejected(peer, self.now(), "; ".join(exc.problems[:3])))

    def _on_outcomes(self, outcomes: list[Outcome]) -> None:
        self._summary = None
        if any(feature in MEMBERSHIP for o in outcomes for feature, _ in o.touched):
            self._membership_changed = True

    def _reload_members(self) -> None:
        self._membership_changed = False
        self.peers = endpoints(self.store.state)
        self.node.me = self._identity()
        members = [e.member for e in self.peers.values()]
        actions = self.node.set_members(members, self.now())
        me = self.peers.get(self.config.serial)
        if me is not None and me.disconnected != self.node.disconnected:
            flip = self.node.disconnect if me.disconnected else self.node.reconnect
            actions += flip(self.now())
        self.execute(actions)

    async def _dial(self, serial: str) -> None:
        peer = self.peers.get(serial)
        try:
            if peer is None:
                raise TransportError("connection failure", f"{serial} is no longer a member")
            if serial in self.config.blocked_peers:
                raise TransportError("connection failure", f"{peer.hostname} is blocked here")
            timeout = self.timing.handshake_timeout
            io = await ssh.dial(self, peer, self.machine_key, timeout)
        except TransportError as exc:
            if serial in self.node.peers and self.node.peers[serial].dialing:
                self.execute(self.node.dial_failed(serial, self.now(), exc.kind, exc.reason))
            return
        if self.stopping.is_set() or serial not in self.node.peers:
            io.close()
            return
        io.link_id = self.link_up(io, serial, outbound=True)

    # -- transport events ---------------------------------------------------------------

    def peer_for_key(self, key: str) -> str | None:
        for serial, peer in self.peers.items():
            if (
                peer.machine_key
                and key_text(peer.machine_key) == key
                and serial != self.config.serial
            ):
                return serial
        return None

    def link_up(self, io: ssh.LinkIO, peer: str, outbound: bool) -> int:
        link_id = self.next_link
        self.next_link += 1
        self.ios[link_id] = io
        self.readers[link_id] = FrameReader()
        self.execute(self.node.link_opened(link_id, self.now(), peer=peer, outbound=outbound))
        return link_id

    def link_data(self, link_id: int, data: bytes) -> None:
        reader = self.readers.get(link_id)
        if reader is None or link_id not in self.node.links:
            return
        try:
            for body in reader.feed(data):
                msg = decode_body(body)
                self.execute(self.node.received(link_id, msg, self.now()))
                if link_id not in self.node.links:
                    return
        except ProtocolError as exc:
            if link_id in self.node.links:
                self.execute(self.node.frame_error(link_id, self.now(), exc))

    def link_down(self, link_id: int, reason: str) -> None:
        self.ios.pop(link_id, None)
        self.readers.pop(link_id, None)
        if link_id in self.node.links:
            self.execute(self.node.link_closed(link_id, self.now(), reason))

    def auth_failed(self, source: str, reason: str) -> None:
        text = f"login from {source} refused: {reason}"
        self.execute([Alert("authentication error", source, text)])

    # -- local operations (control socket; the shell later) ----------------------------

    def committed(self, commit: Commit | None) -> None:
        if commit is not None:
            self.execute(self.node.committed(commit, self.now()))
        if self._membership_changed:
            self._reload_members()

    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
        if kind == "digest":
            return True, {"digest": self._state_summary()["digest"], "vv": self.store.state.vv}
        if kind == "status":
            return True, self.status()
        return False, f"unknown query {kind!r}"

    async def ask(self, serial: str, kind: str, args: dict[str, Any], timeout: float) -> Answered:
        qid, actions = self.node.query(serial, kind, args, self.now())
        future: asyncio.Future[Answered] = asyncio.get_running_loop().create_future()
        self.waiting[qid] = future
        self.execute(actions)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.waiting.pop(qid, None)
            return Answered(serial, qid, False, f"no answer within {timeout} s")

    def _state_summary(self) -> dict[str, Any]:
        """Digest and recorded losses: whole-state walks, so kept until the state changes."""
        if self._summary is None:
            self._summary = {
                "digest": state_digest(self.store.state),
                "inconsistencies": [
                    {"unit": str(x.unit), "lost": str(x.loser.commit), "by": str(x.by)}
                    for x in self.store.inconsistencies()
                ],
            }
        return self._summary

    def status(self) -> dict[str, Any]:
        node, now = self.node, self.now()
        peers = []
        for serial, p in node.peers.items():
            route = node.route(serial)
            peers.append(
                {
                    "serial": serial,
                    "hostname": p.hostname,
                    "state": p.state,
                    "link": p.link,
                    "direction": None
                    if p.link is None
                    else ("out" if node.links[p.link].outbound else "in"),
                    "since_s": round(now - p.since, 3) if p.since else None,
                    "rtt_ms": None if p.rtt is None else round(p.rtt * 1000, 3),
                    "reason": p.reason,
                    "route": None
                    if route is None
                    else (
                        "direct"
                        if route.peer == serial
                        else f"via {node.peers[route.peer].hostname}"
                    ),
                    "vv": p.vv,
                }
            )
        return {
            "hostname": self.config.hostname,
            "serial": self.config.serial,
            "cluster": node.me.cluster or None,
            "software": self.config.software,
            "disconnected": node.disconnected,
            "uptime_s": round(time.time() - self.started_at, 1),
            "ping_interval": self.config.ping_interval,
            "links": len(node.live_peers()),
            "peers": peers,
            "routes": {p["hostname"]: p["route"] for p in peers},
            "vv": dict(self.store.state.vv),
            **self._state_summary(),
            "waiting_commits": len(self.store.inbox),
            "alerts": list(self.alerts),
        }


def run(config: DaemonConfig) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        daemon = Daemon(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        await daemon.serve()

    asyncio.run(main())
