"""GPU path (device="cuda"): the CUDA simulator's weights equal the CPU kernel's.

The simulator (``NUMBA_ENABLE_CUDASIM=1``) must be chosen before numba.cuda is imported, so
the GPU fits run in a subprocess: this file run as a script fits every case of ``CASES`` with
``device="cuda"`` and saves the weights; the tests fit the same cases on the CPU here and
compare. On a machine with a usable GPU the same cases also run on the real device.
Skipped when numba-cuda is not installed.
"""

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt import SparseLinearRegression, SparseLogisticRegression

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAS_NUMBA_CUDA, reason="numba-cuda is not installed")

COMMON = dict(max_iter=1, tol=None, random_state=0)
# (name, estimator class, parameters, classes, dtype): few rules, one float32 case
CASES = [
    ("adagrad", SparseLogisticRegression, dict(batch_size=8), 2, np.float64),
    ("adagrad-rows", SparseLogisticRegression, dict(batch_size=1), 2, np.float64),
    (
        "adam-decay",
        SparseLogisticRegression,
        dict(optimizer="adam", alpha=0.01, batch_size=8),
        2,
        np.float64,
    ),  # fmt: skip
    (
        "ftrl-l1",
        SparseLogisticRegression,
        dict(optimizer="ftrl", l1=0.01, batch_size=16),
        2,
        np.float64,
    ),  # fmt: skip
    (
        "softmax",
        SparseLogisticRegression,
        dict(batch_size=8, fit_intercept=False),
        3,
        np.float64,
    ),  # fmt: skip
    ("squared", SparseLinearRegression, dict(optimizer="sgd", batch_size=8), 0, np.float64),
    (
        "huber",
        SparseLinearRegression,
        dict(loss="huber", epsilon=0.5, batch_size=8),
        0,
        np.float32,
    ),  # fmt: skip
]


def _data(n_classes, dtype):
    rng = np.random.default_rng(0)
    X = sp.random(48, 20, density=0.25, random_state=1, format="csr", dtype=dtype)
    if n_classes:
        y = np.arange(48) % n_classes
    else:
        y = X @ rng.normal(size=20) + 0.1 * rng.normal(size=48)
    weights = rng.uniform(0.5, 2.0, size=48)
    return X, y, weights


def _fit(device):
    """Fit every case, then one more epoch with partial_fit; arrays to compare."""
    out = {}
    for name, cls, params, n_classes, dtype in CASES:
        X, y, weights = _data(n_classes, dtype)
        if params["batch_size"] == 1:  # a launch per row: fewer rows
            X, y, weights = X[:16], y[:16], weights[:16]
        model = cls(device=device, **{**COMMON, **params}).fit(X, y, sample_weight=weights)
        model.partial_fit(X, y)
        out[f"{name}/coef"] = model.coef_
        out[f"{name}/intercept"] = model.intercept_
        out[f"{name}/loss"] = np.array(model.loss_curve_)
        out[f"{name}/t"] = np.array(model.t_)
    return out


@pytest.fixture(scope="module")
def cpu_fits():
    return _fit("cpu")


def _gpu_fits(tmp_path, env):
    path = tmp_path / "gpu.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.run([sys.executable, __file__, str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(path))


def _assert_close(cpu, gpu):
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        assert gpu[key].dtype == cpu[key].dtype, key
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-5, atol=1e-5, err_msg=key)


@needs_numba_cuda
def test_simulator_weights_equal_cpu(cpu_fits, tmp_path):
    # the simulator runs kernels as Python, so the rule functions they call must be Python too
    gpu = _gpu_fits(tmp_path, {"NUMBA_ENABLE_CUDASIM": "1", "NUMBA_DISABLE_JIT": "1"})
    _assert_close(cpu_fits, gpu)
    # the comparison can fail: different hyperparameters give different weights
    assert not np.allclose(gpu["adagrad/coef"], gpu["adam-decay/coef"], atol=1e-5)


@functools.cache
def _gpu_reason():
    script = "from sparseopt import cuda; print(cuda.unavailable_reason())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    return proc.stdout.strip()


@needs_numba_cuda
def test_device_weights_equal_cpu(cpu_fits, tmp_path):
    reason = _gpu_reason()
    if reason != "None":
        pytest.skip(f"no usable GPU: {reason}")
    _assert_close(cpu_fits, _gpu_fits(tmp_path, {"NUMBA_ENABLE_CUDASIM": "0"}))


def test_import_does_not_import_cuda():
    script = (
        "import sys, sparseopt\n"
        "bad = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)


@pytest.mark.parametrize("reason", ["numba-cuda is not installed: pip install it", "no driver"])
def test_cuda_without_gpu_raises_with_reason(monkeypatch, reason):
    from sparseopt import cuda

    X, y, _ = _data(2, np.float64)
    model = SparseLogisticRegression(**COMMON).fit(X, y)
    coef = model.coef_
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: reason)
    model.set_params(device="cuda")
    with pytest.raises(RuntimeError, match=f"device='cuda' is not usable: {reason}"):
        model.partial_fit(X, y)
    np.testing.assert_array_equal(model.coef_, coef)  # the failed call changed nothing
    # "auto" falls back to the CPU, even on data large enough for the GPU
    monkeypatch.setattr(cuda, "AUTO_MIN_NNZ", 1)
    monkeypatch.setattr(cuda, "AUTO_MIN_BATCH_SIZE", 1)
    auto = SparseLogisticRegression(device="auto", **COMMON).fit(X, y)
    cpu = SparseLogisticRegression(device="cpu", **COMMON).fit(X, y)
    np.testing.assert_array_equal(auto.coef_, cpu.coef_)


def test_available_is_a_bool_and_the_reason_apart(monkeypatch):
    from sparseopt import cuda

    # without numba-cuda (made missing here): False, never a truthy sentence
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "numba_cuda" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    cuda.unavailable_reason.cache_clear()
    try:
        assert cuda.available() is False
        assert cuda.unavailable_reason().startswith("numba-cuda is not installed")
    finally:
        cuda.unavailable_reason.cache_clear()
    if not HAS_NUMBA_CUDA:
        return
    # under the CUDA simulator (chosen before numba.cuda is imported: a subprocess), True
    script = "from sparseopt import cuda; print(cuda.available(), cuda.unavailable_reason())"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert proc.stdout.split() == ["True", "None"]


def test_real_reason_without_gpu():
    reason = _gpu_reason()
    if reason == "None":
        pytest.skip("a GPU is usable here")
    if not HAS_NUMBA_CUDA:
        assert reason.startswith("numba-cuda is not installed")
    else:
        assert "driver" in reason or "compute capability" in reason, reason


@needs_numba_cuda
def test_batch_columns_groups_each_batch_by_column_in_row_order():
    from sparseopt.cuda._linear import batch_columns

    X, _, _ = _data(2, np.float64)
    order = np.random.default_rng(0).permutation(X.shape[0])
    batch_seg, seg_ptr, seg_col, ent_k, ent_i = batch_columns(
        X.indptr, X.indices, order, 5, X.shape[1], 3
    )
    assert batch_seg.size == -(-X.shape[0] // 5) + 1 and seg_ptr[-1] == X.nnz
    for b in range(batch_seg.size - 1):
        expected = {}  # column -> [(entry, row position)] in row order
        for i, row in enumerate(order[b * 5 : (b + 1) * 5]):
            for k in range(X.indptr[row], X.indptr[row + 1]):
                expected.setdefault(X.indices[k], []).append((k, i))
        got = {}
        for u in range(batch_seg[b], batch_seg[b + 1]):
            entries = range(seg_ptr[u], seg_ptr[u + 1])
            got[seg_col[u]] = [(ent_k[e], ent_i[e]) for e in entries]
        assert got == expected


@needs_numba_cuda
def test_kernels_compile_for_the_device(monkeypatch):
    """The kernels and the rule functions they call compile to PTX (no GPU needed, but the
    CUDA compiler: installed by the cuda12/cuda13 extras). Catches what the simulator, which
    runs them as Python, cannot: code that numba-cuda does not support."""
    import numba
    from numba import cuda, types

    if numba.config.ENABLE_CUDASIM:
        pytest.skip("the CUDA simulator is on")
    try:
        cuda.compile_ptx(lambda a: None, (types.float64[::1],), cc=(9, 0))
    except Exception as exc:
        pytest.skip(f"no CUDA compiler: {type(exc).__name__}")
    import numba.cuda.dispatcher

    from sparseopt.cuda import _linear as G

    # device functions are compiled for the current device's compute capability: pretend one
    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device",
                        lambda: type("Device", (), {"compute_capability": (9, 0)})())  # fmt: skip
    X, y, w = _data(2, np.float32)
    table, vec, idx = np.zeros((20, 2), np.float32), np.zeros(6), np.zeros(3, np.int64)
    clocks, pos = np.zeros((2, 6)), idx.astype(np.int32)
    from sparseopt.models import _losses as L
    from sparseopt.optim import _rules as R

    optimizer, rows = (vec, vec, clocks), (idx, X.indptr, X.indices, X.data, vec, vec)
    # every rule and loss: each is a kernel of its own (a compile-time constant)
    kernels = [(G.forward_kernel(loss), (rows, (0, 1), (table, table), 0.0, (vec, vec, vec)))
               for loss in (L.LOGISTIC, L.SOFTMAX, L.SQUARED, L.HUBER)]  # fmt: skip
    for rule in range(R.FTRL + 1):
        kernels.append(
            (G.catch_up_kernel(rule), (optimizer, (0, 0, 1), idx, table, vec, vec, 1))
        )  # fmt: skip
        kernels.append((G.backward_kernel(rule), (optimizer, (0, 0, 1, 1), (idx, idx, idx, pos),
                                                  X.data, vec, (table, table, vec, vec), True,
                                                  True)))  # fmt: skip
    for kernel, values in kernels:
        signature = tuple(numba.typeof(v) for v in values)
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        assert ".entry" in ptx, kernel.py_func.__qualname__


if __name__ == "__main__":
    np.savez(sys.argv[1], **_fit("cuda"))
