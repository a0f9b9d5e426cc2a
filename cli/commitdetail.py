"""``commitdetail``: the most recent commits, each with its seal (docs/history.md,
section 1) and the inconsistencies recorded against it."""

from __future__ import annotations

import json
import time

from clusterd.cli.shell import Shell, Usage
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.versions import JSON, Commit, CommitId, Loss, Unit


async def commitdetail(shell: Shell, args: list[str]) -> int:
    """The N most recent commits: id, time, origin machine, user, comment, the
    (feature, mode) pairs changed, and the inconsistencies recorded against them -- what
    of each was lost to a change made without seeing it, and what each superseded so."""
    words = [a for a in args if a not in ("--json", "-j")]
    if words and not words[0].isdigit():
        raise Usage("commitdetail [N] [--json]")
    limit = int(words[0]) if words else 10
    store = shell.store
    names = {**layers.hostnames(store.state), store.origin: store.hostname}
    lost: dict[CommitId, list[Loss]] = {}
    superseded: dict[CommitId, list[Loss]] = {}
    for loss in store.inconsistencies():
        lost.setdefault(loss.loser.commit, []).append(loss)
        superseded.setdefault(loss.by, []).append(loss)
    rows = []
    log = store.commit_log(limit)
    seals = store.verdicts(c.id for c in log)  # (a few signatures: the shell worker's CPU)
    for c in log:
        changed = sorted({(w.unit.feature, w.unit.mode) for w in c.writes})
        rows.append(
            {
                **commit_ref(shell, c, names),
                "comment": c.comment,
                "seal": seals[c.id].to_json(c.seal.hash if c.seal else None),
                "changed": [f"{f} at {Mode.from_key(m)}" for f, m in changed],
                "inconsistent": c.id in lost,
                "lost": [
                    {**_unit_ref(x.unit), "to": commit_ref(shell, x.by, names)}
                    for x in lost.get(c.id, [])
                ],
                "superseded": [
                    {**_unit_ref(x.unit), "of": commit_ref(shell, x.loser.commit, names)}
                    for x in superseded.get(c.id, [])
                ],
            }
        )
    if "--json" in args or "-j" in args:
        shell.write(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        flag = "  (lost to a concurrent change: see clustercheck)" if r["inconsistent"] else ""
        seal = r["seal"]
        mark = f"[{seal['hash'][:12]} {seal['label']}]" if seal["hash"] else f"[{seal['label']}]"
        shell.write(f"{r['id']}  {r['time']}  {r['origin']}  {r['user']}  {r['comment']!r}  "
                    f"{mark}{flag}")  # fmt: skip
        if not seal["ok"]:
            shell.write(f"    Seal: {seal['text']}")
        for what in r["changed"]:
            shell.write(f"    {what}")
        for x in r["lost"]:
            shell.write(f"    Lost: {_unit_text(x)}, to {_by_text(x['to'])}")
        for x in r["superseded"]:
            shell.write(f"    Superseded without seeing it: {_unit_text(x)} of {_by_text(x['of'])}")
    return 0


def commit_ref(shell: Shell, commit: Commit | CommitId, names: dict[str, str]) -> JSON:
    """A commit as commitdetail names it: id, time, user, origin host name and serial
    (the serial stands for the host of a machine that is no longer a member)."""
    cid = commit if isinstance(commit, CommitId) else commit.id
    origin = {"origin": names.get(cid.origin, cid.origin), "origin_serial": cid.origin}
    found = commit
    if isinstance(found, CommitId):
        try:
            found = shell.store.get_commit(found)
        except ClusterdError:  # no longer in the log: only its id is known
            return {"id": str(cid), "time": None, "user": None, **origin}
    at = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(found.at))
    return {"id": str(cid), "time": at, "user": found.user, **origin}


def _unit_ref(unit: Unit) -> JSON:
    row = None if unit.is_marker else unit.key
    return {"feature": unit.feature, "mode": str(Mode.from_key(unit.mode)), "row": row}


def _unit_text(ref: JSON) -> str:
    row = "" if ref["row"] is None else f" row {ref['row']!r}"
    return f"{ref['feature']} at {ref['mode']}{row}"


def _by_text(ref: JSON) -> str:
    if ref["user"] is None:
        return f"{ref['id']} on {ref['origin']} (no longer in the log)"
    return f"{ref['id']} by {ref['user']} on {ref['origin']} at {ref['time']}"
