"""What the web interface does, once for the JSON API and the pages (the pages are the
API's client in spirit: each form does exactly one of these).

Reads come from the worker's image of the store; edits go into the browser session's
pending changes (validated as the shell's are); commits and everything about the
running cluster are asked of the node, which checks the session's role itself.  Every
value shown has its secret fields as "set".
"""

from __future__ import annotations

import time
from typing import Any

from clusterd.core import layers
from clusterd.core.edits import Start
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.core.preview import effect
from clusterd.core.state import definition
from clusterd.core.versions import JSON, CommitId
from clusterd.node import checkrun
from clusterd.schema.feature import Feature
from clusterd.trust.logins import READ_ONLY_ROLES
from clusterd.web.context import Browser, Context

HISTORY = 50  # commits on the history page


class Refused(ClusterdError):
    """The session's role may not do this (HTTP 403)."""


class Conflicts(ClusterdError):
    """Pending changes that others committed over since they were read (HTTP 409)."""

    def __init__(self, found: list[dict[str, Any]]) -> None:
        super().__init__("changed by another commit since you read them")
        self.found = found


def role_of(ctx: Context, browser: Browser) -> str:
    role = ctx.role(browser.user)
    if role is None:
        raise Refused(f"user {browser.user!r} no longer exists in this cluster")
    return role


def may_read(ctx: Context, browser: Browser) -> str:
    """The role, if it may read the configuration (a guest may not: as in the shell)."""
    role = role_of(ctx, browser)
    if role == "guest":
        raise Refused(f"{browser.user} is a guest: the configuration is not open to guests")
    return role


def may_write(ctx: Context, browser: Browser, what: str) -> None:
    role = role_of(ctx, browser)
    if role in READ_ONLY_ROLES:
        raise Refused(f"{browser.user} ({role}) may not {what}")


# -- reading ---------------------------------------------------------------------------


def features(ctx: Context) -> list[dict[str, Any]]:
    return [{"command": f.command, "title": f.title, "kind": f.kind.value,
             "levels": sorted(level.value for level in f.levels),
             "description": f.description}
            for f in ctx.store.catalogue if not f.internal]  # fmt: skip


def modes(ctx: Context, browser: Browser) -> list[dict[str, str]]:
    """Every mode of the cluster, as the session sees it (its pending groups too)."""
    view = browser.session.view
    if layers.cluster_name(view) is None:
        return [{"key": Mode.machine(ctx.hostname).key, "label": f"Machine {ctx.hostname}"}]
    found = [Mode.cluster()]
    found += [Mode.group(g) for g in layers.groups(view)]
    found += [Mode.machine(m) for m in layers.machines(view)]
    return [{"key": m.key, "label": str(m)} for m in found]


def mode_of(ctx: Context, browser: Browser, key: str | None) -> Mode:
    """The mode a request names (by key), one of the cluster's; the session's own
    machine when it names none."""
    if not key:
        key = Mode.cluster().key if layers.cluster_name(ctx.store.state) else None
        return Mode.from_key(key) if key else Mode.machine(ctx.hostname)
    mode = Mode.from_key(key)
    if key not in {m["key"] for m in modes(ctx, browser)}:
        raise ClusterdError(f"no {mode} in this cluster")
    return mode


def feature_of(ctx: Context, command: str) -> Feature:
    if command not in ctx.store.catalogue or ctx.store.catalogue[command].internal:
        raise ClusterdError(f"no feature {command!r}")
    return ctx.store.catalogue[command]


def feature_at(ctx: Context, browser: Browser, command: str, key: str | None) -> dict[str, Any]:
    """One feature at one mode, as the session sees it: where it is defined, what this
    mode defines (or would inherit, and from where), the lower modes that override it."""
    may_read(ctx, browser)
    feature, mode = feature_of(ctx, command), mode_of(ctx, browser, key)
    view = browser.session.view
    value = definition(view.entries(feature.command, mode.key), feature.is_table)
    defined_at = [{"key": m.key, "label": str(m)}
                  for m, defined in layers.defined_at(view, feature) if defined]  # fmt: skip
    inherited = browser.session.edit.inherited_from(feature, mode)
    overriding = [str(m) for m in layers.overriding(view, feature, mode)]
    allowed = mode.level in feature.levels
    badge = "inherited"
    if value is not None:
        badge = "overridden here"
        if not value and inherited.value:
            badge = "empty override hides inherited data"
    return {
        "feature": feature.command,
        "title": feature.title,
        "kind": feature.kind.value,
        "mode": {"key": mode.key, "label": str(mode)},
        "allowed_here": allowed,
        "defined_here": value is not None,
        "badge": badge,
        "value": feature.shown(value),
        "inherited": feature.shown(inherited.value),
        "inherited_from": "the factory defaults" if inherited.mode is None else str(inherited.mode),
        "defined_at": defined_at,
        "groups_define": any(d["key"].startswith("group:") for d in defined_at),
        "overridden_below": overriding,  # (not affected by a change here)
    }


def effective(ctx: Context, browser: Browser, machine: str | None) -> dict[str, Any]:
    """A machine's whole effective configuration (this one's by default): per feature,
    its value and the mode it comes from."""
    may_read(ctx, browser)
    view = browser.session.view
    name = machine or ctx.hostname
    if layers.cluster_name(view) is not None and name not in layers.machines(view):
        raise ClusterdError(f"no machine {name!r} in the cluster")
    chain = layers.chain(view, name)
    found = {}
    for feature in ctx.store.catalogue:
        if feature.internal:
            continue
        resolved = layers.resolve(view, feature, chain)
        found[feature.command] = {"value": feature.shown(resolved.value),
                                  "from": resolved.source}  # fmt: skip
    return {"machine": name, "features": found}


def explain(ctx: Context, browser: Browser, command: str) -> list[dict[str, Any]]:
    """The effective value on each machine and where it comes from."""
    may_read(ctx, browser)
    feature = feature_of(ctx, command)
    view = browser.session.view
    found = []
    for machine, row in layers.machines(view).items() or {ctx.hostname: {}}.items():
        resolved = layers.resolve(view, feature, layers.chain(view, machine))
        found.append({"machine": machine, "group": row.get("group"),
                      "value": feature.shown(resolved.value),
                      "from": "the factory defaults" if resolved.mode is None
                      else str(resolved.mode)})  # fmt: skip
    return found


def pending(ctx: Context, browser: Browser) -> dict[str, Any]:
    may_read(ctx, browser)
    cat = ctx.store.catalogue
    changes = []
    for unit, write in browser.session.pending.items():
        feature = cat[unit.feature]
        if unit.is_marker:  # a record, or a table's definition
            value = write.value if feature.is_table else feature.shown(write.value)
        else:
            value = feature.shown({unit.key: write.value})[unit.key]
        changes.append({"feature": unit.feature, "mode": str(Mode.from_key(unit.mode)),
                        "row": None if unit.is_marker else unit.key,
                        "value": value})  # fmt: skip
    machines = list(layers.machines(ctx.store.state)) or [ctx.hostname]
    preview = effect(ctx.store.state, browser.session.view, cat, browser.session.pending,
                     machines)  # fmt: skip
    return {"changes": changes, "preview": preview}


async def install_preview(ctx: Context, browser: Browser) -> dict[str, Any]:
    """Per member: the diffs of its service files (its targets) that this session's
    pending changes would make, each member rendering its own."""
    may_read(ctx, browser)
    writes = [[u.feature, u.mode, u.key, w.value] for u, w in browser.session.pending.items()]
    if not writes:
        return {}
    return await ctx.ask(browser, "install_preview", writes)  # type: ignore[no-any-return]


def history(ctx: Context, browser: Browser, limit: int = HISTORY) -> list[dict[str, Any]]:
    may_read(ctx, browser)
    names = {**layers.hostnames(ctx.store.state), ctx.store.origin: ctx.store.hostname}
    found = []
    log = ctx.store.commit_log(limit)
    seals = ctx.store.verdicts(c.id for c in log)
    for c in log:
        found.append({"id": str(c.id), "origin": names.get(c.id.origin, c.id.origin),
                      "user": c.user, "at": c.at, "comment": c.comment,
                      "changed": sorted({f"{w.unit.feature} at {Mode.from_key(w.unit.mode)}"
                                         for w in c.writes}),
                      "seal": seals[c.id].to_json(c.seal.hash if c.seal else None)})  # fmt: skip
    return found


def commit_detail(ctx: Context, browser: Browser, ref: str) -> dict[str, Any]:
    """One commit (commitdetail): who, when, where, and each unit it wrote (secret
    fields as "set"), with the changes it overwrote unseen or that overwrote it."""
    may_read(ctx, browser)
    origin, _, seq = ref.rpartition(":")
    if not origin or not seq.isdigit():
        raise ClusterdError(f"not a commit id: {ref!r} (ORIGIN:SEQ)")
    cid = CommitId(origin, int(seq))
    commit = ctx.store.get_commit(cid)
    names = {**layers.hostnames(ctx.store.state), ctx.store.origin: ctx.store.hostname}
    cat = ctx.store.catalogue
    writes = []
    for w in commit.writes:
        feature = cat[w.unit.feature]
        value = (feature.shown(w.value) if w.unit.is_marker or not feature.is_table
                 else feature.shown({w.unit.key: w.value})[w.unit.key])  # fmt: skip
        row = None if w.unit.is_marker else w.unit.key
        writes.append({"feature": w.unit.feature, "mode": str(Mode.from_key(w.unit.mode)),
                       "row": row, "value": value})  # fmt: skip
    losses = [{"unit": str(x.unit), "lost": str(x.loser.commit), "by": str(x.by)}
              for x in ctx.store.inconsistencies() if cid in (x.loser.commit, x.by)]  # fmt: skip
    seal = ctx.store.verdicts([cid])[cid].to_json(commit.seal.hash if commit.seal else None)
    return {"id": str(cid), "origin": names.get(origin, origin), "user": commit.user,
            "at": commit.at, "comment": commit.comment, "writes": writes,
            "losses": losses, "seal": seal}  # fmt: skip


# -- editing (the session's pending changes) ---------------------------------------------

START = {"empty": Start.EMPTY, "defaults": Start.DEFAULTS, "inherited": Start.INHERITED}


def _kept_secrets(feature: Feature, current: Any, data: dict[str, Any]) -> dict[str, Any]:
    """A secret field sent back as shown ("set") or left empty keeps its value."""
    kept = dict(data)
    for name in feature.secrets:
        if kept.get(name) in ("set", "", None) and isinstance(current, dict) and name in current:
            kept[name] = current[name]
    return kept


def edit(ctx: Context, browser: Browser, command: str, key: str, op: str,
         **args: Any) -> JSON | None:  # fmt: skip
    """One edit of the session's pending changes (``ClusterdError`` / ``InvalidSetting``
    say why not, and nothing changed)."""
    may_write(ctx, browser, "change settings")
    feature, mode = feature_of(ctx, command), mode_of(ctx, browser, key)
    s = browser.session
    match op:
        case "define":
            start = START.get(str(args.get("start")))
            if start is None:
                raise ClusterdError("start: empty, defaults or inherited")
            s.define(command, mode, start)
        case "undefine" if args.get("to") == "allgroups":  # (every group that defines it)
            for group in layers.groups(s.view):
                if layers.is_defined(s.view, feature, Mode.group(group)):
                    s.undefine(command, Mode.group(group))
        case "undefine":
            s.undefine(command, mode)
        case "set_record":
            marker = s.view.entries(command, mode.key).marker
            data = _kept_secrets(feature, marker.value if marker else None, dict(args["value"]))
            return s.set_record(command, mode, data)
        case "set_row":
            row = str(args["row"])
            kept = _kept_secrets(feature, s.view.row(command, mode.key, row), dict(args["value"]))
            return s.set_row(command, mode, row, kept)
        case "delete_row":
            s.delete_row(command, mode, str(args["row"]))
        case "copy" | "move":
            to = str(args.get("to") or "")
            if to == "allgroups" and op == "copy":
                s.copy_to_all_groups(command, mode)
            else:
                (s.copy if op == "copy" else s.move)(command, mode, mode_of(ctx, browser, to))
        case _:
            raise ClusterdError(f"no edit {op!r}")
    return None


def clear(ctx: Context, browser: Browser) -> int:
    return browser.session.clear()


def conflicts(ctx: Context, browser: Browser) -> list[dict[str, Any]]:
    names = {**layers.hostnames(ctx.store.state), ctx.store.origin: ctx.store.hostname}
    found = []
    for c in browser.session.conflicts():
        current = c.current
        found.append({"feature": c.unit.feature, "mode": str(Mode.from_key(c.unit.mode)),
                      "row": None if c.unit.is_marker else c.unit.key,
                      "now": "deleted" if current is None or current.value is None
                      else "changed",
                      "commit": None if current is None else str(current.commit),
                      "holder": None if current is None
                      else names.get(current.origin, current.origin)})  # fmt: skip
    return found


async def commit(ctx: Context, browser: Browser, comment: str,
                 on_conflict: str | None) -> dict[str, Any]:  # fmt: skip
    """The session's pending changes committed by the node.  Changes that others
    committed over since they were read are ``Conflicts`` unless ``on_conflict`` says
    what to do: "overwrite" (ours win) or "discard" (theirs stay)."""
    may_write(ctx, browser, "commit changes")
    if not browser.session.pending:
        return {"commit": None, "text": "There are no changes to commit."}
    found = conflicts(ctx, browser)
    if found and on_conflict not in ("overwrite", "discard"):
        raise Conflicts(found)
    keep = "discard" if on_conflict == "discard" else "keep"
    saved = browser.session.pending.saved()
    made = await ctx.ask(browser, "commit", saved, comment, keep, None)
    browser.session.pending.clear()
    if made is None:
        return {"commit": None, "text": "Nothing left to commit."}
    return {"commit": str(made.id), "at": time.time(),
            "text": f"Changes committed: {made.id}"}  # fmt: skip


async def passwd(ctx: Context, browser: Browser, old: str, new: str, again: str) -> str:
    """Change one's own passphrase (any role, guests too: as ``passwd`` in the shell)."""
    from clusterd.schema.access import MIN_PASSPHRASE_LENGTH
    from clusterd.store.session import Session

    user = browser.user
    role_of(ctx, browser)
    if not await ctx.ask(browser, "check_passphrase", user, old):
        raise Refused("the old passphrase is wrong; nothing changed")
    if new != again:
        raise ClusterdError("the two passphrases differ; nothing changed")
    if len(new) < MIN_PASSPHRASE_LENGTH:
        raise ClusterdError(f"a passphrase needs {MIN_PASSPHRASE_LENGTH} characters or more")
    hashed = await ctx.ask(browser, "hash_passphrase", new)
    found = ctx.effective("userconfig")
    users = found.value or {}
    if user not in users:
        raise ClusterdError(f"no user {user!r} any more; nothing changed")
    mode = found.mode or Mode.machine(ctx.hostname)
    session = Session(ctx.store, user)
    session.set_row("userconfig", mode, user, {**users[user], "passphrase_hash": hashed})
    await ctx.ask(browser, "commit", session.pending.saved(), f"passwd {user}", "keep", user)
    return f"Passphrase of {user} changed."


# -- the running cluster (asked of the node) -----------------------------------------------


async def status(ctx: Context, browser: Browser) -> dict[str, Any]:
    may_read(ctx, browser)
    found = await ctx.ask(browser, "status")
    return {k: found.get(k) for k in ("hostname", "serial", "cluster", "software",
                                      "disconnected", "links", "peers", "vv", "digest",
                                      "targets", "catch_up", "alerts", "uptime_s")}  # fmt: skip


async def cluster(ctx: Context, browser: Browser) -> dict[str, Any]:
    """LIST and CONNSTATUS."""
    may_read(ctx, browser)
    state = ctx.store.state
    connstatus = await ctx.ask(browser, "admin.connstatus")
    return {"cluster": layers.cluster_name(state), "groups": layers.groups(state),
            "machines": layers.machines(state), "prepared": layers.prepared(state),
            "connstatus": connstatus}  # fmt: skip


GROUP_OPS = ("addgroup", "renamegroup", "deletegroup", "setgroup")


async def group_op(ctx: Context, browser: Browser, op: str, args: dict[str, str]) -> Any:
    may_write(ctx, browser, "change the cluster")
    if op not in GROUP_OPS:
        raise ClusterdError(f"no operation {op!r} ({', '.join(GROUP_OPS)})")
    return await ctx.ask(browser, "admin.group_op", op, args, browser.user)


def prepjoin(ctx: Context, browser: Browser, op: str, args: dict[str, str]) -> None:
    """PREPJOIN: register a machine that will join with its key (a pending change of
    this session, committed like any other), or take a registration back."""
    may_write(ctx, browser, "prepare a join")
    if op == "new":
        browser.session.prepjoin_new(args["hostname"], args["serial"], args["machine_key"])
    elif op == "delete":
        browser.session.prepjoin_delete(args["hostname"])
    else:
        raise ClusterdError(f"no prepjoin {op!r} (new, delete)")


async def remove(ctx: Context, browser: Browser, machine: str) -> Any:
    """REMOVEMACHINE: the machine leaves the cluster, keeping its settings."""
    may_write(ctx, browser, "change the cluster")
    return await ctx.ask(browser, "admin.remove", machine, browser.user)


async def set_disconnected(ctx: Context, browser: Browser, machine: str, flag: bool) -> Any:
    may_write(ctx, browser, "change the cluster")
    return await ctx.ask(browser, "admin.set_disconnected", machine, flag, browser.user)


# -- clustercheck ------------------------------------------------------------------------


class NodeView:
    """What ``checkrun.gather`` asks of the node, for one session: the plain answers
    fetched first (a page waits for them, not the node), the questions to members
    asked as they come."""

    def __init__(self, ctx: Context, browser: Browser) -> None:
        self._ctx, self._browser = ctx, browser
        self.config = ctx.config
        self._status: dict[str, Any] = {}
        self._members: dict[str, Any] = {}
        self._links: dict[str, Any] = {}
        self.disconnected = False
        self.timeout = 5.0

    async def fetch(self) -> NodeView:
        ask = self._ctx.ask
        self._status = await ask(self._browser, "status")
        self._members = await ask(self._browser, "members")
        for serial in self._members:
            self._links[serial] = await ask(self._browser, "link", serial)
        self.disconnected = bool(self._status.get("disconnected"))
        self.timeout = float((await ask(self._browser, "timing"))[1])
        return self

    async def status(self) -> dict[str, Any]:
        return self._status

    def members(self) -> dict[str, Any]:
        return self._members

    def link(self, serial: str) -> Any:
        return self._links.get(serial)

    async def node_checks(self, asked: dict[str, Any]) -> dict[str, Any]:
        return await self._ctx.ask(self._browser, "node_checks", asked)  # type: ignore[no-any-return]

    async def chain_check(self) -> dict[str, Any]:
        return await self._ctx.ask(self._browser, "chain_check")  # type: ignore[no-any-return]

    async def ask(self, serial: str, kind: str, args: dict[str, Any], timeout: float) -> Any:
        return await self._ctx.ask(self._browser, "ask", serial, kind, args, timeout)


async def _report(ctx: Context, browser: Browser) -> tuple[NodeView, checkrun.Report]:
    if layers.cluster_name(ctx.store.state) is None:
        raise ClusterdError("this machine is not in a cluster")
    api = await NodeView(ctx, browser).fetch()
    return api, await checkrun.gather(api, ctx.store, lambda text: None)


async def clustercheck(ctx: Context, browser: Browser) -> dict[str, Any]:
    """clustercheck's report, as ``clustercheck --json`` prints it."""
    may_read(ctx, browser)
    _, report = await _report(ctx, browser)
    return {**checkrun.to_json(report, ctx.store), "clean": report.clean}


async def force(ctx: Context, browser: Browser, args: dict[str, Any]) -> dict[str, Any]:
    """Force one version on the whole cluster (an ordinary commit of it, made by the
    node): ``{"feature", "mode", "host"}`` for members that differ, ``{"unit", "lost",
    "keep": "in_use" | "overwritten"}`` for a change overwritten unseen."""
    from clusterd.store.session import Session

    may_write(ctx, browser, "force a version")
    session = Session(ctx.store, browser.user)
    if "unit" in args:
        loss = next((x for x in ctx.store.inconsistencies() if str(x.unit) == args["unit"]
                     and str(x.loser.commit) == args.get("lost")), None)  # fmt: skip
        if loss is None:
            raise ClusterdError(f"no recorded loss of {args['unit']!r} by {args.get('lost')!r}")
        value = checkrun.loss_value(ctx.store, loss, overwritten=args.get("keep") == "overwritten")
        session.view.write(loss.unit, value)
        what = f"{args.get('keep', 'in_use')} version of {loss.unit}"
    else:
        api, report = await _report(ctx, browser)
        x = next((x for x in report.found if x.feature == args.get("feature")
                  and x.mode.key == args.get("mode")), None)  # fmt: skip
        host = str(args.get("host"))
        if x is None or host not in x.choices:
            raise ClusterdError("no such inconsistency now (run clustercheck again)")
        value = await checkrun.definition_of(api, ctx.store, report, x, host)
        checkrun.version_writer(ctx.store.catalogue[x.feature], x.mode, value)(session)
        what = f"{host} version of {x.feature} at {x.mode}"
    made = await ctx.ask(browser, "commit", session.pending.saved(), f"clustercheck: {what}",
                         "keep", None)  # fmt: skip
    return {"commit": None if made is None else str(made.id), "text": f"Forced: {what}"}
