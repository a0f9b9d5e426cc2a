"""``clusterconfig``: the standalone menu (create, join) and the cluster menu.

Every operation has a batch form (``clusterconfig addgroup Paris``) and a menu path;
both end in the same ``clusterd.node.admin`` call.  Membership operations take effect at
once; PREPJOIN NEW / DELETE are pending changes of this shell's session.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from clusterd.cli.console import choose, confirm, pick
from clusterd.cli.progress import applied_now, follow_catch_up
from clusterd.cli.shell import Shell, Usage
from clusterd.cli.syncview import detail_lines
from clusterd.core import layers
from clusterd.core.errors import ClusterdError
from clusterd.core.modes import Mode
from clusterd.trust.join import KeyNotRegistered
from clusterd.trust.joincli import POLL, REGISTER, prepjoin_facts
from clusterd.trust.lifecycle import MAIN_GROUP, discard_line

CLUSTER_OPS = [
    ("ADDGROUP", "Add a cluster group."),
    ("SETGROUP", "Set the group that machines are a member of."),
    ("RENAMEGROUP", "Rename a cluster group."),
    ("DELETEGROUP", "Remove a cluster group."),
    ("REMOVEMACHINE", "Remove a machine from the cluster."),
    ("SETNAME", "Set the cluster name."),
    ("LIST", "List the machines in the cluster."),
    ("LISTDETAIL", "List the machines in the cluster with detail."),
    ("DISCONNECT", "Temporarily detach this machine from the cluster."),
    ("RECONNECT", "Restore connections with this machine after a disconnect."),
    ("PREPJOIN", "Prepare the addition of a new machine over CCS or pre-shared keys."),
    ("CONNSTATUS", "Show the status of connections between machines in the cluster."),
]

MAX_WAIT = 3600.0  # --wait: an hour at most
SSH_PORT, CCS_PORT = 22, 2222  # the ports a join dials unless told otherwise
CANCELLED = "Join cancelled. Nothing was changed."
JOIN_USAGE = (
    "clusterconfig join [--port P] [--fingerprint FP] ADDRESS ADMIN [PASSPHRASE [GROUP]]\n"
    "  | join --key|--ccs [--port P] [--fingerprint FP] [--wait SECONDS] ADDRESS [GROUP]\n"
    "  | join [--ccs] [--key] ADDRESS PORT FINGERPRINT [GROUP] [PASSPHRASE]"
)


async def clusterconfig(shell: Shell, args: list[str]) -> int:
    if shell.cluster is None:
        return await _standalone(shell, args)
    if args:
        return await _cluster_op(shell, args[0].lower(), args[1:])
    question = "This machine is disconnected. Reconnect it now?"
    if (
        shell.api.disconnected
        and shell.console.interactive
        and await confirm(shell.console, question, True)
    ):
        return await _cluster_op(shell, "reconnect", [shell.hostname], confirmed=True)
    return await _cluster_menu(shell)


async def _cluster_menu(shell: Shell) -> int:
    """The cluster menu, shown again after each operation (as the reference does) until
    the answer is empty; an operation that fails says why and the menu comes back.
    Returns the status of the last operation run."""
    status = 0
    while shell.cluster is not None:  # (REMOVEMACHINE of this machine ends the cluster)
        shell.write(f"Cluster {shell.cluster}")
        shell.write("")
        shell.write("Choose the operation you want to perform:")
        for name, text in CLUSTER_OPS:
            shell.write(f"- {name} - {text}")
        names = [name for name, _ in CLUSTER_OPS]
        answer = (await shell.console.ask("", "", choices=names)).strip().lower()
        if not answer:
            return status
        try:
            status = await _cluster_op(shell, answer, [])
        except (ClusterdError, ValueError, KeyError) as exc:
            status = shell.failed(exc, f"clusterconfig {answer}")
        if not shell.console.interactive:
            return status
    return status


async def _standalone(shell: Shell, args: list[str]) -> int:
    if args != ["prepjoin", "print"]:
        shell.require_write("create or join a cluster")
    if args:
        op = args[0].lower()
        if op == "create" and len(args) == 2:
            made = await shell.api.admin.create(args[1], _as(shell, "create"))
            _done(shell, made, f"Cluster {made['cluster']} created.")
            _in_cluster(shell)
            return 0
        if op == "join":
            return await _join_batch(shell, args[1:])
        if op == "prepjoin" and args[1:] == ["print"]:
            return _prepjoin_print(shell)
        if op == "ccs":
            return await _ccs(shell, args[1:])
        raise Usage(
            "clusterconfig create NAME | join ... | prepjoin print | ccs on|off (standalone)"
        )
    shell.write("Do you want to join or create a cluster?")
    pick = await choose(
        shell.console,
        "",
        [
            "No, configure as standalone.",
            "Create a new cluster.",
            "Join an existing cluster over SSH.",
            "Join an existing cluster over CCS.",
        ],
    )
    if pick == 1:
        return 0
    if pick == 2:
        name = await shell.console.ask("Enter the name of the new cluster.")
        done = await shell.api.admin.create(name.strip(), _as(shell, "create"))
        _done(shell, done, f"Cluster {done['cluster']} created.")
        _in_cluster(shell)
        return 0
    return await _join_menu(shell, ccs=pick == 4)


def _passphrase_question(user: str) -> str:
    return f"Enter the passphrase of user {user} in the cluster."


async def _join_menu(shell: Shell, *, ccs: bool) -> int:
    ask = shell.console.ask
    enable = await confirm(shell.console, "Do you want to enable the Cluster Communication "
                           "Service on this machine?", ccs)  # fmt: skip
    shell.write("WARNING: every setting of this machine except its network settings will be")
    shell.write("lost and replaced by the cluster's and its group's settings.")
    address = (await ask("Enter the IP address of a machine in the cluster.")).strip()
    port = _port(
        await ask("Enter the remote port to connect to.", str(CCS_PORT if ccs else SSH_PORT))
    )
    passphrase = None
    if not ccs:
        ways = ["the cluster admin passphrase", "pre-shared keys (PREPJOIN)"]
        how = await choose(shell.console, "Authenticate with:", ways)
        if how == 1:
            passphrase = await ask(_passphrase_question("admin"), secret=True)
    if passphrase is None:
        _prepjoin_facts(shell)
    shell.write(f"Connecting to {address} port {port}...")
    fingerprint = await _confirm_host_key(shell, address, port)
    if fingerprint is None:
        return 1
    group = (await ask("Enter the group to join.", MAIN_GROUP)).strip()
    request: dict[str, Any] = {"address": address, "port": port, "group": group, "ccs": ccs,
                               "enable_ccs": enable, "passphrase": passphrase,
                               "fingerprint_expected": fingerprint}  # fmt: skip
    return await _check_and_join(shell, request, ask_first=True)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT:
        raise Usage(f"--wait takes seconds, 0 to {MAX_WAIT:.0f}, not {text!r}")
    return seconds


def _port(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise Usage(f"a port is a number from 1 to 65535, not {text!r}")
    return int(text)


async def _confirm_host_key(shell: Shell, address: str, port: int) -> str | None:
    """Show the member's host key fingerprint; the person says whether it is the right
    one.  Returns it, or None (and says so) when it is not confirmed."""
    probed = await shell.api.admin.probe(address, port)
    shell.write(f"The host key fingerprint of {address} port {port} is {probed['fingerprint']}")
    if not await confirm(shell.console, "Is this a valid key for this host?", True):
        shell.write(CANCELLED)
        return None
    return str(probed["fingerprint"])


async def _check_and_join(
    shell: Shell, request: dict[str, Any], *, ask_first: bool, wait: float | None = None
) -> int:
    """The dry run and its report, the person's go-ahead (``ask_first``), the join."""
    admin = shell.api.admin
    shell.write("Checking the join with the member (nothing changes yet)...")
    report = await _until_registered(shell, request, wait)
    if report is None:
        shell.write(CANCELLED)
        return 1
    _report(shell, report)
    if ask_first and not await confirm(shell.console, "Do you want to join?", False):
        shell.write(CANCELLED)
        return 1
    shell.write("Joining: saving this machine's settings, receiving the cluster's...")
    done = await admin.join(**request)
    shell.write(f"Joined cluster {done['cluster']}. Standalone settings saved in {done['saved']}")
    status = _done(shell, done)
    await follow_catch_up(shell)
    _in_cluster(shell)
    return status


async def _until_registered(
    shell: Shell, request: dict[str, Any], wait: float | None
) -> dict[str, Any] | None:
    """The dry run, once the member knows this machine's key: the person presses Enter
    when it is registered (``wait``: try every ``POLL`` seconds, counting down, for that
    long).  None: cancelled, or not registered in time.  Other refusals raise."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            return dict(await shell.api.admin.join(**request, dry_run=True))
        except KeyNotRegistered:
            if request.get("passphrase") is not None:
                raise
        if deadline is None:
            if not shell.console.interactive:
                raise ClusterdError(
                    "the member does not know this machine's key: register it there "
                    "(clusterconfig prepjoin new, then commit), or join with --wait SECONDS"
                )
            answer = await shell.console.ask(
                "The member does not know this machine's key yet. Press Enter once it is "
                "registered and committed (q to cancel)", "")  # fmt: skip
            if answer.strip().lower() in ("q", "quit", "cancel"):
                return None
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            shell.write(f"Still not registered after {wait:.0f} s.")
            return None
        shell.write(f"Not registered yet; trying again in {min(POLL, left):.0f} s "
                    f"({left:.0f} s left).")  # fmt: skip
        await asyncio.sleep(min(POLL, left))


def _prepjoin_facts(shell: Shell) -> None:
    shell.write(REGISTER)
    for line in prepjoin_facts(shell.api.admin.prepjoin_print()):
        shell.write(f"  {line}")


def _report(shell: Shell, report: dict[str, Any]) -> None:
    shell.write(f"Joining cluster {report['cluster']} through {report['member']}, "
                f"group {report['group']}.")  # fmt: skip
    if report["discard"]:
        shell.write("These settings of this machine will be discarded:")
        for item in report["discard"]:
            shell.write(f"  {discard_line(item)}")
        shell.write("Network settings are kept.")
    else:
        shell.write("This machine has no settings of its own to discard.")


def _join_words(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """Options (--ccs, --key, --port P, --fingerprint FP, or --opt=VALUE) and the rest."""
    options: dict[str, str | bool] = {}
    words: list[str] = []
    rest = iter(args)
    for word in rest:
        name, eq, value = word.partition("=")
        if name in ("--ccs", "--key") and not eq:
            options[name[2:]] = True
        elif name in ("--port", "--fingerprint", "--wait"):
            if not eq:
                value = next(rest, "")
            if not value or name[2:] in options:
                raise Usage(JOIN_USAGE)
            options[name[2:]] = value
        elif word.startswith("--"):
            raise Usage(f"unknown option {word}\n{JOIN_USAGE}")
        else:
            words.append(word)
    return options, words


async def _join_batch(shell: Shell, args: list[str]) -> int:
    """The reference's form ``join ADDRESS ADMIN PASSPHRASE GROUP`` with the port and the
    host key fingerprint as options, its key form, and the older positional form
    (``join ADDRESS PORT FINGERPRINT ...``, told apart by a port number in second place:
    a user name never starts with a digit)."""
    options, words = _join_words(args)
    ccs = bool(options.get("ccs"))
    key = bool(options.get("key")) or ccs
    user, passphrase, group = "admin", None, MAIN_GROUP
    fingerprint: str | None
    if len(words) >= 3 and words[1].isdigit():  # the older positional form
        if len(words) > 5 or "port" in options or "fingerprint" in options:
            raise Usage(JOIN_USAGE)
        if key and len(words) > 4:
            raise Usage(f"a join with a PREPJOIN key takes no passphrase\n{JOIN_USAGE}")
        address, port_text, fingerprint, *rest = words
        group = rest[0] if rest else group
        passphrase = rest[1] if len(rest) > 1 else None
    else:
        if len(words) not in ((1, 2) if key else (2, 3, 4)):
            raise Usage(JOIN_USAGE)
        address, *rest = words
        if key:
            group = rest[0] if rest else group
        else:
            user, *rest = rest
            passphrase = rest[0] if rest else None
            group = rest[1] if len(rest) > 1 else group
        port_text = str(options.get("port", CCS_PORT if ccs else SSH_PORT))
        found = options.get("fingerprint")
        fingerprint = None if found is None else str(found)
    port = _port(port_text)
    wait = _seconds(str(options["wait"])) if "wait" in options else None
    if wait is not None and not key:
        raise Usage(f"--wait is for a join with a PREPJOIN key\n{JOIN_USAGE}")
    if fingerprint is None and not shell.console.interactive:
        raise Usage(
            "a one-command join does not trust a host key on first use: give the member's "
            "host key fingerprint with --fingerprint SHA256:... (ssh-keyscan -p PORT ADDRESS "
            "| ssh-keygen -lf - shows it)"
        )
    if passphrase is None and not key:
        passphrase = await shell.console.ask(_passphrase_question(user), secret=True)
    if key:
        _prepjoin_facts(shell)
    shell.write(f"Connecting to {address} port {port}...")
    if fingerprint is None:
        fingerprint = await _confirm_host_key(shell, address, port)
        if fingerprint is None:
            return 1
    request: dict[str, Any] = {"address": address, "port": port, "group": group, "ccs": ccs,
                               "enable_ccs": ccs, "passphrase": passphrase, "user": user,
                               "fingerprint_expected": fingerprint}  # fmt: skip
    return await _check_and_join(shell, request, ask_first=shell.console.interactive, wait=wait)


def _prepjoin_print(shell: Shell) -> int:
    for line in prepjoin_facts(shell.api.admin.prepjoin_print()):
        shell.write(line)
    return 0


def _in_cluster(shell: Shell) -> None:
    """After a create or a join the shell is in cluster mode (``(Cluster NAME)>``), as
    the reference's is."""
    shell.mode = Mode.cluster()
    shell.write(f"Now in cluster mode: the prompt is {shell.prompt().strip()}")


def _done(shell: Shell, result: dict[str, Any], said: str | None = None) -> int:
    """A cluster operation done: what it did, when, and that it needs no commit (it is
    committed already, as the reference's are); then its warning, if any."""
    if said is not None:
        when = time.strftime("%a %b %d %H:%M:%S %Y %Z", time.localtime())
        shell.write(f"{said} {when}: in effect now on every member; no commit is needed.")
    if result.get("warning"):
        shell.write(f"Warning: {result['warning']}")
    return 0


async def _arg(
    shell: Shell, args: list[str], i: int, question: str, names: list[str] | None = None
) -> str:
    """Argument ``i``, or else the answer to ``question``: one of ``names`` (a numbered
    list, by number or name) where the answer must be an existing machine or group."""
    if len(args) > i:
        return args[i]
    if names is not None:
        return await pick(shell.console, question, names)
    return (await shell.console.ask(question)).strip()


def _machines(shell: Shell) -> list[str]:
    return sorted(layers.machines(shell.store.state))


def _groups(shell: Shell) -> list[str]:
    return list(layers.groups(shell.store.state))


async def _cluster_op(shell: Shell, op: str, args: list[str], *, confirmed: bool = False) -> int:
    """One operation, from the menu or a batch form.  REMOVEMACHINE, DISCONNECT and
    RECONNECT ask to confirm in an interactive shell however the machine was named
    (``confirmed``: the person already said yes); a one-command call does not ask."""
    admin = shell.api.admin
    ask_first = shell.console.interactive and not confirmed
    if op not in ("list", "listdetail", "connstatus", "prepjoin"):
        shell.require_write(f"change the cluster ({op})")
    as_json = "--json" in args or "-j" in args
    args = [a for a in args if a not in ("--json", "-j")]
    match op:
        case "list" | "listdetail":
            listed = admin.listing()
            if as_json:
                shell.write(json.dumps({k: v for k, v in listed.items() if k != "text"}, indent=1))
            elif op == "list":
                shell.write(listed["text"])
            else:
                _listdetail(shell, listed)
            return 0
        case "connstatus":
            found = await admin.connstatus()
            if as_json:
                shell.write(json.dumps(found, indent=1))
                return 0
            shell.write(f"Reverse DNS policy: {found['reverse_dns']}")
            for m in found["members"]:
                why = f" ({m['reason']})" if m["reason"] else ""
                shell.write(f"{m['hostname']}: {m['state']}{why}")
                if m["sync"] is not None:
                    shell.write(f"  sync: {m['sync']['text']}")
                    for line in detail_lines(m["sync"], "  "):
                        shell.write(line)
                shell.write(f"  forward: {m['forward']}")
                if m["reverse"]:
                    shell.write(f"  reverse: {m['reverse']}")
                if m.get("inbound_reverse"):
                    shell.write(f"  inbound reverse: {m['inbound_reverse']}")
                if m["accepted_without_reverse"]:
                    shell.write(f"  WARNING: {m['hostname']} was accepted although the reverse "
                                "lookup of its address failed (reverse_dns = warn); the "
                                "reference would refuse it. Add a PTR record for it.")  # fmt: skip
                if m["reverse_mismatch"]:
                    shell.write(f"  Note: the reverse lookup of its address does not name "
                                f"{m['hostname']} (renamed? an interface's name?).")  # fmt: skip
            return 0
        case "addgroup":
            group = await _arg(shell, args, 0, "Enter the name of the new group.")
            added = await admin.group_op(op, {"group": group}, _as(shell, op))
            return _done(shell, added, f"Group {group} added.")
        case "setgroup":
            machine = await _arg(shell, args, 0, "Choose the machine to move:", _machines(shell))
            group = await _arg(shell, args, 1, "Choose its new group:", _groups(shell))
            moved = await admin.group_op(op, {"machine": machine, "group": group}, _as(shell, op))
            return _done(shell, moved, f"Machine {machine} is in group {group}.")
        case "renamegroup":
            old = await _arg(shell, args, 0, "Choose the group to rename:", _groups(shell))
            new = await _arg(shell, args, 1, "Enter the new name of the group.")
            renamed = await admin.group_op(op, {"old": old, "new": new}, _as(shell, op))
            return _done(shell, renamed, f"Group {old} is now {new}.")
        case "deletegroup":
            group = await _arg(shell, args, 0, "Choose the group to remove:", _groups(shell))
            members = admin.listing()["groups"].get(group) or {}
            move_to = args[1] if len(args) > 1 else None
            if members and move_to is None:
                others = [g for g in _groups(shell) if g != group]
                question = f"Group {group} has machines. Which group should receive them?"
                default = MAIN_GROUP if MAIN_GROUP in others else ""
                move_to = await pick(shell.console, question, others, default)
            spec = {"group": group, "move_to": move_to}
            deleted = await admin.group_op(op, spec, _as(shell, op))
            moved_to = f"; its machines are in {move_to}" if members else ""
            return _done(shell, deleted, f"Group {group} deleted{moved_to}.")
        case "setname":
            name = await _arg(shell, args, 0, "Enter the new name of the cluster.")
            renamed = await admin.group_op(op, {"name": name}, _as(shell, op))
            return _done(shell, renamed, f"The cluster is now {name}.")
        case "removemachine":
            machine = await _arg(shell, args, 0, "Choose the machine to remove:", _machines(shell))
            if ask_first and not await confirm(
                shell.console, f"Remove {machine} from the cluster for good?", False
            ):
                return 1
            result = await admin.remove(machine, _as(shell, op))
            shell.write(f"{machine} removed from the cluster.")
            return _done(shell, result)
        case "disconnect" | "reconnect":
            machine = args[0] if args else shell.hostname
            if ask_first and not await confirm(
                shell.console, f"{op.capitalize()} {machine}?", True
            ):
                return 1
            _done(shell, await admin.set_disconnected(machine, op == "disconnect", _as(shell, op)))
            base = applied_now(shell)  # (links come up later: nothing has arrived yet)
            shell.write(f"{machine} {op}ed.")
            if op == "reconnect" and machine == shell.hostname:
                return 0 if await follow_catch_up(shell, base=base) else 1
            return 0
        case "prepjoin":
            return await _prepjoin(shell, args)
        case "ccs":
            return await _ccs(shell, args)
        case _:
            raise Usage(f"unknown clusterconfig operation {op!r}; see 'help clusterconfig'")


async def _ccs(shell: Shell, args: list[str]) -> int:
    """CCS on or off on this machine: its listener, clusterd.toml, and (in a cluster)
    how members reach it, at once (``clusterconfig ccs on|off``)."""
    if len(args) != 1 or args[0].lower() not in ("on", "off"):
        raise Usage("clusterconfig ccs on|off   (this machine's CCS port, from clusterd.toml)")
    enabled = args[0].lower() == "on"
    done = await shell.api.admin.set_ccs(enabled, _as(shell, "ccs"))
    port = shell.api.config.ccs_port
    shell.write(f"CCS is {'on, port ' + str(port) if enabled else 'off'} on {shell.hostname}"
                + ("; members reach it that way now." if done.get("commit") else "."))  # fmt: skip
    return 0


def _as(shell: Shell, op: str) -> str:
    """The user a membership change is made as, its role checked again now (after any
    question the operation asked)."""
    shell.require_write(f"change the cluster ({op})")
    return shell.user


def _listdetail(shell: Shell, listed: dict[str, Any]) -> None:
    shell.write(f"cluster = {listed['cluster']}")
    for group, machines in listed["groups"].items():
        shell.write(f"Group {group}:")
        for machine, row in machines.items():
            where = row.get("address") or "(by name)"
            port = row["ccs_port"] if row.get("transport") == "ccs" else row.get("ssh_port")
            flag = " [Disconnected]" if row.get("disconnected") else ""
            shell.write(f"Machine {machine} (Serial #: {row['serial']}){flag}")
            shell.write(f"    {row.get('transport', 'ssh').upper()} {where} port {port}")


async def _prepjoin(shell: Shell, args: list[str]) -> int:
    op = args[0].lower() if args else ""
    if not op and shell.console.interactive:
        op = (await shell.console.ask("Choose: NEW, DELETE, PRINT or LIST.", "LIST")).lower()
    if op == "print":
        return _prepjoin_print(shell)
    if op == "new":
        host = await _arg(shell, args, 1, "Enter the host name of the machine to add.")
        serial = await _arg(shell, args, 2, "Enter its serial number.")
        key = " ".join(args[3:]) if len(args) > 3 else await shell.console.ask(
            "Enter its machine key (the line 'prepjoin print' shows there).")  # fmt: skip
        shell.session.prepjoin_new(host, serial, key)
        shell.write(f"{host} prepared: a pending change; commit to make it effective.")
        return 0
    if op == "delete":
        host = await _arg(shell, args, 1, "Enter the host name to remove from the list.")
        shell.session.prepjoin_delete(host)
        shell.write(f"{host} removed from the list: a pending change; commit to apply.")
        return 0
    prepared = layers.prepared(shell.session.view)  # with this session's pending entries
    if not prepared:
        shell.write("No machines are prepared to join.")
    for host, row in prepared.items():
        shell.write(f"{host} (Serial #: {row['serial']}) {row['machine_key']}")
    return 0
