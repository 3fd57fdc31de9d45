"""Settings every test file shares."""

import os
import sys

# scikit-learn's array API checks (check_array_api_input, run by parametrize_with_checks)
# need SciPy's array API support, which SciPy reads once, when it is first imported
if "scipy" in sys.modules and os.environ.get("SCIPY_ARRAY_API") != "1":
    raise RuntimeError("set SCIPY_ARRAY_API=1 before SciPy is imported (a plugin imported it)")
os.environ["SCIPY_ARRAY_API"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_runtest_setup(item):
    """``@pytest.mark.shared_data("ml-100k/u1.base", ...)``: the test reads these files of
    ../shared/data. Where one is missing the test is skipped, except under CI=true, where it
    fails: CI must not stay green without the real-data tests."""
    for mark in item.iter_markers("shared_data"):
        missing = [p for p in mark.args if not (SHARED_DATA / p).exists()]
        if missing:
            message = f"{', '.join(missing)} not in {SHARED_DATA}"
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true and {message}: the real-data tests cannot run")
            pytest.skip(message)
