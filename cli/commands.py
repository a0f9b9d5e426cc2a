"""The shell's own commands (feature editors are ``cli.editor``, clusterconfig is
``cli.clusterconfig``, commitdetail ``cli.commitdetail``, status and version
``cli.statusview``): help, clustermode, commit, clear, passwd, quit.  ``HANDLERS`` maps
each command name to its coroutine."""

from __future__ import annotations

import time

from clusterd.cli import confirmed
from clusterd.cli.clustercheck import clustercheck
from clusterd.cli.clusterconfig import clusterconfig
from clusterd.cli.commitdetail import commitdetail
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
from clusterd.cli.services import TARGET_USAGE, WATCH_USAGE, target, watch
from clusterd.cli.shell import Handler, Quit, Shell, Usage
from clusterd.cli.statusview import status, version
from clusterd.cli.upgrade import upgrade
from clusterd.core import confirm as confirms
from clusterd.core import layers, membership
from clusterd.core.errors import ClusterdError, InvalidSetting
from clusterd.core.modes import Mode
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
