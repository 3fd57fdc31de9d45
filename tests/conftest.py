"""Settings every test file shares."""

import os
import sys

# scikit-learn's array API checks (check_array_api_input, run by parametrize_with_checks)
# need SciPy's array API support, which SciPy reads once, when it is first imported
if "scipy" in sys.modules and os.environ.get("SCIPY_ARRAY_API") != "1":
    raise RuntimeError("set SCIPY_ARRAY_API=1 before SciPy is imported (a plugin imported it)")
os.environ["SCIPY_ARRAY_API"] = "1"
