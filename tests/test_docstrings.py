"""Every example in the package's docstrings runs as written."""

import doctest
import importlib
import pkgutil

import pytest

import sparseopt

# the GPU modules import numba.cuda, and running __main__ would run the command line
MODULES = [
    m.name
    for m in pkgutil.walk_packages(sparseopt.__path__, "sparseopt.")
    if ".cuda" not in m.name and not m.name.endswith("__main__")
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
