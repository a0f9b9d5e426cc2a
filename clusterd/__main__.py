"""The ``clusterd`` command: ``init``, ``run``, ``status`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from pathlib import Path
from typing import Any

from clusterd import __version__
from clusterd.errors import ClusterdError

FLAGS = {
    "listen": str,
    "ssh_port": int,
    "ccs_port": int,
    "ping_interval": float,
    "database": str,
    "software_version": str,
    "log_level": str,
}


def _flags(parser: argparse.ArgumentParser, *, init: bool) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="the machine's directory")
    for name, kind in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    ccs = parser.add_mutually_exclusive_group()
    ccs.add_argument("--ccs", dest="ccs_enabled", action="store_true", default=None)
    ccs.add_argument("--no-ccs", dest="ccs_enabled", action="store_false")
    if init:
        parser.add_argument("--hostname", required=True, help="fully qualified host name")
        parser.add_argument("--serial", help="serial number (default: a random one)")


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
    sub.add_parser("demo", help="walk through create, join, copy/move and a conflict")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ClusterdError as exc:
        print(f"clusterd: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from clusterd import demo, demo_mesh

        demo.run()
        print()
        demo_mesh.run()
    elif args.command == "init":
        from clusterd import identity

        serial = args.serial or f"CD-{secrets.token_hex(4).upper()}"
        config = identity.init(args.data_dir, args.hostname, serial, _overrides(args))
        print(json.dumps(identity.describe(config), indent=2))
    elif args.command == "run":
        from clusterd import config as cfg
        from clusterd import daemon

        conf = cfg.load(args.data_dir, _overrides(args))
        logging.basicConfig(
            level=conf.log_level,
            format="%(asctime)s %(levelname)s %(name)s [" + conf.hostname + "] %(message)s",
            handlers=[logging.StreamHandler(), logging.FileHandler(conf.log_file)],
        )
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        daemon.run(conf)
    elif args.command == "status":
        from clusterd import control

        print(json.dumps(control.request(args.data_dir, {"op": "status"}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
