"""The commands of ``sparseopt``: each looks up the model family (by ``--model``, or by the
model file) in :mod:`sparseopt.cli._registry` and runs that family's command; ``cache`` is
the same for every family."""

from __future__ import annotations

import os
from pathlib import Path

from .._runs import PipelineError
from ..datasets._cache import chunk_sets, clear_chunk_sets, default_data_home, older_chunk_sets
from ._registry import family_of_file, family_of_kind


def train(args) -> int:
    """Train a model on a file (default: the packaged sample) and save it."""
    return family_of_kind(args.model).train(args)


def predict(args) -> int:
    """Write the click probability of every row of DATA (mf: the score of every user,item
    pair) to a file, one per line."""
    return family_of_file(args.model).predict(args)


def evaluate(args) -> int:
    """Print the model's logloss, AUC and calibration on DATA (mf: RMSE and MAE, or
    precision, recall and NDCG at 10 for the implicit losses)."""
    return family_of_file(args.model).evaluate(args)


def inspect(args) -> int:
    """Print the strongest features of a model, by name with the token counts of --keep-tokens
    (mf: a summary and the items of largest bias)."""
    return family_of_file(args.model).inspect(args)


def recommend(args) -> int:
    """Write the top-n items of each user (mf models), as CSV lines user,rank,item,score."""
    return family_of_file(args.model).recommend(args)


def cache(args) -> int:
    """Show the parsed-chunk cache (where, how large), or --clear it (the chunk sets that no
    run is reading or writing; only the files sparseopt wrote there)."""
    root = Path(args.cache_dir) if args.cache_dir else default_data_home() / "chunks"
    if root.exists() and not root.is_dir():
        raise PipelineError(f"--cache-dir {root} is a file, not the cache's folder")
    if args.clear:
        removed, in_use = clear_chunk_sets(root)
        freed = sum(entry["bytes"] for entry in removed)
        print(f"removed {_sets(len(removed))} ({_size(freed)}) from {root}")
        for entry in in_use:
            print(
                f"kept {entry['path'].name}, in use by {'; '.join(entry['holders'])}: clear "
                "again once that run has ended"
            )
        _older_sets(root)
        return 0
    sets = chunk_sets(root)
    incomplete = sum(not entry["complete"] for entry in sets)
    print(f"chunk cache: {root}")
    print(
        f"{_sets(len(sets))}, {_size(sum(e['bytes'] for e in sets))}"
        + (f" ({incomplete} incomplete: a pass stopped early, or is writing)" if incomplete else "")
    )
    if args.cache_dir is None and not os.environ.get("SPARSEOPT_DATA"):
        print("(the default place, as SPARSEOPT_DATA is unset; set it to move the cache)")
    _older_sets(root)
    return 0


def _older_sets(root) -> None:
    older = older_chunk_sets(root)
    if older:
        print(
            f"{len(older)} folder{'s look' if len(older) > 1 else ' looks'} like the chunk sets "
            f"of an older sparseopt, without the marker of a set ({', '.join(older[:3])}"
            f"{'...' if len(older) > 3 else ''}): not counted nor cleared; delete them by hand"
        )


def _sets(n) -> str:
    return f"{n} cached chunk set" + ("" if n == 1 else "s")


def _size(n_bytes) -> str:
    units = ["bytes", "KB", "MB", "GB", "TB"]
    k = 0
    while n_bytes >= 1000 and k < len(units) - 1:
        n_bytes, k = n_bytes / 1000, k + 1
    return f"{n_bytes} bytes" if k == 0 else f"{n_bytes:.1f} {units[k]}"
