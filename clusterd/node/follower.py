"""The membership follower: what this member does when membership changes.

Membership is replicated state (``clusterd.mesh.members``).  After every commit or
state transfer that touches it, ``reload`` makes the running member follow: the links
to dial or drop, this machine's own DISCONNECT flag, a new name (a committed
``sethostname``: the store, ``clusterd.toml``, the log and the hellos follow), stale
names left by renames made apart, and, for a machine removed from the cluster,
flattening its settings and leaving (``docs/membership.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from clusterd.core import layers
from clusterd.core.errors import ClusterdError, StoreError
from clusterd.core.modes import Mode
from clusterd.core.versions import Commit
from clusterd.mesh.members import endpoints, follow
from clusterd.mesh.peers import Action
from clusterd.node import config as cfg
from clusterd.node import logsetup
from clusterd.trust import clusterops, lifecycle

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.daemon")
LEAVE_DELAY = 0.5  # s: let the removal commit or the answer go out before links close


class Follower:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.group: str | None = None  # this machine's group while a member
        self.former_names: dict[str, str] = {}  # machines renamed while running: old -> new
        self._leaving: asyncio.Future[None] | None = None

    def replaced(self) -> None:
        """After a state replacement (join, leave): links and identity follow."""
        self.daemon.forget_caches()
        self.daemon.member.execute(self.reload())

    def reload(self) -> list[Action]:
        """Membership changed (a commit, a state transfer): links, identity, name and
        group follow (the links' actions are returned); a machine removed from the
        cluster flattens and leaves."""
        d = self.daemon
        was_member = d.config.serial in d.peers
        names = {serial: e.hostname for serial, e in d.peers.items()}
        d.peers = endpoints(d.store.state)
        for serial, e in d.peers.items():
            if names.get(serial, e.hostname) != e.hostname:
                self.former_names[names[serial]] = e.hostname
        own = d.peers.get(d.config.serial)
        name = own.hostname if own is not None else None
        if name is None and layers.cluster_name(d.store.state) is None:
            name = d.store.hostname  # standalone: renamed by a commit here
        if name is not None and name != d.config.hostname:
            self._renamed(name)
        if self._stale_names():  # renamed two ways by members apart: the newest name stays
            with contextlib.suppress(RuntimeError):  # no loop: not serving yet
                asyncio.get_running_loop().call_soon(self._drop_stale_names)
        d.node.me = d.identity()
        actions = follow(d.node, d.store.state, d.config.hostname, d.now())
        me = d.peers.get(d.config.serial)
        if me is not None:
            self.group = me.group
            d.left.clear()
        elif was_member and layers.cluster_name(d.store.state) is not None:
            self.schedule_leave(f"{d.config.hostname} was removed from the cluster")
        return actions

    def _renamed(self, new: str) -> None:
        """This machine has a new name (a committed ``sethostname``, here or on any
        member): the store, the log lines, the links' hellos and ``clusterd.toml``
        follow.  Its serial, keys and links stay."""
        d = self.daemon
        old = d.config.hostname
        log.warning("this machine is renamed from %s to %s", old, new)
        d.store.hostname = new
        self.former_names[old] = new  # (standalone: no peers table says so)
        try:
            d.config = cfg.save(d.config, hostname=new)
        except (ClusterdError, OSError) as exc:
            d.config = d.config.model_copy(update={"hostname": new})
            d.alert("configuration", new, f"renamed from {old}, but {exc}: set hostname = "
                    f"{new!r} in clusterd.toml before the next start")  # fmt: skip
        logsetup.set_hostname(new)
        d.node.me = d.identity()
        d.traced(f"note renamed {old} {new}")

    def _stale_names(self) -> dict[str, str]:
        d = self.daemon
        found = layers.stale_names(d.store.state).items()
        return {old: new for old, new in found if new == d.config.hostname}

    def _drop_stale_names(self) -> None:
        d = self.daemon
        stale = self._stale_names()
        if not stale:
            return
        try:
            clusterops.drop_stale_names(d.store, stale, user=lifecycle.SYSTEM_USER)
        except ClusterdError as exc:
            log.warning("could not drop the stale names %s: %s", ", ".join(stale), exc)

    def reconnected(self, by: str) -> None:
        """A member's hello showed a RECONNECT of this machine we had not seen: commit
        our own flag off, which reconnects the node (``docs/membership.md``)."""
        d = self.daemon
        who = d.peers[by].hostname if by in d.peers else by
        log.info("%s has seen a RECONNECT of this machine: reconnecting", who)
        try:
            clusterops.set_flag(d.store, d.config.hostname, False, user=lifecycle.SYSTEM_USER)
        except ClusterdError as exc:
            log.warning("could not reconnect as %s asks: %s", who, exc)

    def schedule_leave(self, why: str) -> None:
        log.warning("%s: flattening settings and leaving", why)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(LEAVE_DELAY, self._leave, self.group)

    def _leave(self, group: str | None) -> None:
        """Keep behaving as before: the settings inherited become this machine's own."""
        d = self.daemon
        store, me = d.store, d.config.hostname
        if layers.cluster_name(store.state) is None:
            d.left.set()
            return
        modes = [Mode.machine(me), *([Mode.group(group)] if group else []), Mode.cluster()]
        resolved = {
            f.command: layers.resolve(store.state, f, modes)
            for f in store.catalogue
            if not f.internal
        }
        commit = lifecycle.flatten(store, user=lifecycle.SYSTEM_USER, resolved=resolved)
        self.replaced()
        self._leaving = asyncio.ensure_future(self._left(commit, group))

    async def _left(self, commit: Commit | None, group: str | None) -> None:
        """Left once the flattening is durable; if its write failed (memory is back as
        before), membership follows the store again and the leave is tried again."""
        d = self.daemon
        try:
            await d.store.durable(commit)
        except StoreError as exc:
            log.warning("could not flatten this machine's settings (%s): trying again", exc)
            self.replaced()
            asyncio.get_running_loop().call_later(LEAVE_DELAY, self._leave, group)
            return
        d.left.set()
