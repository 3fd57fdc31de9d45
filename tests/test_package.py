import subprocess
import sys


def test_import_is_light():
    """``import sparseopt`` loads neither scikit-learn, Numba nor CUDA (they come on use)."""
    code = (
        "import sys, sparseopt; "
        "print(sorted(m for m in ('sklearn', 'numba', 'numba.cuda', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports_resolve():
    import sparseopt

    for name in sparseopt.__all__:
        assert getattr(sparseopt, name) is not None
    assert "SparseLogisticRegression" in dir(sparseopt)
