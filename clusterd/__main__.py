"""The ``clusterd`` command.  Today: ``clusterd demo``; the daemon arrives with the mesh."""

from __future__ import annotations

import argparse
import sys

from clusterd import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"clusterd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="walk through create, join, copy/move and a conflict")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from clusterd import demo

        demo.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
