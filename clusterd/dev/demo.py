"""A walkthrough of what the core does today, on three stores in a temporary directory.

newyork creates cluster ``americas``; losangeles and chicago join with a copy of its
state; a setting is copied down to one machine, changed there, and moved back up
(the reference's "experiment" workflow); two members edit the same row while apart
and the loss is recorded.  The shell arrives with a later issue.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from clusterd.core import layers
from clusterd.core.edits import Start
from clusterd.core.modes import Mode
from clusterd.store.session import Session
from clusterd.store.store import Store
from clusterd.trust import lifecycle

NY, LA, CHI = "newyork.example.com", "losangeles.example.com", "chicago.example.com"


def _sync(stores: list[Store]) -> None:
    for src in stores:
        for dst in stores:
            if src is not dst:
                dst.apply_remote(src.commits_missing_from(dst.version_vector) or [])


def _tz(store: Store, machine: str) -> str:
    r = layers.effective(store.state, store.catalogue, machine)["settz"]
    return f"{r.value['timezone']} (from {r.source})"


def run(out: Callable[[str], None] = print) -> None:
    with tempfile.TemporaryDirectory(prefix="clusterd-demo-") as tmp:
        data = Path(tmp)
        ny = Store(data / "newyork.db", origin="NY-0001", hostname=NY)
        la = Store(data / "losangeles.db", origin="LA-0002", hostname=LA)
        chi = Store(data / "chicago.db", origin="CHI-0003", hostname=CHI)
        stores = [ny]  # the members so far: only members exchange commits

        s = Session(ny, "admin")
        s.set_record("settz", Mode.machine(NY), {"timezone": "America/New_York"})
        s.commit("standalone newyork")
        s = Session(la, "admin")
        s.set_record("settz", Mode.machine(LA), {"timezone": "America/Los_Angeles"})
        s.commit("standalone losangeles")
        lifecycle.create_cluster(ny, "americas")
        out(f"newyork created cluster {layers.cluster_name(ny.state)!r}")
        for store in (la, chi):
            discarded = [d.title for d in lifecycle.join_report(store)] or ["nothing"]
            lifecycle.save_standalone(store, data)
            lifecycle.join(store, ny.export_state())
            stores.append(store)
            _sync(stores)
            out(f"{store.hostname} joined; the join discarded: {', '.join(discarded)}")
        for machine in (NY, LA, CHI):
            out(f"  {machine}: time zone {_tz(ny, machine)}")

        out("experiment: copy the cluster time zone down to losangeles, change it there")
        s = Session(la, "admin")
        s.copy("settz", Mode.cluster(), Mode.machine(LA))
        s.set_record("settz", Mode.machine(LA), {"timezone": "America/Los_Angeles"})
        s.commit("try Pacific time on losangeles")
        _sync(stores)
        for machine in (NY, LA):
            out(f"  {machine}: time zone {_tz(chi, machine)}")
        out("move it back up to the cluster")
        s.move("settz", Mode.machine(LA), Mode.cluster())
        s.commit("Pacific time everywhere")
        _sync(stores)
        for machine in (NY, LA, CHI):
            out(f"  {machine}: time zone {_tz(ny, machine)}")

        out("newyork and chicago edit the same row while apart")
        s = Session(ny, "alice")
        s.define("unsubscribe", Mode.cluster(), Start.EMPTY)
        s.commit("unsubscribe list")
        _sync(stores)
        for store, user in ((ny, "alice"), (chi, "bob")):
            s = Session(store, user)
            s.set_row("unsubscribe", Mode.cluster(), "news@example.com", {"comment": user})
            s.commit(f"{user}'s entry")
        _sync(stores)
        for loss in chi.inconsistencies():
            lost = chi.get_commit(loss.loser.commit)
            won = chi.get_commit(loss.by)
            out(f"  inconsistency on {loss.unit}: {lost.user}'s change lost to {won.user}'s")
        for store in stores:
            store.close()
