"""Start-up costs: ``import sparseopt``, and the first ``fit`` against the second.

    python benchmarks/bench_startup.py

Each measurement runs in a fresh interpreter after one warm-up process has filled Numba's
on-disk cache, so it shows what a user's second and later sessions pay. Targets (issue 3):
import at most 1 s; the first fit at most 1 s more than the second.
"""

import subprocess
import sys

IMPORT = "import time; t = time.perf_counter(); import sparseopt; print(time.perf_counter() - t)"
FIT = """
import time
import numpy as np
from sklearn.datasets import make_classification
from sparseopt import SparseLogisticRegression
X, y = make_classification(5000, random_state=0)
X32 = X.astype(np.float32)
for data in (X, X32):
    times = []
    for _ in range(2):
        t = time.perf_counter()
        SparseLogisticRegression(max_iter=1).fit(data, y)
        times.append(time.perf_counter() - t)
    print(times[0], times[1])
"""


def run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [list(map(float, line.split())) for line in out.stdout.strip().splitlines()]


def main():
    run(FIT)  # fill the cache
    imports = [run(IMPORT)[0][0] for _ in range(3)]
    print(f"import sparseopt: {min(imports) * 1e3:.1f} ms (best of 3 fresh processes)")
    for dtype, (first, second) in zip(("float64", "float32"), run(FIT), strict=True):
        print(f"fit {dtype}: first {first:.3f} s, second {second:.3f} s, "
              f"overhead {first - second:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
