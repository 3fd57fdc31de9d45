"""The model families of the command line, in one table.

A family names its ``--model`` kinds and its run-folder layout, tells whether a model file
is one of its own, and gives its commands. The commands of :mod:`sparseopt.cli._commands`
look a family up here, by ``--model`` or by model file, and hand it the parsed arguments:
adding a family is one entry in :data:`FAMILIES` and one module of commands.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass

from .. import _runs
from . import _click, _ratings
from ._ratings_files import is_ratings_model

Command = Callable[[Namespace], int]


@dataclass(frozen=True)
class ModelFamily:
    """One family of models of the command line.

    Parameters
    ----------
    name : str
        The family, in messages.
    layout : sparseopt._runs.RunLayout
        Its run folders; ``layout.models`` are the ``--model`` kinds it trains.
    holds : callable
        ``holds(path)``: whether the model file ``path`` is one of the family's.
    train, predict, evaluate, inspect, recommend : callable
        The family's commands: each takes the parsed arguments and returns the exit status.
    """

    name: str
    layout: _runs.RunLayout
    holds: Callable[[str], bool]
    train: Command
    predict: Command
    evaluate: Command
    inspect: Command
    recommend: Command


RATINGS = ModelFamily(
    name="ratings models",
    layout=_runs.RATINGS_RUNS,
    holds=is_ratings_model,
    train=_ratings.train,
    predict=_ratings.predict,
    evaluate=_ratings.evaluate,
    inspect=_ratings.inspect,
    recommend=_ratings.recommend,
)
CLICK = ModelFamily(
    name="click models",
    layout=_runs.CLICK_RUNS,
    holds=lambda path: True,  # any other model file: the click commands check it
    train=_click.train,
    predict=_click.predict,
    evaluate=_click.evaluate,
    inspect=_click.inspect,
    recommend=_click.recommend,
)
# asked in this order which family holds a model file: the click models, last, take the rest
FAMILIES = (RATINGS, CLICK)


def model_kinds() -> list[str]:
    """Every ``--model`` kind, sorted."""
    return sorted(kind for family in FAMILIES for kind in family.layout.models)


def family_of_kind(kind: str) -> ModelFamily:
    """The family that trains ``--model kind`` (argparse has checked the kind)."""
    return next(family for family in FAMILIES if kind in family.layout.models)


def family_of_file(path) -> ModelFamily:
    """The family whose model the file ``path`` holds."""
    return next(family for family in FAMILIES if family.holds(path))
