import subprocess
import sys

import pytest


def test_import_is_light():
    """``import sparseopt`` loads neither scikit-learn, Numba nor CUDA (they come on use)."""
    code = (
        "import sys, sparseopt; "
        "print(sorted(m for m in ('sklearn', 'numba', 'numba.cuda', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports_resolve():
    import importlib
    import importlib.metadata

    import sparseopt

    for name, module in sparseopt._EXPORTS.items():
        defined = getattr(importlib.import_module(f"sparseopt.{module}"), name)
        assert getattr(sparseopt, name) is defined
    assert set(sparseopt.__all__) == {*sparseopt._EXPORTS, "__version__"}
    assert sparseopt.__version__ == importlib.metadata.version("sparseopt")
    assert "SparseLogisticRegression" in dir(sparseopt)


def test_typed():
    """PEP 561: the package says that it has type hints, and ships the marker."""
    import importlib.resources

    assert importlib.resources.files("sparseopt").joinpath("py.typed").is_file()


def test_missing_shared_data_fails_under_ci(monkeypatch):
    """A real-data test whose files are missing is skipped, and fails under CI=true."""
    import conftest

    class Item:
        def iter_markers(self, name):
            mark = pytest.mark.shared_data("no-such-set/file").mark
            return [mark] if name == "shared_data" else []

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-set/file"):
        conftest.pytest_runtest_setup(Item())
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-such-set/file"):
        conftest.pytest_runtest_setup(Item())
