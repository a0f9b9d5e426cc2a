"""The daemon: one machine's member of the cluster, served with asyncio.

It holds the store and the configuration and starts the roles, each in its own module:
the link driver (``clusterd.node.links``: the mesh ``Member`` over SSH), authentication
(``clusterd.trust.logins``), status (``clusterd.node.status``), the membership follower
(``clusterd.node.follower``), the front ends' API (``clusterd.node.api``) and the shell
workers.  Links, timers and the store run on one event loop thread, so the node and the
store are never used concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import asyncssh

from clusterd.core import layers
from clusterd.core.errors import ClusterdError, ConfigError
from clusterd.core.merge import Outcome
from clusterd.core.state import definition
from clusterd.mesh.members import Endpoint
from clusterd.mesh.peers import Alert, Answered, Identity, Timing
from clusterd.mesh.protocol import Node
from clusterd.mesh.transport import ssh
from clusterd.mesh.transport.limits import Gate
from clusterd.mesh.transport.server import AdminServer, CcsServer, ShellIO
from clusterd.node import canary, check, logsetup, nodechecks, status, targets
from clusterd.node import config as cfg
from clusterd.node.admin import Admin
from clusterd.node.alertmail import AlertMail
from clusterd.node.api import ClusterAPI
from clusterd.node.config import DaemonConfig
from clusterd.node.confirms import Confirms
from clusterd.node.divergence import Divergence
from clusterd.node.follower import Follower
from clusterd.node.links import Links
from clusterd.node.looplag import LoopLag
from clusterd.node.publish import Publisher
from clusterd.node.scrub import Scrub
from clusterd.node.seal import MachineSealer
from clusterd.node.syncstate import Recent
from clusterd.node.web import Web
from clusterd.node.workers import Workers
from clusterd.store.store import Store
from clusterd.store.writer import ThreadWriter
from clusterd.trust.dns import Lookup, Resolver
from clusterd.trust.join import Algorithms, JoinAnswer, Joiner, JoinRequest
from clusterd.trust.logins import ADMIN_ONLY_FEATURES, AdminLogin, Logins

log = logging.getLogger("clusterd.daemon")
# Makes the shell of one admin session: (daemon, login, channel, command or None).
ShellFactory = Callable[[ClusterAPI, AdminLogin, Any, "str | None"], ShellIO]
MAX_ALERTS = 200
STORE_PROBE = 2.0  # s between looks at a store that is down
CHECKPOINT_EVERY = 1.0  # s: the WAL grows by at most this much writing between syncs


class Daemon:
    def __init__(self, config: DaemonConfig, shells: ShellFactory | None = None) -> None:
        self.config = config
        self.shell_factory = shells  # the admin shell (cli.serve), given by whoever runs us
        self.store = Store(
            config.database_url, origin=config.serial, hostname=config.hostname,
            own_checkpoints=True,  # the disk is synced from a thread (_checkpoints)
            sealer=MachineSealer(config.machine_key),  # commits signed, peers' verified
        )  # fmt: skip
        self.host_key = asyncssh.read_private_key(config.host_key)
        self.machine_key = asyncssh.read_private_key(config.machine_key)
        self.started_at = time.time()
        self.timing = Timing.for_interval(config.ping_interval)
        self.peers: dict[str, Endpoint] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.mail = AlertMail(
            hostname=lambda: self.config.hostname,
            rows=lambda: self.effective("alertconfig").value,
            relay=config.alert_relay,
            sender=config.alert_from,
            gather=config.alert_gather,
            repeat=config.alert_repeat,
            max_per_hour=config.alert_max_per_hour,
        )
        self.publisher = Publisher(self.store, config.data_dir)
        self.targets = targets.build(config, self.publisher, lambda: self.config.hostname,
                                     self.alert)  # fmt: skip
        self.targets.canary = canary.Canaries(self)
        self.servers: list[asyncssh.SSHAcceptor | asyncio.AbstractServer] = []
        self.admin_server: asyncssh.SSHAcceptor | None = None
        self.ccs_server: asyncssh.SSHAcceptor | None = None
        self.stopping = asyncio.Event()
        self.left = asyncio.Event()  # set when this machine flattened out of its cluster
        self.admin = Admin(self)
        self.api = ClusterAPI(self)  # what the front ends hold (clusterd.node.api)
        self.resolver = Resolver(
            config.dns_servers or None, config.dns_port, config.dns_timeout, config.hosts_file
        )
        self.auth = Logins(self)
        self.gate = Gate(config, self.trusted_source)
        self.reverse_seen: dict[str, Lookup] = {}  # serial -> reverse lookup when it connected
        self.shells: set[Any] = set()  # open admin shells (cli.serve.ShellChannel): who
        self.logins: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)  # recent logins: last
        self._algorithms: Algorithms | None = None
        self.follower = Follower(self)  # membership changes: links, name, leaving
        self.confirms = Confirms(self)  # unconfirmed commits rolled back at their deadline
        self.store.listeners.append(lambda outcomes, _local: self.confirms.applied(outcomes))
        self.targets.listeners.append(self.confirms.target_done)  # (--probe targets)
        self.store.listeners.append(self._on_outcomes)
        self.recent = Recent()  # the features of recent commits (status: sync per feature)
        self.store.listeners.append(lambda outcomes, _local: self.recent.record(
            o.commit for o in outcomes))  # fmt: skip
        if isinstance(shells, Workers):  # their images of the store follow ours
            self.store.listeners.append(lambda outcomes, _local: shells.applied(outcomes))
            self.store.on_replaced.append(shells.replaced)
        self.web = Web(self) if config.web_listen else None  # (binds now: a clash says so)
        if self.web is not None:  # its image of the store follows ours
            web = self.web
            self.store.listeners.append(lambda outcomes, _local: web.applied(outcomes))
            self.store.on_replaced.append(web.replaced)
        trace = config.data_dir / config.trace_file if config.trace_file else None
        self._trace = open(trace, "a", buffering=1) if trace else None  # noqa: SIM115
        self.summary_cache: tuple[Any, dict[str, Any]] | None = None  # status.summary
        self.summary_task: tuple[Any, asyncio.Future[dict[str, Any]]] | None = None
        self._store_down = False
        self._wal_dirty = True  # the store wrote since its last checkpoint
        self.store.on_replaced.append(self._wrote)
        self.lag = LoopLag()  # how late the loop runs its timers (status: "loop")
        self.divergence = Divergence(self)  # a peer with our commits and another state
        self.scrub = Scrub(self)  # entries changed on disk under us
        self.links = Links(self)  # the mesh member; replicates what the store made durable
        self.member = self.links.mesh
        self.member.execute(self.follower.reload())

    def __repr__(self) -> str:
        return f"<Daemon {self.config.hostname} {self.node!r}>"

    @property
    def node(self) -> Node:
        return self.member.node

    @property
    def tracing(self) -> bool:
        return self._trace is not None

    def identity(self) -> Identity:
        c = self.config
        cluster = layers.cluster_id(self.store.state) or ""
        return Identity(c.serial, c.hostname, cluster, c.software)

    # -- running ------------------------------------------------------------------------

    async def serve(self) -> None:
        from clusterd.node import control

        c = self.config
        await self._listen_admin()
        if c.ccs_enabled:
            await self.set_ccs_listener(True)
        self.servers.append(await control.serve(self.api))
        log.info(
            "%s serving on %s:%d (ccs %s)",
            c.hostname,
            c.listen,
            c.ssh_port,
            c.ccs_port if c.ccs_enabled else "off",
        )
        loop = asyncio.get_running_loop()
        writer = ThreadWriter(lambda done: loop.call_soon_threadsafe(self._batch_written, done))
        self.store.writer = writer  # every batch is written in its thread
        self.member.start()
        ticker = asyncio.create_task(self._ticks())
        checkpoints = asyncio.create_task(self._checkpoints())
        scrub = asyncio.create_task(self.scrub.run())
        probe = asyncio.create_task(self.lag.run())
        self.mail.start()
        self.publisher.start()
        self.targets.start()
        if self.web is not None:
            await self.web.start()
        try:
            await self.stopping.wait()
        finally:
            ticker.cancel()
            checkpoints.cancel()
            scrub.cancel()
            probe.cancel()
            self.mail.stop()
            self.publisher.stop()
            self.targets.stop()
            if isinstance(self.shell_factory, Workers):
                self.shell_factory.close()
            if self.web is not None:
                self.web.close()
            self.member.stop()
            for server in [*self.servers, self.admin_server, self.ccs_server]:
                if server is not None:
                    server.close()
            await asyncio.sleep(0.05)  # let goodbyes leave
            self.store.close()  # (what the writer still held is written first)
            writer.close()
            log.info("%s stopped", c.hostname)

    def _batch_written(self, done: Callable[[], None]) -> None:
        """The store's writer wrote a batch: its listeners run (``done``: replication of
        a commit made here, the publisher, the workers' images), then membership follows
        if the batch changed it."""
        done()
        self.member.execute([])

    def _wrote(self) -> None:
        self._wal_dirty = True

    def stop(self) -> None:
        self.stopping.set()

    async def _listen_admin(self) -> None:
        c = self.config
        if self.admin_server is not None:
            self.admin_server.close()
            await self.admin_server.wait_closed()
            self.admin_server = None
        try:
            self.admin_server = await ssh.listen(
                lambda: AdminServer(self), c.listen, c.ssh_port, self.host_key,
                self.algorithms(), c.login_grace_time,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(listen_refused("ssh_port", c.listen, c.ssh_port, exc)) from None

    async def set_ccs_listener(self, on: bool) -> None:
        """Start or stop the CCS port, and remember the choice in ``clusterd.toml``."""
        c = self.config
        if self.ccs_server is not None:
            self.ccs_server.close()
            await self.ccs_server.wait_closed()
            self.ccs_server = None
        if on:
            try:
                self.ccs_server = await ssh.listen(
                    lambda: CcsServer(self), c.listen, c.ccs_port, self.host_key,
                    self.algorithms(), c.login_grace_time,
                )  # fmt: skip
            except OSError as exc:
                raise ClusterdError(listen_refused("ccs_port", c.listen, c.ccs_port, exc)) from None
        if c.ccs_enabled != on:
            self.config = cfg.save(c, ccs_enabled=on)
        log.info("CCS %s", f"on port {c.ccs_port}" if on else "off")

    def effective(self, command: str) -> layers.Resolved:
        """This machine's effective value of one feature, and where it comes from."""
        state = self.store.state
        chain = layers.chain(state, self.config.hostname)
        return layers.resolve(state, self.store.catalogue[command], chain)

    def algorithms(self) -> Algorithms:
        """The SSH algorithms of this machine's effective ``sshconfig``."""
        if self._algorithms is None:
            self._algorithms = Algorithms.from_sshconfig(self.effective("sshconfig").value)
        return self._algorithms

    @property
    def timeout(self) -> float:
        return max(self.timing.handshake_timeout, 5.0)

    def forget_caches(self) -> None:
        """After a state replacement: the digest and the SSH algorithms are read again."""
        self.summary_cache = self.summary_task = None
        self._algorithms = None

    async def _ticks(self) -> None:
        every = min(1.0, self.config.ping_interval / 4)
        probed = 0.0
        while True:
            await asyncio.sleep(every)
            self.member.tick()
            self.confirms.tick()
            self.store_health()
            if self.store.outage is not None and self.now() - probed >= STORE_PROBE:
                probed = self.now()
                await self._probe_store()

    async def _checkpoints(self) -> None:
        """The store's disk syncs, off the links' loop: once a second after writes."""
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            if self._wal_dirty:
                self._wal_dirty = False
                await asyncio.to_thread(self.store.checkpoint)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def store_health(self) -> None:
        """Alert once when the store goes down and once when it is back."""
        outage = self.store.outage
        if outage is not None and not self._store_down:
            self._store_down = True
            text = f"the store is unavailable: {outage['error']}; commits wait until it is back"
            self.alert("store unavailable", self.config.hostname, text)
        elif outage is None and self._store_down:
            self._store_down = False
            self.alert("store available", self.config.hostname, "the store is available again")

    async def _probe_store(self) -> None:
        """While the store is down, see (off the event loop) whether it is back."""
        await asyncio.to_thread(self.store.probe)
        self.store_health()

    def traced(self, line: str) -> None:
        """One line of the trace file (``trace_file``), stamped with the monotonic clock."""
        if self._trace is not None:
            self._trace.write(f"{time.monotonic_ns()} {line}\n")

    def _on_outcomes(self, outcomes: list[Outcome], local: bool) -> None:
        """Every batch the store made durable: caches, the trace, sessions whose user is
        gone, new SSH algorithms.  The link driver, another listener, replicates a
        commit made here; the publisher writes ``effective.json``."""
        self._wal_dirty = True
        if self._trace is not None:  # benchmarks: when each commit became durable here
            for o in outcomes:
                cid = o.commit.id
                kind = "commit" if cid.origin == self.config.serial else "apply"
                self.traced(f"{kind} {cid.origin} {cid.seq}")
        touched = {feature for o in outcomes for feature, _ in o.touched}
        if touched & ADMIN_ONLY_FEATURES and self.shells:
            with contextlib.suppress(RuntimeError):  # no loop: not serving yet
                asyncio.get_running_loop().call_soon(self._end_gone_sessions)
        if "sshconfig" in touched:
            before, self._algorithms = self._algorithms, None
            if before is not None and before != self.algorithms():  # not for admin_keys
                with contextlib.suppress(RuntimeError):  # no loop: not serving yet
                    asyncio.get_running_loop().create_task(self._restart_listeners())

    def _end_gone_sessions(self) -> None:
        """Log out every shell whose user (or the key it logged in with) is gone."""
        for shell in list(self.shells):
            if self.auth.role(shell.login) is None:
                shell.logout(f"user {shell.user!r} was removed from the cluster's users "
                             "(or the key it logged in with from sshconfig)")  # fmt: skip

    async def _restart_listeners(self) -> None:
        """New algorithms apply to new connections; links already up stay."""
        try:
            await self._listen_admin()
            if self.ccs_server is not None:
                await self.set_ccs_listener(True)
        except (OSError, ClusterdError, ValueError) as exc:
            self.alert("configuration", self.config.hostname, f"SSH listeners: {exc}")

    # -- transport events ---------------------------------------------------------------

    def link_up(self, io: ssh.LinkIO, peer: str, outbound: bool) -> int:
        return self.links.link_up(io, peer, outbound)

    def link_data(self, link_id: int, data: bytes) -> None:
        self.member.data(link_id, data)

    def link_down(self, link_id: int, reason: str) -> None:
        self.member.closed(link_id, reason)

    def alert(self, kind: str, peer: str, text: str) -> None:
        self.links.alert(Alert(kind, peer, text))

    def users(self) -> dict[str, Any]:
        """This machine's effective userconfig."""
        return self.auth.users()

    async def reverse_check(self, serial: str, address: str) -> str | None:
        """Reverse-resolve a connecting member; a reason to refuse it, or None."""
        policy = self.config.reverse_dns
        if policy == "off":
            return None
        # Decide before the dialler gives up on its handshake, whatever dns_timeout says.
        cap = max(0.5, self.timing.handshake_timeout * 0.75)
        try:
            found = await asyncio.wait_for(self.resolver.reverse(address), cap)
        except TimeoutError:
            found = Lookup(address, False, (), "dns", f"reverse lookup timed out after {cap} s")
        self.reverse_seen[serial] = found
        if found.ok:
            return None
        name = self.peers[serial].hostname if serial in self.peers else serial
        text = f"reverse lookup of {address} ({name}) failed: {found.reason}"
        if policy == "require":
            return text + " (reverse_dns = require)"
        self.alert("DNS", name, text + " (reverse_dns = warn: accepted)")
        return None

    async def status(self) -> dict[str, Any]:
        return await status.report(self)

    def peer_status(self) -> list[dict[str, Any]]:
        return status.peers(self)

    async def admit_request(self, request: JoinRequest | str, joiner: Joiner) -> JoinAnswer:
        return await self.admin.admit(request, joiner)

    def open_shell(self, login: AdminLogin, chan: Any, command: str | None) -> ShellIO | None:
        """The shell for an admin session (None: this daemon was started without one)."""
        if self.shell_factory is None:
            return None
        return self.shell_factory(self.api, login, chan, command)

    def trusted_source(self, host: str) -> bool:
        """A source address the connection limits leave alone: this machine, a member's
        recorded address, or where a member's link came from (``transport.limits``)."""
        if host == self.config.listen:
            return True
        if self.config.listen in ("0.0.0.0", "::", "") and host in ("127.0.0.1", "::1"):
            return True
        return any(p.address == host for p in self.peers.values())

    # -- local operations (control socket; the shell later) ----------------------------

    async def answer_later(self, kind: str) -> tuple[bool, Any]:
        """The questions that walk the whole state (``LATER``), answered from a copy of
        memory in a thread."""
        if kind == "digest":
            made = await status.summary(self)
            return True, {"digest": made["digest"], "vv": made["vv"]}
        if kind == "status":
            return True, await self.status()
        assert kind == "summary"
        image = self.store.state.copy()
        return True, await asyncio.to_thread(check.summary, self.store, image)

    def answer(self, kind: str, args: Mapping[str, Any]) -> tuple[bool, Any]:
        if kind == "tree":  # narrowing a divergence (clusterd.node.divergence)
            return True, self.store.digests.tree(args)
        if kind == "definition":
            feature = self.store.catalogue[str(args["feature"])]
            entries = self.store.state.entries(feature.command, str(args["mode"]))
            return True, {"value": definition(entries, feature.is_table)}
        if kind == "canary":
            return True, canary.answer(self, args)
        if kind == "leave":
            if self.config.serial not in self.peers:
                return False, "not a member"
            self.follower.schedule_leave(f"removed by {args.get('by', '?')} on another member")
            return True, "leaving"
        return False, f"unknown query {kind!r}"

    async def node_checks(self, asked: Mapping[str, Any]) -> dict[str, Any]:
        """The cross-node checks (``clusterd.node.nodechecks``) asked and ours, as this
        machine holds them; ValueError for a malformed query."""
        checks = nodechecks.merged(asked, nodechecks.declared(self.config))
        work = asyncio.to_thread(nodechecks.evaluate, checks, self.config)
        try:
            found = await asyncio.wait_for(work, self.timeout)
        except TimeoutError:
            raise ClusterdError(
                f"the cross-node checks took longer than {self.timeout} s (a slow disk?)"
            ) from None
        return {**found, "targets": targets.summary(self.targets)}

    async def chain_check(self) -> dict[str, Any]:
        """This member's log, every origin's chain walked (in a thread: it reads and
        hashes the whole log, and checks a signature per commit): the ``chain`` answer."""
        keys = self.store.keys()  # (taken here, on the loop, where memory changes)
        found = await asyncio.to_thread(self.store.check_chains, keys)
        return {"origins": {c.origin: c.to_json() for c in found}}

    async def ask(self, serial: str, kind: str, args: dict[str, Any], timeout: float) -> Answered:
        return await self.links.ask_peer(serial, kind, args, timeout)


def listen_refused(setting: str, address: str, port: int, exc: OSError) -> str:
    """One line that says why a port could not be listened on, and what to do."""
    flag = "--" + setting.replace("_", "-")
    if exc.errno == errno.EADDRINUSE:
        hint = (" (the host's own sshd?)" if port == 22 else "") + (
            f"; choose another port ({flag}, or {setting} in clusterd.toml) on every "
            "machine, or stop what holds it"
        )
        return f"{setting} {port}: {address}:{port} is already in use{hint}"
    return f"{setting} {port}: cannot listen on {address}:{port}: {exc.strerror or exc}"


def run(config: DaemonConfig, shells: ShellFactory | None = None) -> None:
    """Serve until SIGTERM or SIGINT; admin sessions get shells from ``shells``."""

    async def main() -> None:
        daemon = Daemon(config, shells)
        loop = asyncio.get_running_loop()
        log.info("open files allowed: %d", logsetup.raise_descriptor_limit())
        logsetup.quiet_loop_errors(loop, daemon.gate.throttle)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        await daemon.serve()

    if isinstance(shells, Workers):
        shells.start()  # forked now: no loop, no thread yet
    asyncio.run(main())
