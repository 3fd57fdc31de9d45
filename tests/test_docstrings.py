"""Every example in the package's docstrings runs as written."""

import doctest
import importlib
import pkgutil

import pytest

import sparseopt

# the GPU modules import numba.cuda, and running __main__ would run the command line
NAMES = [
    m.name
    for m in pkgutil.walk_packages(sparseopt.__path__, "sparseopt.")
    if ".cuda" not in m.name and not m.name.endswith("__main__")
]
# only the modules that hold examples: one without any would pass without running a line
FINDER = doctest.DocTestFinder()
MODULES = [
    name
    for name in NAMES
    if any(t.examples for t in FINDER.find(importlib.import_module(name)))
]


def test_examples_are_found():
    """The public modules hold examples (a broken finder would leave the table empty)."""
    assert {"sparseopt.optim", "sparseopt.estimators._linear", "sparseopt.datasets"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"no example ran in {name}"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
