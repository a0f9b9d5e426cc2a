"""Run the fuzzers of ``tests/test_fuzz.py`` for longer, and say what they did.

    .venv/bin/python bench/fuzz.py [--scale 20] [--only shell,control] [--seed N]

Each fuzzer runs ``scale`` times its default example count (``--scale 1`` is exactly
what ``pytest tests/test_fuzz.py`` runs).  Printed: per fuzzer the examples executed and
the seconds taken, then every outcome counted (``known bug: ...`` lines are the bugs
listed in ``KNOWN``, tolerated and pinned by the regression tests).  A new failure
stops the run with hypothesis's report (its smallest failing input and a reproduction
blob); the exit status is then 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import test_fuzz  # noqa: E402 - after the path is set


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=test_fuzz.LONG)
    parser.add_argument("--only", default="", help="comma-separated fuzzer names")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (reproducible)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(test_fuzz.FUZZERS)
    unknown = sorted(set(names) - set(test_fuzz.FUZZERS))
    if unknown:
        parser.error(f"no fuzzer {', '.join(unknown)}; there are {', '.join(test_fuzz.FUZZERS)}")
    test_fuzz.SEED = args.seed
    status, total = 0, time.perf_counter()
    print(f"{'fuzzer':<12} {'asked':>7} {'executed':>9} {'seconds':>8}")
    for name in names:
        fuzzer, examples = test_fuzz.FUZZERS[name]
        asked = max(1, round(examples * args.scale))
        start = time.perf_counter()
        try:
            fuzzer(asked)
        except Exception:
            traceback.print_exc()
            status = 1
        took = time.perf_counter() - start
        print(f"{name:<12} {asked:>7} {test_fuzz.COUNTS[name]:>9} {took:>8.1f}", flush=True)
        if status:
            break
    print(f"{'total':<12} {'':>7} {sum(test_fuzz.COUNTS.values()):>9} "
          f"{time.perf_counter() - total:>8.1f}")  # fmt: skip
    print("\noutcomes:")
    for outcome, count in sorted(test_fuzz.OUTCOMES.items()):
        print(f"  {count:>7}  {outcome}")
    return status


if __name__ == "__main__":
    sys.exit(main())
