"""Hostile cases in a child process: a crash (a signal) fails the test, naming its case."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])


def run_cases(code: str, timeout: int = 900, cwd=None) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout; returns {case: outcome}.

    The child prints one JSON line ``["start", case]`` before each case and
    ``[case, outcome]`` after it, so a child killed by a signal names the case it was in.
    """
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=path),
    )
    results, running = {}, None
    for line in proc.stdout.splitlines():
        name, out = json.loads(line)
        if name == "start":
            running = out
        else:
            results[name], running = out, None
    assert proc.returncode == 0, (
        f"the child process ended with status {proc.returncode} (a negative status is a "
        f"signal: a crash) in case {running!r}\n{proc.stderr[-3000:]}"
    )
    return results
