"""The model families of the command line, in one table.

A family names its ``--model`` kinds and its run-folder layout, tells whether a model file
is one of its own, and gives its commands. The commands of :mod:`sparseopt.cli._commands`
look a family up here, by ``--model`` or by model file, and hand it the parsed arguments:
adding a family is one entry in :data:`FAMILIES` and one module of commands; adding a
command is its parser (:func:`sparseopt.cli.build_parser`), one function in
:mod:`~sparseopt.cli._commands` and an entry in the ``commands`` of each family that runs it
(the others refuse it).
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
    commands : dict
        Command name -> the family's function for it, which takes the parsed arguments and
        returns the exit status. A command the family lacks is refused by :meth:`run`.
    """

    name: str
    layout: _runs.RunLayout
    holds: Callable[[str], bool]
    commands: dict[str, Command]

    def run(self, command: str, args: Namespace) -> int:
        """Run the family's ``command`` on ``args``."""
        if command not in self.commands:
            raise _runs.PipelineError(f"sparseopt {command} does not apply to {self.name}")
        return self.commands[command](args)


RATINGS = ModelFamily(
    name="ratings models (mf)",
    layout=_runs.RATINGS_RUNS,
    holds=is_ratings_model,
    commands={
        "train": _ratings.train,
        "predict": _ratings.predict,
        "evaluate": _ratings.evaluate,
        "inspect": _ratings.inspect,
        "recommend": _ratings.recommend,
    },
)
CLICK = ModelFamily(
    name="click models (lr, fm, ffm)",
    layout=_runs.CLICK_RUNS,
    holds=lambda path: True,  # any other model file: the click commands check it
    commands={
        "train": _click.train,
        "predict": _click.predict,
        "evaluate": _click.evaluate,
        "inspect": _click.inspect,
        "recommend": _click.recommend,  # refused, naming the model the file holds
    },
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
