"""The shell's own commands (feature editors are ``cli.editor``, clusterconfig is
``cli.clusterconfig``): help, clustermode, commit, clear, commitdetail, status,
version, quit.  ``HANDLERS`` maps each command name to its coroutine."""

from __future__ import annotations

import json
import time
from typing import Any

from clusterd.cli import confirmed
from clusterd.cli.clustercheck import clustercheck
from clusterd.cli.clusterconfig import clusterconfig
from clusterd.cli.console import confirm
from clusterd.cli.inspect import explain, preview
from clusterd.cli.loadconfig import USAGE as LOADCONFIG_USAGE
from clusterd.cli.loadconfig import loadconfig
from clusterd.cli.machine import last, nslookup, ping, tail, who
from clusterd.cli.passphrase import new_passphrase
from clusterd.cli.resetconfig import USAGE as RESETCONFIG_USAGE
from clusterd.cli.resetconfig import resetconfig
from clusterd.cli.rollback import USAGE as ROLLBACK_USAGE
from clusterd.cli.rollback import rollback
from clusterd.cli.saveload import saveconfig
from clusterd.cli.services import TARGET_USAGE, WATCH_USAGE, target, target_line, watch
from clusterd.cli.shell import Handler, Quit, Shell, Usage
from clusterd.cli.syncview import detail_lines
from clusterd.cli.upgrade import upgrade
from clusterd.core import confirm as confirms
from clusterd.core import layers, membership
from clusterd.core.errors import ClusterdError, InvalidSetting
from clusterd.core.modes import Mode
from clusterd.core.versions import JSON, Commit, CommitId, Loss, Unit
from clusterd.schema.restrictions import COMMANDS, Restriction
from clusterd.schema.shapes import help_lines

_WHERE = {
    Restriction.UNRESTRICTED: "",
    Restriction.CLUSTER_ONLY: " (cluster mode only)",
    Restriction.MACHINE_ONLY: " (machine mode only)",
    Restriction.LOGIN_HOST_ONLY: " (login host only)",
}


def available() -> list[str]:
    """Commands this shell runs: its own, and one editor per catalogue feature."""
    from clusterd.schema.catalogue import CATALOGUE

    features = {f.command for f in CATALOGUE if not f.internal}
    return sorted(name for name in COMMANDS if name in HANDLERS or name in features)


FEATURE_OPERATIONS = {  # what ``help`` says of the operations every feature has
    "clustershow": "FEATURE clustershow   which modes define FEATURE (Yes / No per mode)",
    "clusterset": "FEATURE clusterset copy|move cluster|group NAME|machine NAME|allgroups\n"
    "  or: FEATURE clusterset delete cluster|group NAME|machine NAME|allgroups\n"
    "  copies, moves or deletes FEATURE's settings between modes (delete: that mode\n"
    "  inherits again).  Example: settz clusterset copy group Paris",
}
RECORD_HELP = (
    "FEATURE [print | clustershow | define defaults|inherited | undefine |\n"
    "  set FIELD=VALUE ... | clusterset copy|move|delete cluster|group NAME|machine NAME|\n"
    "  allgroups]   (a single record: set its fields)"
)
TABLE_HELP = (
    "FEATURE [print | clustershow | define empty|defaults|inherited | undefine |\n"
    "  new ROW FIELD=VALUE ... | edit ROW FIELD=VALUE ... | delete ROW |\n"
    "  clusterset copy|move|delete cluster|group NAME|machine NAME|allgroups]\n"
    "  (a table of rows by name; delete of a mode: its settings go, it inherits again)"
)
VALUES_HELP = (
    "FIELD=VALUE sets a field; FIELD+=VALUE and FIELD-=VALUE add to or remove from a list.\n"
    "A list is comma-separated (servers=10.0.0.53,10.0.0.54), yes|no a switch, null unsets\n"
    'an optional field; JSON is read where it parses (\'servers=[{"address":"10.0.0.53"}]\').'
)


async def help_(shell: Shell, args: list[str]) -> int:
    if args and args[0].lower() in FEATURE_OPERATIONS:
        shell.write(f"{args[0].lower()}: an operation of every feature (help lists them)")
        shell.write(FEATURE_OPERATIONS[args[0].lower()])
        return 0
    if args:
        info = COMMANDS.get(args[0].lower())
        if info is None or info.name not in available():
            raise Usage(f"help [COMMAND]; no command {args[0]!r}")
        shell.write(f"{info.name}: {info.summary}{_WHERE[info.restriction]}")
        if info.name not in shell.store.catalogue:
            shell.write(HELP.get(info.name, info.name))
            return 0
        feature = shell.store.catalogue[info.name]
        doc = HELP.get(info.name) or (TABLE_HELP if feature.is_table else RECORD_HELP)
        shell.write(doc.replace("FEATURE", info.name))
        shell.write("Fields:")
        for line in help_lines(feature):
            shell.write(f"  {line}")
        shell.write(VALUES_HELP)
        return 0
    for name in available():
        info = COMMANDS[name]
        shell.write(f"{name:<18} {info.summary}{_WHERE[info.restriction]}")
    return 0


async def clustermode(shell: Shell, args: list[str]) -> int:
    if not args:
        shell.write(f"Current mode: {shell.mode}")
        return 0
    if shell.cluster is None:
        raise ClusterdError("this machine is not in a cluster: it has only its own mode")
    try:
        mode = Mode.parse(" ".join(args))
    except InvalidSetting:
        raise Usage("clustermode [cluster | group NAME | machine FQDN]") from None
    state = shell.store.state
    if mode.name and mode.key.startswith("group:") and mode.name not in layers.groups(state):
        raise ClusterdError(f"no group {mode.name!r} (groups: {', '.join(layers.groups(state))})")
    if mode.key.startswith("machine:") and mode.name not in layers.machines(state):
        raise ClusterdError(f"no machine {mode.name!r} in the cluster")
    if mode == Mode.cluster() and shell.console.interactive:
        question = "Changes made in cluster mode affect every machine. Continue?"
        if not await confirm(shell.console, question, True):
            return 1
    shell.mode = mode
    return 0


async def commit(shell: Shell, args: list[str]) -> int:
    minutes, probe, args = confirmed.parse(args)
    shell.require_write("commit changes")
    waiting = confirms.deadline(shell.store.state) is not None
    if not shell.session.pending:
        return await confirmed.without_changes(shell, minutes, probe, " ".join(args))
    comment = " ".join(args) if args else ""
    if not args and shell.console.interactive:
        comment = await shell.console.ask("Please enter some comments describing your changes:", "")
    conflicts = shell.session.conflicts()
    keep = "keep"
    if conflicts:
        shell.write("These pending changes were committed by someone else since you read them:")
        for c in conflicts:
            now = "deleted" if c.current is None or c.current.value is None else "changed"
            by = "" if c.current is None else f" (commit {c.current.commit})"
            where = Mode.from_key(c.unit.mode)
            row = "" if c.unit.is_marker else f" row {c.unit.key!r}"
            shell.write(f"  {c.unit.feature} at {where}{row}: {now}{by}")
        if not await confirm(shell.console, "Overwrite their changes with yours?", False):
            keep = "discard"
    renames = membership.renamed_in(shell.session.pending)
    made = await shell.commit(
        shell.session, comment, on_conflict=keep, confirm=minutes, confirming=True, probe=probe
    )
    if made is None:
        shell.write("Nothing left to commit.")
        return 0
    shell.write(f"Changes committed: {time.strftime('%a %b %d %H:%M:%S %Y %Z', time.localtime())}")
    if minutes is not None or waiting:
        confirmed.said(shell, minutes)
    for old, new in renames:
        shell.write(f"Machine {old} is now {new}: its settings, group and links went with it.")
    return 0


async def clearchanges(shell: Shell, args: list[str]) -> int:
    if not shell.session.pending:
        shell.write("There are no pending changes.")
        return 0
    if not await confirm(shell.console, "Discard all pending changes?", True):
        return 1
    shell.write(f"{shell.session.clear()} pending change(s) discarded.")
    return 0


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
                **_commit_ref(shell, c, names),
                "comment": c.comment,
                "seal": seals[c.id].to_json(c.seal.hash if c.seal else None),
                "changed": [f"{f} at {Mode.from_key(m)}" for f, m in changed],
                "inconsistent": c.id in lost,
                "lost": [
                    {**_unit_ref(x.unit), "to": _commit_ref(shell, x.by, names)}
                    for x in lost.get(c.id, [])
                ],
                "superseded": [
                    {**_unit_ref(x.unit), "of": _commit_ref(shell, x.loser.commit, names)}
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


def _commit_ref(shell: Shell, commit: Commit | CommitId, names: dict[str, str]) -> JSON:
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


def _about_login_host(shell: Shell, what: str) -> str | None:
    """When the shell's mode is not the login host's machine mode (another machine's,
    or a group's or the cluster's, as a guest runs these), the line that says whose
    figures ``what`` shows: always the login host's."""
    if shell.cluster is None or shell.mode == Mode.machine(shell.hostname):
        return None
    level = shell.mode.level.value
    where = "cluster mode" if not shell.mode.name else f"{level} mode of {shell.mode.name}"
    return f"({what} of the login host {shell.hostname}; you are in {where})"


async def status(shell: Shell, args: list[str]) -> int:
    s = shell.api.status()
    about = _about_login_host(shell, "status")
    if "--json" in args or "-j" in args:  # "hostname" names whose figures these are
        s = {**s, "shell_mode": str(shell.mode)}
        shell.write(json.dumps(s, indent=1, default=str))
        return 0
    if about is not None:
        shell.write(about)
    shell.write(f"Machine {s['hostname']} (Serial #: {s['serial']}), clusterd {s['software']}")
    shell.write(f"Cluster: {s['cluster'] or '(standalone)'}, up {s['uptime_s']:.0f} s")
    lag = s["loop"]["last_minute"]
    if lag:
        worst = s["loop"]["worst_ms"]
        shell.write(f"Links' loop: timers late by {lag['p99_ms']} ms at p99, {lag['max_ms']} "
                    f"ms at most in the last minute ({worst} ms since start)")  # fmt: skip
    if s["catch_up"]["missing"]:
        source = ", ".join(s["catch_up"]["from"])
        shell.write(f"Catching up: {s['catch_up']['missing']:,} commits to receive from {source}")
    for p in s["peers"]:  # the link, then the sync state (its reason, if any, in it)
        rtt = f", rtt {p['rtt_ms']} ms" if p["rtt_ms"] is not None else ""
        shell.write(f"  {p['hostname']:<30} {p['state']:<12} {p['sync']['text']}{rtt}")
        for line in detail_lines(p["sync"], "      "):
            shell.write(line)
    for c in s.get("corruption", []):
        shell.write(f"Corruption: {c['unit']} ({c['verdict']}; differs from {c['with']}): "
                    f"{c['why']}")  # fmt: skip
    if any(c["verdict"] == "differs" for c in s.get("corruption", [])):
        shell.write("  This member serves no sync while so: rejoin it (removemachine, join).")
    for c in s.get("confirms", []):
        at = time.strftime("%H:%M:%S", time.localtime(c["deadline"]))
        shell.write(f"Confirm by {at}: commit {c['commit']} by {c['user']} ({c['minutes']} min), "
                    "else rolled back")  # fmt: skip
    for name, t in s["targets"].items():
        shell.write(target_line(name, t))
    for f in s.get("witness", []):  # (docs/history.md, section 2)
        shell.write(f"Witnessed {f['kind']}: {f['text']}")
    _recent_alerts(shell, s["alerts"], s["alert_mail"])
    return 0


RECENT_ALERTS = 10


def _recent_alerts(shell: Shell, alerts: list[dict[str, Any]], mail: dict[str, Any]) -> None:
    if not alerts:
        shell.write("No alerts since clusterd started.")
        return
    shown = alerts[-RECENT_ALERTS:]
    more = f" (the last {len(shown)} of {len(alerts)}; status --json has them all)"
    shell.write(f"Recent alerts{more if len(shown) < len(alerts) else ''}:")
    for a in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(a["at"]))
        shell.write(f"  {when} {a['kind']}: {a['peer']}: {a['text']}")
    delivery = f"Alert mail via {mail['relay']}: {mail['sent']} sent"
    if mail["queued"]:
        delivery += f", {mail['queued']} waiting"
    if mail["last_error"]:
        delivery += f"; last delivery failed: {mail['last_error']}"
    shell.write(delivery)


async def version(shell: Shell, args: list[str]) -> int:
    about = _about_login_host(shell, "version")
    if about is not None:
        shell.write(about)
    shell.write(f"clusterd {shell.api.config.software} on {shell.hostname}")
    return 0


async def passwd(shell: Shell, args: list[str]) -> int:
    """Change one's own passphrase (an admin may name another user); takes effect at once."""
    user = args[0] if args else shell.user
    if user != shell.user and shell.role != "admin":
        raise ClusterdError("only an admin may change another user's passphrase")
    users = shell.api.users()
    if user not in users:
        raise ClusterdError(f"no user {user!r}")
    if user == shell.user:
        old = await shell.console.ask("Old passphrase:", secret=True)
        if not await shell.api.check_passphrase(user, old):
            raise ClusterdError("the old passphrase is wrong; nothing changed")
    hashed = await new_passphrase(shell)
    users = shell.api.users()  # again: the questions took time
    if user not in users:
        raise ClusterdError(f"no user {user!r} any more; nothing changed")
    mode = Mode.cluster() if shell.cluster is not None else Mode.machine(shell.hostname)
    session = shell.api.session(shell.user)  # not the shell's pending changes
    session.set_row("userconfig", _userconfig_mode(shell, mode), user,
                    {**users[user], "passphrase_hash": hashed})  # fmt: skip
    await shell.commit(session, f"passwd {user}", passwd_of=user)
    shell.write(f"Passphrase of {user} changed.")
    return 0


def _userconfig_mode(shell: Shell, mode: Mode) -> Mode:
    """Where userconfig is defined (cluster level in a cluster, the machine standalone)."""
    return shell.api.effective("userconfig").mode or mode


async def quit_(shell: Shell, args: list[str]) -> int:
    if shell.session.pending and shell.console.interactive:
        question = f"You have {len(shell.session.pending)} uncommitted change(s). Leave anyway?"
        if not await confirm(shell.console, question, False):
            return 1
    raise Quit


HELP = {
    "clustermode": "clustermode [cluster | group NAME | machine FQDN]",
    "commit": "commit [COMMENT]   commits the pending changes of every mode (and confirms)\n"
    "  " + confirmed.USAGE + "\n"
    "  the same, rolled back by the cluster itself unless confirmed in MINUTES (confirm,\n"
    "  or any commit); again: every pending deadline moves to the new one",
    "confirm": "confirm   confirms the pending confirmed commits: no rollback",
    "commitdetail": "commitdetail [N] [--json]   the N most recent commits (10)",
    "clusterconfig": "clusterconfig [create NAME | list | listdetail | connstatus |\n"
    "  addgroup G | setgroup MACHINE G | renamegroup OLD NEW | deletegroup G [TO] |\n"
    "  removemachine MACHINE | setname NAME | disconnect [MACHINE] | reconnect [MACHINE] |\n"
    "  ccs on|off |\n"
    "  prepjoin print | prepjoin new HOST SERIAL KEY | prepjoin delete HOST | prepjoin list |\n"
    "  join [--port P] [--fingerprint FP] ADDRESS ADMIN [PASSPHRASE [GROUP]] |\n"
    "  join --key|--ccs [--port P] [--fingerprint FP] ADDRESS [GROUP] |\n"
    "  join [--ccs] [--key] ADDRESS PORT FINGERPRINT [GROUP] [PASSPHRASE]]\n"
    "  --json for list, listdetail, connstatus.  join: ADMIN is the cluster admin user to\n"
    "  log in as; --port defaults to 22 (2222 with --ccs); --key uses this machine's\n"
    "  PREPJOIN key, --ccs joins over the member's CCS port and turns CCS on here; GROUP\n"
    "  defaults to Main_Group.  A one-command call needs --fingerprint SHA256:...; an\n"
    "  interactive shell shows the key to confirm instead, asks a passphrase not given\n"
    "  (hidden), and asks before joining, removemachine, disconnect and reconnect.",
    "status": "status [--json]",
    "version": "version",
    "help": "help [COMMAND]",
    "quit": "quit   (asks first when changes are pending)",
    "exit": "exit   (asks first when changes are pending)",
    "clear": "clear   discards the pending changes of every mode (asks first)",
    "clearchanges": "clearchanges   discards the pending changes of every mode (asks first)",
    "passwd": "passwd [USER]   your passphrase, or (admin) another user's; effective at once",
    "who": "who   the shells open on this machine",
    "upgrade": "upgrade   the upgrade routine: each member's version as known here, and the\n"
    "  next step (docs/upgrade.md); it installs nothing",
    "last": "last [N]   recent logins to this machine, refused ones included",
    "tail": "tail [N]   the last N lines of this machine's daemon log (20)",
    "ping": "ping MEMBER   three query round trips over the mesh",
    "nslookup": "nslookup NAME | ADDRESS   as the daemon finds members: its hosts file, then\n"
    "  its own DNS servers (dns_servers in clusterd.toml, else the host's resolver\n"
    "  configuration). dnsconfig is what the services get (resolv.conf), not this.",
    "saveconfig": "saveconfig [NAME]   writes DATA_DIR/configs/NAME (XML; admins only)\n"
    "  saveconfig --stdout   the same on standard output (ssh HOST 'saveconfig --stdout')",
    "loadconfig": LOADCONFIG_USAGE + "\n"
    "  maps the file's groups and machines (FILE=HERE), reviews, then makes the changes\n"
    "  pending (commit applies them); - reads the file from standard input\n"
    "  (ssh HOST 'loadconfig - --yes; commit why' < FILE)",
    "preview": "preview [--json]   per machine, what the pending changes would change",
    "explain": "explain FEATURE [MACHINE] [--json]   where the effective value comes from",
    "clustercheck": "clustercheck [--json]   compares every member; offers to force a version",
    "watch": WATCH_USAGE + "\n"
    "  this machine's effective changes as JSON lines, until the connection closes\n"
    "  (ssh HOST 'watch --json'); --since resumes after a version without gaps",
    "rollback": ROLLBACK_USAGE + "\n"
    "  one new commit that puts back what commit ORIGIN:SEQ changed (an id as commitdetail\n"
    "  shows it; ORIGIN: serial or host name), or the Nth commit back that changed a\n"
    "  setting at this mode.  Shows what changed since (left alone unless --all), a\n"
    "  preview, and asks; --yes for a one-command call.  Membership is never rolled back.",
    "resetconfig": RESETCONFIG_USAGE + "\n"
    "  a standalone machine back to the factory configuration, in one commit; its\n"
    "  network settings, users and SSH settings are kept (a cluster member is refused)",
    "target": TARGET_USAGE + "\n"
    "  service targets: what each applied, failures, drift; rollback to an older\n"
    "  generation; force past the guard against emptied maps (docs/services.md)",
}

HANDLERS: dict[str, Handler] = {
    "help": help_,
    "clustermode": clustermode,
    "commit": commit,
    "confirm": confirmed.confirm,
    "clearchanges": clearchanges,
    "clear": clearchanges,
    "commitdetail": commitdetail,
    "status": status,
    "version": version,
    "passwd": passwd,
    "quit": quit_,
    "exit": quit_,
    "clusterconfig": clusterconfig,
    "clustercheck": clustercheck,
    "preview": preview,
    "explain": explain,
    "who": who,
    "last": last,
    "tail": tail,
    "ping": ping,
    "nslookup": nslookup,
    "saveconfig": saveconfig,
    "loadconfig": loadconfig,
    "upgrade": upgrade,
    "watch": watch,
    "target": target,
    "resetconfig": resetconfig,
    "rollback": rollback,
}
