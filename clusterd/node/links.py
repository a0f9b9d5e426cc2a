"""The daemon's link driver: its ``Member`` (``clusterd.mesh.member``) over SSH links.

It is the member's host and transport for the daemon: links dialled over SSH (names
resolved through DNS), peers' commits into the store, alerts to the log, the alert
list and mail, peers' questions answered (the cross-node checks off the event loop),
and membership followed through ``clusterd.node.follower``.  The SSH servers report
links here (``link_up``, ``link_data``, ``link_down``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from clusterd.core.errors import BadCommit, ClusterdError, ProtocolError, StoreError, TransportError
from clusterd.core.versions import Commit, Snapshot
from clusterd.mesh.member import Member
from clusterd.mesh.messages import SnapshotBody, StateTransfer, encode
from clusterd.mesh.peers import Action, Alert, Answered, Page
from clusterd.mesh.protocol import Node
from clusterd.mesh.statedigest import StateDiffers
from clusterd.mesh.transport import ssh
from clusterd.node import preview, witnessing
from clusterd.node.storehost import StoreHost
from clusterd.store import transfer
from clusterd.store.commitcheck import check_snapshot

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.daemon")


def _transfer_frame(image: Snapshot) -> tuple[StateTransfer, bytes]:
    """A state transfer's message and frame: CPU only (seconds at 100,000 rows), from a
    thread.  ``ProtocolError`` if it exceeds the largest frame."""
    msg = StateTransfer.of(image)
    return msg, encode(msg)


class Links(StoreHost):
    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon.store)
        self.daemon = daemon
        node = Node(daemon.identity(), self.log, [], daemon.timing)
        self.mesh = self.member = Member(node, self, self, daemon.now, self._offload)
        self.next_link = 1
        self.waiting: dict[int, asyncio.Future[Answered]] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # dials, reads, checks under way
        # peers whose state transfer is being checked, and the task doing it
        self.installing: dict[str, asyncio.Task[None]] = {}
        self.narrowing = witnessing.Narrowing(
            daemon.store,
            lambda peer, kind, args: self.ask_peer(peer, kind, args, daemon.timeout),
            self._forked,
            self._name,
        )

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _offload(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """The member's big frames are decoded in a thread; ``done`` gets the message,
        or the exception, back on the loop."""

        async def run() -> None:
            try:
                found = await asyncio.to_thread(job)
            except Exception as exc:  # (ProtocolError: the member refuses the link)
                found = exc
            done(found)

        self._background(run())

    # -- the SSH servers' reports ---------------------------------------------------------

    def link_up(self, io: ssh.LinkIO, peer: str, outbound: bool) -> int:
        link, self.next_link = self.next_link, self.next_link + 1
        self.mesh.opened(link, io, peer, outbound)
        return link

    def dial(self, peer: str) -> None:
        self._background(self._dial(peer))

    async def _dial(self, serial: str) -> None:
        d = self.daemon
        peer = d.peers.get(serial)
        try:
            if peer is None:
                raise TransportError("connection failure", f"{serial} is no longer a member")
            if serial in d.config.blocked_peers:
                raise TransportError("connection failure", f"{peer.hostname} is blocked here")
            address = peer.address
            if address is None:
                found = await d.resolver.forward(peer.hostname)
                if not found.ok:
                    raise TransportError("connection failure", f"DNS: {found.reason}")
                address = found.answers[0]
            io = await ssh.dial(
                d, peer, address, d.machine_key, d.algorithms(), d.timing.handshake_timeout,
                d.config.listen,
            )  # fmt: skip
        except TransportError as exc:
            self.mesh.dial_failed(serial, exc.kind, exc.reason)
            return
        if d.stopping.is_set() or serial not in self.mesh.node.peers:
            io.close()
            return
        io.link_id = self.link_up(io, serial, outbound=True)

    # -- the member's host ----------------------------------------------------------------

    def apply(self, commits: list[Commit], peer: str) -> None:
        try:
            super().apply(commits, peer)
        except StoreError:
            # Not applied, so not in our version vector: the peers send them again once
            # the store is back.  The store logged the outage; we alert once.
            self.daemon.store_health()

    def install(self, body: SnapshotBody, peer: str) -> None:
        """A state transfer is built, checked (chains, values) and its merge computed in a
        thread, against a copy of memory; then the store takes it here, on the loop,
        and its writer writes it (``clusterd.store.transfer``).  One from a peer whose
        last is still being checked is dropped (the next ping asks again if it is still
        needed); one that arrives while another peer's is taken waits for it, and is
        dropped if that one brought all it holds."""
        if peer in self.installing:
            return
        before = list(self.installing.values())
        task = asyncio.get_running_loop().create_task(self._install(body, peer, before))
        self.installing[peer] = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settled(self) -> None:
        """Return once every state transfer under way is checked and taken (or refused):
        for tests, which feed frames and look at the store at once."""
        while self.installing:
            await asyncio.gather(*self.installing.values())

    def _prepare(
        self, body: SnapshotBody, keys: Mapping[str, str], watch: transfer.Watch
    ) -> tuple[Snapshot, transfer.Prepared]:
        """In a thread: BadCommit if a chain does not verify or a value is invalid."""
        snapshot = body.snapshot()
        self.store.check_transfer(snapshot, self.store.transfer_keys(snapshot, keys))
        check_snapshot(self.store.catalogue, snapshot)
        return snapshot, transfer.prepare(snapshot, watch)

    async def _install(
        self, body: SnapshotBody, peer: str, before: list[asyncio.Task[None]]
    ) -> None:
        d = self.daemon
        await asyncio.gather(*before, return_exceptions=True)
        ours = self.store.state.vv
        if all(ours.get(origin, 0) >= seq for origin, seq in body.version_vector().items()):
            self.installing.pop(peer, None)
            log.info("state transfer from %s not needed: another brought it all", peer)
            return
        watch = self.store.watch()
        try:
            keys = self.store.keys()
            snapshot, prepared = await asyncio.to_thread(self._prepare, body, keys, watch)
            log.info("state transfer from %s: %d commits", peer, len(snapshot.commits))
            self.store.take_transfer(
                snapshot, prepared, lambda forks: self.transferred(peer, forks)
            )
        except BadCommit as exc:
            if peer in self.mesh.node.peers:
                reason = "; ".join(exc.problems[:3])
                self.mesh.call(lambda node: node.rejected(peer, d.now(), reason))
            return
        except StoreError:
            d.store_health()
            return
        finally:
            self.store.unwatch(watch)
            self.installing.pop(peer, None)
        if d.tracing:
            d.traced(f"install {peer} {json.dumps(self.store.state.vv, separators=(',', ':'))}")

    def read_log(self, link: int, vv: Mapping[str, int], limit: int) -> Page | None:
        """A sync page is read in a thread: a disk read never holds the links' loop.  For
        a state transfer (the log was truncated past the asker) memory is copied on the
        loop and the log read by the store's writer up to the copy's vector, so they are
        one consistent picture; its wire body is built in a thread.  None at
        all while an entry here differs from its verified log (``node.divergence``):
        the asker's request times out and it syncs from another member."""
        if self.daemon.divergence.quarantined:
            log.info("sync request on link %d not served: an entry here is corrupt", link)
            return None

        async def read() -> None:
            found: Page | None = await asyncio.to_thread(self.log.missing_from, dict(vv), limit)
            if found is not None:
                self.mesh.log_read(link, found)
                return
            try:
                image = await self.store.export_image()
                msg, frame = await asyncio.to_thread(_transfer_frame, image)
            except (StoreError, ProtocolError) as exc:  # (an oversized state: logged)
                log.error("state transfer on link %d not sent: %s", link, exc)
                return  # the asker asks again
            self.mesh.log_read(link, msg, frame)

        self._background(read())
        return None

    def ask(self, peer: str, qid: int, kind: str, args: Mapping[str, Any]) -> Any:
        if kind == "checks":  # reads files: off the event loop
            self._background(self._answer_checks(peer, qid, args))
            return None
        if kind == "preview":  # renders the targets: in a thread
            self._background(self._answer_preview(peer, qid, args))
            return None
        if kind == "chain":  # walks the whole log: in a thread
            self._background(self._answer_chain(peer, qid))
            return None
        if kind in ("digest", "status", "summary"):  # walk the whole state: in a thread
            self._background(self._answer_later(peer, qid, kind))
            return None
        if kind == "heads":  # the heads from memory; the hashes of a range in a thread
            try:
                found = witnessing.answer(self.store, args)
            except ValueError as exc:
                return False, f"bad heads query: {exc}"
            if found is not None:
                return True, found
            self._background(self._answer_hashes(peer, qid, args))
            return None
        try:
            return self.daemon.answer(kind, args)
        except (ClusterdError, KeyError, ValueError, TypeError) as exc:
            return False, f"bad {kind} query: {exc}"

    async def _answer_later(self, peer: str, qid: int, kind: str) -> None:
        body: Any
        try:
            ok, body = await self.daemon.answer_later(kind)
        except ClusterdError as exc:
            ok, body = False, str(exc)
        self.mesh.reply(peer, qid, ok, body)

    async def _answer_checks(self, peer: str, qid: int, args: Mapping[str, Any]) -> None:
        body: Any
        try:
            ok, body = True, await self.daemon.node_checks(args)
        except (ValueError, TypeError) as exc:
            ok, body = False, f"bad checks query: {exc}"
        except ClusterdError as exc:
            ok, body = False, str(exc)
        self.mesh.reply(peer, qid, ok, body)

    async def _answer_preview(self, peer: str, qid: int, args: Mapping[str, Any]) -> None:
        body: Any
        try:
            ok, body = True, await preview.here(self.daemon, args)
        except (ClusterdError, ValueError, TypeError, KeyError) as exc:
            ok, body = False, f"bad preview query: {exc}"
        self.mesh.reply(peer, qid, ok, body)

    async def _answer_chain(self, peer: str, qid: int) -> None:
        body: Any
        try:
            ok, body = True, await self.daemon.chain_check()
        except ClusterdError as exc:
            ok, body = False, str(exc)
        self.mesh.reply(peer, qid, ok, body)

    async def _answer_hashes(self, peer: str, qid: int, args: Mapping[str, Any]) -> None:
        body: Any
        try:
            ok, body = True, await asyncio.to_thread(witnessing.read, self.store, args)
        except StoreError as exc:
            ok, body = False, str(exc)
        self.mesh.reply(peer, qid, ok, body)

    def heads_differ(self, peer: str) -> None:
        self.narrowing.start(peer)

    def _forked(self, peer: str, origin: str, seq: int, text: str) -> None:
        if peer in self.mesh.node.peers:
            self.mesh.call(lambda node: node.forked(peer, origin, seq, text, self.daemon.now()))

    def _name(self, serial: str) -> str:
        d = self.daemon
        if serial == d.config.serial:
            return d.config.hostname
        return d.peers[serial].hostname if serial in d.peers else serial

    def alert(self, alert: Alert) -> None:
        d = self.daemon
        name = d.peers[alert.peer].hostname if alert.peer in d.peers else alert.peer
        log.warning("ALERT %s: %s: %s", alert.kind, name, alert.text)
        d.alerts.append({"at": time.time(), "kind": alert.kind, "peer": name, "text": alert.text})
        d.mail.post(alert.kind, name, alert.text)

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.daemon.traced(f"note {text}")

    def answered(self, answer: Answered) -> None:
        future = self.waiting.pop(answer.qid, None)
        if future is not None and not future.done():
            future.set_result(answer)

    def state_differs(self, news: StateDiffers) -> None:
        self.daemon.divergence.news(news)

    def reconnect(self, by: str) -> None:  # after the goodbye and close that come with it
        asyncio.get_running_loop().call_soon(self.daemon.follower.reconnected, by)

    def follow(self, node: Node, now: float) -> list[Action]:
        return self.daemon.follower.reload()

    # -- asking peers ---------------------------------------------------------------------

    async def ask_peer(
        self, serial: str, kind: str, args: dict[str, Any], timeout: float
    ) -> Answered:
        future: asyncio.Future[Answered] = asyncio.get_running_loop().create_future()
        qid, actions = self.mesh.node.query(serial, kind, args, self.daemon.now())
        self.waiting[qid] = future  # (before the actions: "no route" answers at once)
        self.mesh.execute(actions)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.waiting.pop(qid, None)
            return Answered(serial, qid, False, f"no answer within {timeout} s")
