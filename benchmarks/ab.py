"""Run a benchmark script against this tree and an earlier commit, interleaved, in one run.

    python benchmarks/ab.py REV bench_linear.py [--rounds 2] [-- SCRIPT ARGS...]

Checks REV out into a git worktree (kept in the system's temporary folder and reused by later
runs: Numba's disk cache is keyed by source path, so the earlier commit's kernels compile once,
not on every run) and runs ``benchmarks/SCRIPT`` (this tree's copy,
so that both sides are measured the same way) ``--rounds`` times for each side, alternating
sides, with ``PYTHONPATH`` pointing at the side's tree so that ``import sparseopt`` loads that
side's code. Each side keeps its own Numba cache entries (they are keyed by source file), and
every benchmark compiles before it times, so neither side's figures include compiling. The
outputs are printed one after the other, labelled; on a shared machine compare the sides
within a round.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the commit to compare against, e.g. HEAD~1")
    parser.add_argument("script", help="a script in benchmarks/, e.g. bench_linear.py")
    parser.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, script_args = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    script = ROOT / "benchmarks" / args.script
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.rev],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    old = Path(tempfile.gettempdir()) / f"sparseopt-ab-{rev}"
    if not old.exists():
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", old, rev],
                       check=True)  # fmt: skip
    sides = [(f"this tree (HEAD {head} + changes)", ROOT), (f"{args.rev} ({rev})", old)]
    for round_ in range(1, args.rounds + 1):
        for label, tree in sides:
            print(f"\n=== round {round_}: {label} ===", flush=True)
            env = dict(os.environ, PYTHONPATH=str(tree))
            subprocess.run([sys.executable, script, *script_args], env=env, cwd=script.parent,
                           check=True)  # fmt: skip

if __name__ == "__main__":
    main()
