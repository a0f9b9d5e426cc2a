"""The ``clusterd`` command: ``init``, ``run``, ``status``, ``create``, ``join``, ``prepjoin``,
``call`` (any control-socket request, for scripts) and ``demo``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from clusterd import __version__
from clusterd.core.errors import ClusterdError

FLAGS = {
    "listen": str,
    "ssh_port": int,
    "ccs_port": int,
    "ping_interval": float,
    "database": str,
    "software_version": str,
    "log_level": str,
    "web_listen": str,
}


HELP = {
    "listen": "the address to listen on (0.0.0.0: all; members then resolve our name)",
    "ssh_port": "the admin SSH port (members, joins and admins' shells)",
    "ccs_port": "the CCS port (members and key joins only), when CCS is on",
    "ping_interval": "seconds between pings of each member (60)",
    "database": "store.db (a SQLite file in the data directory, the default) or a "
    "PostgreSQL URL: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (needs the driver: pip "
    "install 'clusterd[postgres]')",
    "software_version": "tests only: pretend to run another version",
    "log_level": "DEBUG, INFO (default), WARNING or ERROR",
    "web_listen": "ADDRESS:PORT of the web interface over HTTPS (default: none)",
}


def _flags(parser: argparse.ArgumentParser, *, init: bool) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="the machine's directory")
    for name, kind in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name, help=HELP[name])
    ccs = parser.add_mutually_exclusive_group()
    ccs.add_argument("--ccs", dest="ccs_enabled", action="store_true", default=None)
    ccs.add_argument("--no-ccs", dest="ccs_enabled", action="store_false")
    if init:
        parser.add_argument("--hostname", required=True, help="fully qualified host name")
        parser.add_argument("--serial", help="serial number (default: a random one)")
        parser.add_argument(
            "--admin-passphrase-file",
            type=Path,
            help="create user 'admin' with the passphrase on this file's first line "
            "(or $CLUSTERD_PASSPHRASE; typed at the terminal otherwise)",
        )
        parser.add_argument(
            "--no-admin", action="store_true", help="create no admin user (not recommended)"
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in [*FLAGS, "ccs_enabled"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"clusterd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _flags(sub.add_parser("init", help="create a machine: data directory, keys, store"), init=True)
    _flags(sub.add_parser("run", help="serve until SIGTERM"), init=False)
    status = sub.add_parser("status", help="links, routes, version vector and alerts")
    status.add_argument("--data-dir", type=Path, required=True)
    status.add_argument("--json", action="store_true", help="print JSON (the default today)")
    demo = sub.add_parser("demo", help="three live machines: the reference's walkthrough")
    demo.add_argument("--no-shell", action="store_true", help="script the walkthrough only")
    demo.add_argument("--store", action="store_true", help="the store and mesh walkthroughs")
    create = sub.add_parser("create", help="make this standalone machine a new cluster")
    create.add_argument("--data-dir", type=Path, required=True)
    create.add_argument("name", help="the cluster's name")
    join = sub.add_parser("join", help="join the cluster of a member (shows its host key)")
    join.add_argument("--data-dir", type=Path, required=True)
    join.add_argument("address", help="a member's address")
    join.add_argument("--port", type=int, default=22, help="its admin SSH port, or CCS port")
    join.add_argument("--fingerprint", help="expected SHA256:... host key (no question)")
    join.add_argument("--key", action="store_true", help="use this machine's PREPJOIN key")
    join.add_argument("--ccs", action="store_true", help="join over the member's CCS port")
    join.add_argument("--enable-ccs", action="store_true", help="members reach us over CCS")
    join.add_argument("--group", default="Main_Group")
    join.add_argument("--user", default="admin", help="the cluster admin user")
    join.add_argument("--passphrase-file", type=Path)
    join.add_argument("--yes", action="store_true", help="do not ask before discarding")
    join.add_argument("--wait", type=float, metavar="SECONDS",
                      help="with --key or --ccs: until the key is registered, try again "
                      "every 5 s for this long (default: wait for Enter)")  # fmt: skip
    prep = sub.add_parser("prepjoin", help="print what a member needs to register this machine")
    prep.add_argument("--data-dir", type=Path, required=True)
    prep.add_argument("action", choices=["print"])
    prep.add_argument("--json", action="store_true", help="the control answer, as JSON")
    shellp = sub.add_parser("shell", help="open the admin shell of this machine (local key)")
    shellp.add_argument("--data-dir", type=Path, required=True)
    shellp.add_argument("words", nargs="*", help="one command to run instead of a shell")
    callp = sub.add_parser("call", help="send one control request (JSON), print the answer")
    callp.add_argument("--data-dir", type=Path, required=True)
    callp.add_argument(
        "request",
        help='e.g. \'{"op": "list"}\', or - to read it from stdin (keeps a passphrase out '
        "of the process list)",
    )
    watch = sub.add_parser("watch", help="stream this machine's effective changes (JSON lines)")
    watch.add_argument("--data-dir", type=Path, required=True)
    watch.add_argument("--feature", help="only this feature's changes")
    watch.add_argument("--since", type=int, metavar="VERSION",
                       help="resume after this version (default: from now on)")  # fmt: skip
    target = sub.add_parser("target", help="service targets: status, rollback, force")
    target.add_argument("--data-dir", type=Path, required=True)
    target.add_argument("action", choices=["status", "rollback", "force"])
    target.add_argument("name", nargs="?", help="the target (rollback, force)")
    target.add_argument("back", nargs="?", type=int, default=1,
                        help="rollback: generations back from the live one (1)")  # fmt: skip
    check = sub.add_parser("postfix-check", help="validate a rendered Postfix directory")
    check.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ClusterdError as exc:
        print(f"clusterd: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo" and args.store:
        from clusterd.dev import demo, demo_mesh

        demo.run()
        print()
        demo_mesh.run()
    elif args.command == "demo":
        from clusterd.dev import demo_cluster

        return demo_cluster.run(shell=not args.no_shell and sys.stdin.isatty())
    elif args.command == "init":
        from clusterd.node import identity
        from clusterd.trust import joincli

        serial = args.serial or f"CD-{secrets.token_hex(4).upper()}"

        def passphrase() -> str:
            return joincli.passphrase_from(args.admin_passphrase_file, _new_passphrase)

        config = identity.init(
            args.data_dir,
            args.hostname,
            serial,
            _overrides(args),
            admin_passphrase=None if args.no_admin else passphrase,
        )
        print(json.dumps(identity.describe(config), indent=2))
    elif args.command == "run":
        from clusterd.node import config as cfg
        from clusterd.node import daemon, logsetup

        conf = cfg.load(args.data_dir, _overrides(args))
        os.umask(0o077)  # every file the daemon makes (log, store journals) is its own
        logsetup.configure(conf)
        from clusterd.node.workers import Workers  # each session's shell in its own process

        daemon.run(conf, shells=Workers())
    elif args.command == "status":
        from clusterd.node import control

        print(json.dumps(control.request(args.data_dir, {"op": "status"}), indent=2))
    elif args.command == "create":
        return _print(args.data_dir, {"op": "create", "name": args.name})
    elif args.command == "prepjoin":
        if args.json:
            return _print(args.data_dir, {"op": "prepjoin_print"})
        return _prepjoin_print(args.data_dir)
    elif args.command == "shell":
        from clusterd.node import config as cfg
        from clusterd.node import identity

        conf = cfg.load(args.data_dir)
        argv = identity.local_ssh(conf, " ".join(args.words) if args.words else None)
        os.execvp(argv[0], argv)
    elif args.command == "call":
        text = sys.stdin.read() if args.request == "-" else args.request
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise ClusterdError(f"not a JSON request: {exc}") from None
        return _print(args.data_dir, message)
    elif args.command == "watch":
        return _watch(args.data_dir, args.feature, args.since)
    elif args.command == "target":
        if args.action != "status" and not args.name:
            raise ClusterdError(f"target {args.action} needs the target's name")
        return _print(args.data_dir, {"op": "target", "action": args.action,
                                      "name": args.name, "back": args.back})  # fmt: skip
    elif args.command == "postfix-check":
        from clusterd.services import postfixcheck

        return postfixcheck.main(args.directory)
    elif args.command == "join":
        from clusterd.trust import joincli

        return joincli.run(
            args.data_dir,
            address=args.address,
            port=args.port,
            fingerprint=args.fingerprint,
            key=args.key,
            ccs=args.ccs,
            enable_ccs=args.enable_ccs,
            group=args.group,
            user=args.user,
            passphrase_file=args.passphrase_file,
            yes=args.yes,
            wait=args.wait,
        )
    return 0


def _watch(data_dir: Path, feature: str | None, since: int | None) -> int:
    """Until interrupted: exit 0 on Ctrl-C or a closed pipe, 3 when ``since`` is too old."""
    import asyncio

    from clusterd.schema.catalogue import CATALOGUE
    from clusterd.services import journal

    if feature is not None and feature not in CATALOGUE:
        raise ClusterdError(f"no feature {feature!r} (help in the shell lists them)")
    if not (data_dir / "clusterd.toml").exists():
        raise ClusterdError(f"{data_dir} is not a clusterd data directory")

    async def write(line: str) -> bool:
        print(line, flush=True)
        return True

    try:
        asyncio.run(journal.stream(data_dir / journal.NAME, since, feature, write))
    except journal.Compacted as exc:
        print(f"clusterd: {exc}", file=sys.stderr)
        return 3
    except (KeyboardInterrupt, BrokenPipeError):
        with contextlib.suppress(OSError):
            sys.stdout.close()
    return 0


def _print(data_dir: Path, message: Any) -> int:
    from clusterd.node import control

    if not isinstance(message, dict):
        raise ClusterdError("a request is a JSON object")
    answer = control.request(data_dir, message, timeout=120.0)
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else 1


def _prepjoin_print(data_dir: Path) -> int:
    """This machine's facts as the shell's PREPJOIN PRINT shows them, and the line to run
    on a member of the cluster."""
    from clusterd.node import control
    from clusterd.trust.joincli import prepjoin_facts

    answer = control.request(data_dir, {"op": "prepjoin_print"}, timeout=30.0)
    if not answer.get("ok"):
        raise ClusterdError(str(answer.get("error", "prepjoin print failed")))
    print("\n".join(prepjoin_facts(answer)))
    print("On a member of the cluster, run (then commit):")
    line = f"{answer['hostname']} {answer['serial']} {answer['machine_key']}"
    print(f"  clusterconfig prepjoin new {line}")
    return 0


def _new_passphrase(prompt: str) -> str:
    import getpass

    if not sys.stdin.isatty():
        raise ClusterdError(
            "no admin passphrase: give --admin-passphrase-file, set $CLUSTERD_PASSPHRASE "
            "or run on a terminal (--no-admin creates no admin user)"
        )
    first = getpass.getpass("Choose the admin passphrase: ")
    if getpass.getpass("Repeat it: ") != first:
        raise ClusterdError("the two passphrases differ")
    return first


if __name__ == "__main__":
    sys.exit(main())
