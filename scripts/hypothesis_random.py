"""Run the property-based tests with fresh random examples (the default run is derandomised).

The test suite loads the hypothesis profile "derandomized" so that CI sees the same examples
every time; this script runs the same tests under the "random" profile, ``--rounds`` times,
to look for new counterexamples on purpose. A failure prints hypothesis's reproduction blob.

    python scripts/hypothesis_random.py --rounds 5 [TEST_FILE ...] [-- pytest args...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Run pytest on the hypothesis tests under the random profile; return its exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--smoke", action="store_true", help="one round of one test file")
    parser.add_argument("files", nargs="*", help="test files (default: every file that "
                                                 "uses hypothesis)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, quoted")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        print("error: --rounds: must be >= 1", file=sys.stderr)
        return 2
    missing = [f for f in args.files if not (REPO / f).is_file() and not Path(f).is_file()]
    if missing:
        print(f"error: {missing[0]}: no such test file", file=sys.stderr)
        return 2
    env = dict(os.environ, BNBVER_HYPOTHESIS_PROFILE="random")
    # --smoke checks the plumbing reproducibly (a fixed seed), so CI never fails by chance.
    targets = (["tests/test_lp_intervals.py", "--hypothesis-seed=0"] if args.smoke
               else list(args.files) or _hypothesis_files())
    rounds = 1 if args.smoke else args.rounds
    for k in range(rounds):
        print(f"round {k + 1}/{rounds}", flush=True)
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                *targets, *args.pytest_args.split()], cwd=REPO, env=env)
        if code != 0:
            return code
    return 0


def _hypothesis_files() -> list[str]:
    """Return the test files that use hypothesis."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "from hypothesis" in p.read_text())


if __name__ == "__main__":
    sys.exit(main())
