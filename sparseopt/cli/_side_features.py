"""Side-feature files of ``sparseopt train --model mf --user-features FILE --item-features FILE``.

A features file is CSV with a header line: the first column holds the raw user (item) ids, as
the ratings file writes them, each other column one categorical feature. A nonempty cell
``value`` in column ``name`` is the feature ``name=value`` with weight 1; an empty cell is no
feature. Training reads every feature of the file into a vocabulary (sorted, saved in the
model file's metadata), so that a features row read later (``sparseopt recommend --users ID
--user-features FILE`` for a user the ratings never named) maps to the same columns; a value
that training never saw has no vector and is left out. The columns are the vocabulary's rather
than hashed: features files are small, and exact columns have no collisions.

Every id must appear once; at training, every id must be one of the ratings file's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .._runs import PipelineError
from ._ratings_files import IdMap, feature_matrix, is_int64


def read_feature_rows(path, id_kind: str, what: str):
    """(raw ids, each row's ``name=value`` features) of a features file; ``id_kind``: "int"
    or "str", as the model's ids; ``what``: "user" or "item", named in errors."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such {what} features file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise PipelineError(f"{path}: not a CSV file of {what} features ({exc})") from None
    if frame.shape[1] < 2:
        raise PipelineError(
            f"{path}: a {what} features file has a header line, then an id column and at "
            f"least one feature column"
        )
    raw = [t.strip() for t in frame.iloc[:, 0]]
    if id_kind == "int":
        for line, t in enumerate(raw, start=2):
            if not is_int64(t):
                raise PipelineError(
                    f"{path}, line {line}: {what} id {t[:40]!r} is not a 64-bit integer, as "
                    f"the ratings' ids are"
                )
        ids = np.array([int(t) for t in raw], dtype=np.int64)
    else:
        ids = np.array(raw, dtype=object)
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        twice = ids[first[np.argmax(counts > 1)]]
        twice = twice.item() if isinstance(twice, np.generic) else twice
        raise PipelineError(f"{path}: {what} id {twice!r} has more than one features row")
    names = list(frame.columns[1:])
    features = [
        [f"{name}={value.strip()}" for name, value in zip(names, row, strict=True)
         if value.strip()]
        for row in frame.iloc[:, 1:].itertuples(index=False, name=None)
    ]  # fmt: skip
    return ids, features


def training_features(path, ids: IdMap, what: str):
    """(features of every row of ``ids`` as CSR, the vocabulary) from a features file; a row
    the file does not name has no features (its identity alone)."""
    raw, features = read_feature_rows(path, ids.kind, what)
    if raw.size == 0:
        raise PipelineError(f"{path}: the {what} features file names no {what}")
    index, known = ids.lookup(raw)
    if not known.all():
        unknown = raw[np.argmin(known)]
        unknown = unknown.item() if isinstance(unknown, np.generic) else unknown
        raise PipelineError(
            f"{path}: {what} id {unknown!r} does not appear in the ratings file (a features "
            f"row at training describes a {what} of the ratings)"
        )
    vocabulary = sorted({name for names in features for name in names})
    rows = feature_matrix(features, vocabulary)
    order = np.zeros(len(ids), np.int64)
    order[index] = np.arange(index.size)
    named = np.zeros(len(ids), bool)
    named[index] = True
    full = rows[order]
    full = sp.diags(named.astype(np.float32)) @ full  # rows the file does not name: empty
    return sp.csr_matrix(full, dtype=np.float32), vocabulary


def scoring_features(args, rm):
    """(user features, item features) of the files that ``args`` names (``--user-features``,
    ``--item-features``; None where none is named), each as :func:`read_feature_rows` reads
    it, for scoring ids that the model ``rm`` (a RatingsModel) does not know."""
    out = []
    for what, ids in (("user", rm.users), ("item", rm.items)):
        path = getattr(args, f"{what}_features", None)
        if path is None:
            out.append(None)
            continue
        if not (rm.features or {}).get(what):
            raise PipelineError(
                f"{args.model} was trained without --{what}-features: it scores no {what} "
                f"features"
            )
        out.append(read_feature_rows(path, ids.kind, what))
    return tuple(out)
