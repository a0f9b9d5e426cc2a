"""The daemon's cluster operations, as the control socket (and later the shell) calls them.

* standalone: ``create``, ``probe`` (the member's host key fingerprint), ``join`` (over
  SSH with the admin passphrase or a PREPJOIN key, or over CCS with the key; a dry run
  first), ``prepjoin_print``;
* member side of a join: ``admit`` answers a ``JoinRequest`` (refusals with reasons);
* in a cluster: LIST, groups, SETNAME, REMOVEMACHINE, CONNSTATUS, CCS on/off.

Every refusal raises ``ClusterdError`` (``LifecycleError``, ``JoinRefused``) before
anything changes; every change is one commit handed to the mesh at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from clusterd.core import layers
from clusterd.core.errors import ClusterdError, LifecycleError, StoreError
from clusterd.core.state import State
from clusterd.core.versions import Commit, Snapshot
from clusterd.mesh.members import key_text
from clusterd.mesh.messages import SnapshotBody
from clusterd.mesh.peers import Answered
from clusterd.node import status
from clusterd.node.identity import public_key
from clusterd.trust import clusterops, lifecycle
from clusterd.trust.join import (
    JoinAnswer,
    Joiner,
    JoinRefused,
    JoinRequest,
    call,
    fingerprint,
    probe,
)

if TYPE_CHECKING:
    from clusterd.node.daemon import Daemon

log = logging.getLogger("clusterd.admin")
WILDCARD = ("0.0.0.0", "::", "")
LEAVE_TIMEOUT = 10.0  # s: removing oneself waits this long for the flattening


class Admin:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @property
    def store(self) -> Any:
        return self.daemon.store

    async def _done(self, commit: Commit | None) -> dict[str, Any]:
        """Once ``commit`` is durable (written off the links' loop), what to answer."""
        await self.store.durable(commit)
        return {"commit": None if commit is None else str(commit.id)}

    def _standalone(self) -> None:
        name = layers.cluster_name(self.store.state)
        if name is not None:
            raise LifecycleError(f"this machine is already a member of cluster {name!r}")

    # -- this machine, as membership records it -----------------------------------------

    def my_row(self, *, ccs: bool) -> dict[str, Any]:
        c = self.daemon.config
        return {
            "serial": c.serial,
            # A wildcard listen address says nothing of where we are: members resolve
            # our host name instead.
            "address": c.listen if c.advertise_address and c.listen not in WILDCARD else None,
            "ssh_port": c.ssh_port,
            "ccs_port": c.ccs_port if ccs else None,
            "transport": "ccs" if ccs else "ssh",
            "host_key": key_text(public_key(c.host_key)),
            "machine_key": key_text(public_key(c.machine_key)),
        }

    def prepjoin_print(self) -> dict[str, Any]:
        """What an admin registers on a member with PREPJOIN NEW."""
        c = self.daemon.config
        return {
            "hostname": c.hostname,
            "serial": c.serial,
            "machine_key": key_text(public_key(c.machine_key)),
        }

    # -- create and join (standalone side) --------------------------------------------

    async def create(self, name: str, user: str) -> dict[str, Any]:
        self._standalone()
        ccs = self.daemon.config.ccs_enabled
        commit = lifecycle.create_cluster(self.store, name, user=user, machine=self.my_row(ccs=ccs))
        done = await self._done(commit)
        self.daemon.follower.replaced()
        return {"cluster": name, **done}

    async def probe(self, address: str, port: int) -> dict[str, Any]:
        key = await probe(address, port, self.daemon.algorithms(), self.daemon.timeout)
        return {
            "fingerprint": fingerprint(key),
            "host_key": key_text(key.export_public_key().decode()),
        }

    async def join(
        self,
        *,
        address: str,
        port: int,
        fingerprint_expected: str,
        passphrase: str | None = None,
        user: str = "admin",
        group: str = lifecycle.MAIN_GROUP,
        ccs: bool = False,
        enable_ccs: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Join the cluster of the member at ``address:port`` (its CCS port if ``ccs``).
        The members dial a machine they admitted at once: logins refused meanwhile are
        judged once the join is over (``Logins.joining``)."""
        with contextlib.nullcontext() if dry_run else self.daemon.auth.joining():
            return await self._join(address, port, fingerprint_expected, passphrase, user,
                                    group, ccs, enable_ccs, dry_run)  # fmt: skip

    async def _join(
        self,
        address: str,
        port: int,
        fingerprint_expected: str,
        passphrase: str | None,
        user: str,
        group: str,
        ccs: bool,
        enable_ccs: bool,
        dry_run: bool,
    ) -> dict[str, Any]:
        d = self.daemon
        self._standalone()
        if ccs and passphrase is not None:
            raise JoinRefused(
                "a join over CCS uses this machine's key registered with PREPJOIN, not a passphrase"
            )
        algs, timeout = d.algorithms(), d.timeout
        key = await probe(address, port, algs, timeout)
        seen = fingerprint(key)
        if not fingerprint_expected:
            raise JoinRefused(f"confirm the host key of {address}:{port} first: {seen}")
        if seen != fingerprint_expected.strip():
            raise JoinRefused(
                f"host key fingerprint mismatch: {address}:{port} presents {seen}, "
                f"not {fingerprint_expected.strip()}; nothing was changed"
            )
        enable_ccs = enable_ccs or (ccs and d.config.ccs_enabled)
        row = self.my_row(ccs=enable_ccs)
        request = JoinRequest(
            check=True,
            hostname=d.config.hostname,
            serial=d.config.serial,
            software=d.config.software,
            group=group,
            machine=row,
        )
        auth: dict[str, Any] = (
            {"passphrase": (user, passphrase)}
            if passphrase is not None
            else {"machine_key": d.machine_key}
        )
        answer = await call(
            address, port, host_key=key, request=request, algs=algs, timeout=timeout, **auth
        )
        report = {
            "fingerprint": seen,
            "cluster": answer.cluster,
            "member": answer.member,
            "group": group,
            "discard": [x.as_json() for x in lifecycle.join_report(self.store)],
        }
        if dry_run:
            return {**report, "dry_run": True}
        # The copy is written before the member is asked: it is only a copy (a refused
        # join leaves it beside an unchanged configuration), and once the member has
        # admitted us it is too late to take one.
        saved = lifecycle.save_standalone(self.store, d.config.data_dir)
        request = request.model_copy(update={"check": False})
        answer = await call(
            address, port, host_key=key, request=request, algs=algs, timeout=timeout, **auth
        )
        snapshot = self._cluster_state(answer, key_text(key.export_public_key().decode()))
        commit = lifecycle.join(self.store, snapshot, group=group, machine=row)
        written = await self._done(commit)
        # Only now that the join happened does this machine change: CCS on (listener and
        # clusterd.toml), before the links start so members find the port open.
        warning = None
        if enable_ccs and d.ccs_server is None:
            try:
                await d.set_ccs_listener(True)
            except ClusterdError as exc:
                warning = (
                    f"joined, but CCS could not be turned on: {exc}; members cannot reach "
                    "this machine until it is (control operation 'ccs')"
                )
                log.warning("%s", warning)
        d.follower.replaced()
        log.info("joined cluster %s through %s (saved %s)", answer.cluster, answer.member, saved)
        done = {**report, "saved": str(saved), **written}
        return {**done, "warning": warning} if warning else done

    def _cluster_state(self, answer: JoinAnswer, host_key: str) -> Snapshot:
        """The state the member sent, if it pins the host key we confirmed for it."""
        if answer.snapshot is None:
            raise JoinRefused(f"{answer.member} sent no cluster state")
        try:
            snapshot = answer.snapshot.snapshot()
            rows = layers.machines(State.from_snapshot(snapshot))
        except (KeyError, TypeError, ValueError) as exc:
            raise JoinRefused(
                f"{answer.member} sent a cluster state that does not read: {exc}"
            ) from None
        pinned = rows.get(answer.member, {}).get("host_key")
        if pinned is None or key_text(str(pinned)) != host_key:
            raise JoinRefused(
                f"membership sent by {answer.member} does not pin the host key confirmed "
                "for it; not joining"
            )
        return snapshot

    # -- the member side of a join ----------------------------------------------------

    async def admit(self, request: JoinRequest | str, joiner: Joiner) -> JoinAnswer:
        d, store = self.daemon, self.store
        me = d.config.hostname
        try:
            if isinstance(request, str):
                raise JoinRefused(request)
            name = self._admissible(request, joiner)
            if request.check:
                return JoinAnswer(ok=True, cluster=name, member=me, software=d.config.software)
            row = {**request.machine, "serial": request.serial}
            by = joiner.name if joiner.kind == "passphrase" else f"prepjoin:{joiner.name}"
            commit = clusterops.admit(store, request.hostname, row, request.group, user=by)
            await self._done(commit)
        except (JoinRefused, LifecycleError, StoreError) as exc:
            who = getattr(request, "hostname", "?")
            log.warning("join of %s refused: %s", who, exc)
            d.alert("join refused", who, str(exc))
            return JoinAnswer(ok=False, error=str(exc), member=me)
        log.info("admitted %s to group %s", request.hostname, request.group)
        snapshot = await asyncio.to_thread(SnapshotBody.of, await store.export_image())
        return JoinAnswer(
            ok=True, cluster=name, member=me, software=d.config.software, snapshot=snapshot
        )

    def _admissible(self, request: JoinRequest, joiner: Joiner) -> str:
        d, state = self.daemon, self.store.state
        me = d.config.hostname
        if joiner.kind == "passphrase" and joiner.role != "admin":  # first: tell nothing
            raise JoinRefused(
                f"user {joiner.name!r} is not a cluster admin (role {joiner.role}): "
                "only an admin may add a machine"
            )
        name = layers.cluster_name(state)
        if name is None:
            raise JoinRefused(f"{me} is not a member of a cluster")
        if request.software != d.config.software:
            raise JoinRefused(
                f"software versions differ: {me} runs clusterd {d.config.software}, "
                f"{request.hostname} runs {request.software}; run the same version on both"
            )
        machines = layers.machines(state)
        if request.hostname in machines:
            raise JoinRefused(
                f"a machine named {request.hostname} is already a member of cluster {name!r}"
            )
        for host, row in machines.items():
            if row["serial"] == request.serial:
                raise JoinRefused(f"serial {request.serial} already belongs to member {host}")
        if request.group not in layers.groups(state):
            known = ", ".join(layers.groups(state))
            raise JoinRefused(f"cluster {name!r} has no group {request.group!r} ({known})")
        offered = key_text(str(request.machine.get("machine_key") or ""))
        if not offered or not request.machine.get("host_key"):
            raise JoinRefused("the join request carries no machine key or host key")
        if joiner.kind == "key":
            prepared = layers.prepared(state).get(joiner.name, {})
            if joiner.name != request.hostname:
                raise JoinRefused(
                    f"the key that logged in was registered with PREPJOIN for {joiner.name}, "
                    f"not {request.hostname}"
                )
            if prepared.get("serial") != request.serial:
                raise JoinRefused(
                    f"PREPJOIN registered {joiner.name} with serial {prepared.get('serial')}, "
                    f"not {request.serial}"
                )
            if offered != joiner.key:
                raise JoinRefused("the machine key in the request is not the key that logged in")
        return name

    # -- cluster operations -------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        """LIST / LISTDETAIL, each other machine's row with ``link``: how this machine
        reaches it now (``state``, ``route``, ``reason``, ``admin_off`` as ``status`` says)."""
        listed = clusterops.listing(self.store)
        links = {p["serial"]: p for p in status.peers(self.daemon)}
        for rows in listed["groups"].values():
            for machine, row in rows.items():
                if machine == self.daemon.config.hostname:
                    continue  # the login host has no link to itself
                peer = links.get(row["serial"], {"state": "down", "route": None,
                                                 "reason": "", "admin_off": False})  # fmt: skip
                row["link"] = {k: peer[k] for k in ("state", "route", "reason", "admin_off")}
        return {**listed, "text": clusterops.list_text(listed)}

    async def group_op(self, op: str, args: dict[str, Any], user: str) -> dict[str, Any]:
        s = self.store
        match op:
            case "addgroup":
                commit = clusterops.add_group(s, str(args["group"]), user=user)
            case "renamegroup":
                commit = clusterops.rename_group(s, str(args["old"]), str(args["new"]), user=user)
            case "deletegroup":
                move_to = args.get("move_to")
                commit = clusterops.delete_group(
                    s, str(args["group"]), move_to=None if move_to is None else str(move_to),
                    user=user,
                )  # fmt: skip
            case "setgroup":
                commit = clusterops.set_group(
                    s, str(args["machine"]), str(args["group"]), user=user
                )
            case "setname":
                commit = clusterops.set_name(s, str(args["name"]), user=user)
            case _:
                raise LifecycleError(f"unknown cluster operation {op!r}")
        return await self._done(commit)

    async def remove(self, machine: str, user: str) -> dict[str, Any]:
        """REMOVEMACHINE: the machine flattens its settings and leaves every membership."""
        d, store = self.daemon, self.store
        rows = layers.machines(store.state)
        if layers.cluster_name(store.state) is None:
            raise LifecycleError("this machine is not a member of a cluster")
        if machine not in rows:
            raise LifecycleError(f"no machine {machine!r} in the cluster")
        if machine == d.config.hostname:
            if len(rows) == 1:
                name = layers.cluster_name(store.state)
                commit = lifecycle.flatten(store, user=user)
                done = await self._done(commit)
                d.follower.replaced()
                return {"removed": machine, "cluster_deleted": name, **done}
            commit = clusterops.remove_machine(store, machine, user=user)
            result = await self._done(commit)
            try:
                await asyncio.wait_for(d.left.wait(), LEAVE_TIMEOUT)
            except TimeoutError:
                raise LifecycleError(
                    f"{machine} was removed from the cluster but did not flatten its "
                    f"settings within {LEAVE_TIMEOUT:.0f} s; see the daemon log"
                ) from None
            return {"removed": machine, "flattened": True, **result}
        serial = rows[machine]["serial"]
        if rows[machine].get("disconnected") or d.node.route(serial) is None:
            # Nobody to tell now (disconnected, or no link to it): do not wait for it.
            why = "it is disconnected" if rows[machine].get("disconnected") else "no route"
            answered = Answered(serial, 0, False, why)
        else:
            answered = await d.ask(serial, "leave", {"by": user}, d.timeout * 2)
        commit = clusterops.remove_machine(store, machine, user=user)
        result = {"removed": machine, "flattened": answered.ok, **await self._done(commit)}
        if not answered.ok:
            result["warning"] = (
                f"{machine} could not be told ({answered.body}); it keeps its cluster "
                f"settings until it learns of the removal or REMOVEMACHINE {machine} is run "
                "on it"
            )
        return result

    async def set_disconnected(self, machine: str, flag: bool, user: str) -> dict[str, Any]:
        """DISCONNECT / RECONNECT of any machine: its flag, which it obeys wherever the
        commit comes from (``docs/membership.md``)."""
        d, store = self.daemon, self.store
        rows = layers.machines(store.state)
        if machine not in rows:
            raise LifecycleError(f"no machine {machine!r} in the cluster")
        if bool(rows[machine].get("disconnected")) == flag:
            state = "disconnected" if flag else "connected"
            who = "this machine" if machine == d.config.hostname else machine
            raise LifecycleError(f"{who} is already {state}")
        commit = clusterops.set_flag(store, machine, flag, user=user)
        return await self._done(commit)  # a disconnect reaches the peers before the links close

    async def connstatus(self) -> dict[str, Any]:
        """CONNSTATUS: per member, its link, its sync state and the DNS facts about it,
        never hanging."""
        d = self.daemon
        linked = {p["serial"]: p for p in status.peers(d, features=True)}
        others = [e for e in d.peers.values() if e.serial != d.config.serial]

        async def one(e: Any) -> dict[str, Any]:
            forward = await d.resolver.forward(e.hostname)
            address = e.address or (forward.answers[0] if forward.ok else None)
            reverse = await d.resolver.reverse(address) if address else None
            peer = linked.get(e.serial, {})
            inbound = d.reverse_seen.get(e.serial)
            fact = next((f for f in status.reverse_facts(d) if f["hostname"] == e.hostname), {})
            return {
                "hostname": e.hostname,
                "serial": e.serial,
                "group": e.group,
                "transport": e.transport,
                "address": address,
                "port": e.port,
                "state": peer.get("state"),
                "reason": peer.get("reason"),
                "sync": peer.get("sync"),  # as status says it (node.syncstate)
                "forward": forward.describe(),
                "forward_ok": forward.ok,
                "reverse": None if reverse is None else reverse.describe(),
                "reverse_ok": None if reverse is None else reverse.ok,
                "inbound_reverse": None if inbound is None else inbound.describe(),
                "accepted_without_reverse": bool(fact.get("accepted")),
                "reverse_mismatch": bool(fact.get("mismatch")),
            }

        found = await asyncio.gather(*(one(e) for e in others))
        return {"reverse_dns": d.config.reverse_dns, "members": list(found)}

    async def set_ccs(self, enabled: bool, user: str) -> dict[str, Any]:
        """Turn CCS on or off here; in a cluster, members reach us the new way at once."""
        d, store = self.daemon, self.store
        if enabled:
            await d.set_ccs_listener(True)
        commit = None
        if d.config.hostname in layers.machines(store.state):
            commit = clusterops.set_reachability(
                store, d.config.hostname, self.my_row(ccs=enabled), enabled, user=user
            )
        result = await self._done(commit)
        if not enabled:
            await d.set_ccs_listener(False)
        return {"ccs": enabled, **result}
