"""Ratings files and the model files of ``sparseopt train --model mf``: raw ids in and out.

Files
-----
One ``user<sep>item[<sep>rating[<sep>...]]`` line per interaction; later columns (a timestamp)
are ignored. The separator is ``--sep``, else the first of ``::``, tab, comma and semicolon
found in the first line. The first line is a header when none of its fields is a number and
either a field of the second line is one or its first field is named ``user``, ``userId``,
``users`` or ``uid`` (the commands then say which line they skipped); a first line with a
number is data, read and checked as any other line. MovieLens files
(``u.data``, ``uN.base``/``.test``, ``ratings.dat``, ``ratings.csv`` with its
``userId,movieId,rating,timestamp`` header) are read by
:func:`sparseopt.datasets.load_movielens` and :func:`~sparseopt.datasets._movielens.
read_movielens_ratings`; other files by pyarrow's CSV reader. Ids are integers, or text when
any id of the training file is not an integer. Without a rating column every line is worth 1.

Ids
---
Raw ids become rows and columns as :func:`~sparseopt.datasets.load_movielens` maps them: in a
MovieLens 100K folder (``u.info`` beside the file), row = id - 1 for every user and item the
folder counts, so that ``u1.base`` trains exactly the matrix of
``load_movielens_split(folder, "u1")``; otherwise the distinct ids in increasing order. The
two maps (sorted ids) are saved in the model file's metadata, so that ``predict``,
``recommend`` and ``evaluate`` take raw ids. A model saved by ``MatrixFactorization.save``
itself has no maps: its ids are its 0-based row and column indices.

``recommend --n`` gives at most the model's items. A ``u.info`` is read as untrusted as the
ratings: counts above ``_MAX_INFO_COUNT`` and ids beyond its counts are refused.

Unknown ids follow the estimator's rule for a user or item without interactions: it is
scored by the biases alone. A pair with an unknown user scores ``global_mean_ + b_i``, with an
unknown item ``global_mean_ + b_u``, with both unknown ``global_mean_`` (clipped to the
training ratings for the squared loss); an unknown user's recommendations are the items with
the largest ``b_i``. The commands count such pairs and users in their report line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.sparse as sp

from .. import _io
from .._runs import PipelineError
from ..pipeline import METADATA_VERSION

KIND = "mf"
_SEPARATORS = ("::", "\t", ",", ";")
_USER_COLUMNS = {"user", "userid", "users", "uid"}
_MOVIELENS_CSV_HEADER = ["userid", "movieid", "rating", "timestamp"]


# --- reading -------------------------------------------------------------------------------
@dataclass
class Ratings:
    """The columns of a ratings file: raw ids (int64, or object arrays of str) and values."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    n_bad_lines: int = 0

    def __len__(self) -> int:
        return self.values.size


@dataclass
class _Layout:
    sep: str
    n_columns: int
    header: bool
    movielens: bool
    header_text: str | None = None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _layout(path, sep=None) -> _Layout:
    """How ``path`` is laid out, from its first line."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    with open(path, "rb") as f:
        first, second = (f.readline().decode("utf-8", "replace").rstrip("\r\n") for _ in "12")
    first = first.removeprefix("\ufeff")  # a UTF-8 byte-order mark (pyarrow skips it too)
    if not first.strip():
        raise PipelineError(f"{path}: empty first line; expected user,item[,rating] lines")
    if sep == "":
        raise PipelineError("--sep must be one character (or ::), got ''")
    if sep is None:
        sep = next((s for s in _SEPARATORS if s in first), None)
        if sep is None:
            raise PipelineError(
                f"{path}: no separator (tab, comma, semicolon or ::) in the first line "
                f"{first[:80]!r}; give --sep"
            )
    fields, below = first.split(sep), second.split(sep)
    if len(fields) < 2:
        raise PipelineError(
            f"{path}: the first line {first[:80]!r} has no {sep!r} between a user and an item"
        )
    # a header: no number at all, and words above numbers or a first field named like a user
    # column (a malformed first line with a number in it is data, and fails as such)
    header = not any(_is_number(a) for a in fields) and (
        any(_is_number(b) for b in below)
        or fields[0].strip().lower().replace("_", "") in _USER_COLUMNS
    )
    four = len(fields) == 4
    movielens = (
        (sep in ("::", "\t") and four and not header)
        or (sep == "," and header and [f.strip().lower() for f in fields] == _MOVIELENS_CSV_HEADER)
    )  # fmt: skip
    return _Layout(sep, len(fields), header, movielens, first if header else None)


def read_ratings(path, *, sep=None, id_type=None, skip_bad_lines=False) -> Ratings:
    """The raw ids and ratings of ``path`` (see the module docstring for the layouts).

    ``id_type``: ``"int"`` or ``"str"`` to read ids as a model's maps hold them; None infers
    (integers, else text). With ``skip_bad_lines``, lines with the wrong number of fields or a
    missing value are skipped and counted; a value that does not parse stops the read.
    """
    layout = _layout(path, sep)
    if layout.movielens and not skip_bad_lines and id_type != "str":
        from ..datasets._movielens import read_movielens_ratings

        try:
            cols = read_movielens_ratings(path)
        except ValueError as exc:
            raise _bad_line_error(Path(path), layout, "int", exc) from None
        return Ratings(cols["user"], cols["item"], cols["rating"].astype(np.float32))
    return _read_generic(Path(path), layout, id_type, skip_bad_lines)


def _read_generic(path: Path, layout: _Layout, id_type, skip_bad_lines) -> Ratings:
    bad = []

    def invalid(row):
        bad.append(row)
        return "skip" if skip_bad_lines else "error"

    if layout.sep == "::":  # "a::b::c" split on ':' gives a, '', b, '', c
        delimiter, n = ":", 2 * layout.n_columns - 1
        wanted = [0, 2, 4][: min(layout.n_columns, 3)]
    else:
        delimiter, n = layout.sep, layout.n_columns
        wanted = [0, 1, 2][: min(layout.n_columns, 3)]
    if len(delimiter) != 1:
        raise PipelineError(f"--sep must be one character (or ::), got {layout.sep!r}")
    names = [f"f{k}" for k in range(n)]
    roles = dict(zip(("user", "item", "rating"), (names[k] for k in wanted), strict=False))
    ids = {"int": pa.int64(), "str": pa.string()}.get(id_type)
    types = {roles["user"]: ids, roles["item"]: ids} if ids is not None else {}
    if "rating" in roles:
        types[roles["rating"]] = pa.float32()
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(layout.header)),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char=False, invalid_row_handler=invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(roles.values())
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if bad and not skip_bad_lines:
            row = bad[0]
            where = "a line" if row.number is None else f"line {row.number}"
            raise PipelineError(
                f"{path}: {where} has {row.actual_columns} fields, expected "
                f"{row.expected_columns} (user, item[, rating]...; the first line decides): "
                f"{row.text[:80]!r} (--skip-bad-lines skips such lines)"
            ) from None
        raise _bad_line_error(path, layout, id_type, exc, skip_bad_lines) from None
    columns = {role: table.column(name) for role, name in roles.items()}
    missing = np.zeros(table.num_rows, dtype=bool)
    for column in columns.values():
        missing |= column.is_null().to_numpy(zero_copy_only=False)
    out = {}
    for role in ("user", "item"):
        column = columns[role]
        if pa.types.is_integer(column.type):
            out[role] = column.fill_null(0).to_numpy().astype(np.int64)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = column.to_numpy(zero_copy_only=False)
            missing |= np.array([not v for v in values], dtype=bool)  # None or ""
            out[role] = values.astype(object)
        else:  # all empty (null type), or numbers that are not integers
            raise PipelineError(
                f"{path}: the {role} ids (column {wanted[0 if role == 'user' else 1] + 1}) are "
                f"not integers nor text (pyarrow read them as {column.type})"
            )
    if "rating" in columns:
        values = columns["rating"].fill_null(np.nan).to_numpy().astype(np.float32)
        missing |= ~np.isfinite(values)
    else:
        values = np.ones(table.num_rows, np.float32)
    n_bad = len(bad)
    if missing.any():
        if not skip_bad_lines:
            raise _bad_line_error(path, layout, id_type, None)
        keep = ~missing
        out = {role: v[keep] for role, v in out.items()}
        values = values[keep]
        n_bad += int(missing.sum())
    return Ratings(out["user"], out["item"], values, n_bad)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def is_int64(text: str) -> bool:
    """Whether ``text`` is a 64-bit integer in digits 0-9 (``int`` also takes "1_0")."""
    return bool(_INTEGER.fullmatch(text)) and -(2**63) <= int(text) < 2**63


# the most users or items a u.info may count: MovieLens 100K's are 943 and 1,682, and ids map
# to rows up to the counts, so a damaged count must not size the model
_MAX_INFO_COUNT = 10_000_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _bad_line_error(path: Path, layout: _Layout, id_type, exc, skip_bad_lines=False):
    """A PipelineError naming the file, line and fault of the first line that the readers
    refuse (found by reading the file again, line by line: only when reading failed);
    ``exc``'s message where no line is at fault."""
    found = _first_bad_line(path, layout, id_type, skip_bad_lines)
    if found is None:
        what = exc or "an empty id or a rating that is not a finite number"
        return PipelineError(f"{path}: malformed ratings: {what}")
    number, text, fault, skippable = found
    skip = " (--skip-bad-lines skips such lines)" if skippable else ""
    return PipelineError(f"{path}, line {number}: {fault}: {text[:80]!r}{skip}")


def _first_bad_line(path: Path, layout: _Layout, id_type, skip_bad_lines):
    """``(line number, text, fault, skippable)`` of the first line that the readers refuse:
    with the wrong number of fields, an empty id or rating, or a rating that is not a finite
    float32 (lines that ``skip_bad_lines`` skips: ``skippable``), or with a rating that is no
    number, an id that is not a 64-bit integer (``id_type="int"``) or (MovieLens files) a
    timestamp that is not an integer; None if there is none."""
    integers = id_type == "int"
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if number == 1:
                if layout.header:
                    continue
                text = text.removeprefix("\ufeff")
            if not text:
                continue  # pyarrow skips empty lines
            fault, skippable = _line_fault(text.split(layout.sep), layout, integers)
            if fault is not None and not (skippable and skip_bad_lines):
                return number, text, fault, skippable
    return None


def _line_fault(fields: list, layout: _Layout, integers: bool):
    """``(fault, skippable)`` of one line's fields, ``(None, False)`` for a good line."""
    if len(fields) != layout.n_columns:
        return f"{len(fields)} fields, expected {layout.n_columns}", True
    for role, value in zip(("user", "item"), fields, strict=False):
        value = value.strip()  # as pyarrow reads numbers
        if not value:
            return f"an empty {role} id", True
        if integers and not is_int64(value):
            return f"the {role} id {value[:40]!r} is not a 64-bit integer", False
    if layout.n_columns >= 3:
        text = fields[2].strip()
        if not text:
            return "an empty rating", True
        try:
            rating = float(text)
        except ValueError:
            return f"the rating {text[:40]!r} is not a number", False
        if not abs(rating) <= _FLOAT32_MAX:
            return f"the rating {text[:40]!r} is not a finite number", True
    if layout.movielens and not _INTEGER.fullmatch(fields[3].strip()):
        return f"the timestamp {fields[3][:40]!r} is not an integer", False
    return None, False


# --- ids -----------------------------------------------------------------------------------
class IdMap:
    """Raw ids (sorted, distinct) of the rows or columns of a model, and their lookup."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    @property
    def kind(self) -> str:
        return "str" if self.ids.dtype == object else "int"

    def __len__(self) -> int:
        return self.ids.size

    def lookup(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices, known): the index of each raw id, ``known`` False (index 0) for others."""
        if self.ids.size == 0 or (raw.dtype == object and self.kind == "int"):
            return np.zeros(raw.size, np.int64), np.zeros(raw.size, bool)  # text is no int id
        if raw.dtype != object and self.kind == "str":
            raw = raw.astype(str).astype(object)
        idx = np.minimum(np.searchsorted(self.ids, raw), self.ids.size - 1)
        known = self.ids[idx] == raw
        return np.where(known, idx, 0).astype(np.int64), np.asarray(known, dtype=bool)

    def to_json(self) -> list:
        return self.ids.tolist()

    @classmethod
    def from_json(cls, value, n: int, what: str) -> IdMap:
        """The map stored in a model file, checked: ``n`` distinct, sorted ids, all integers
        or all text."""
        if not isinstance(value, list) or len(value) != n:
            raise ValueError(f"{what} ids must be a list of {n} ids")
        if all(type(v) is int for v in value):
            ids = np.array(value, dtype=np.int64) if value else np.zeros(0, np.int64)
        elif all(isinstance(v, str) for v in value):
            ids = np.array(value, dtype=object)
        else:
            raise ValueError(f"{what} ids must be all integers or all text")
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError(f"{what} ids are not sorted and distinct")
        return cls(ids)


def _uses_offset(path) -> bool:
    """Whether ``path`` lies in a MovieLens 100K folder (a ``u.info`` with the counts of
    users and items beside it), whose ids load_movielens offsets."""
    from ..datasets._movielens import _read_info

    return _read_info(Path(path).parent) is not None


def ratings_matrix(path, *, sep=None, skip_bad_lines=False, duplicates="refuse"):
    """The training matrix of ``path`` and its id maps, as load_movielens maps ids.

    Returns ``(X, users, items, n_bad_lines)``: CSR of shape (users, items), float32.
    ``duplicates``: ``"refuse"`` a repeated (user, item) pair (ratings), or ``"sum"`` them
    (implicit weights, as the estimator sums them).
    """
    from ..datasets import load_movielens
    from ..datasets._movielens import _read_info

    layout = _layout(path, sep)
    offset = _uses_offset(path)
    if offset:
        shape = _read_info(Path(path).parent)
        if max(shape) > _MAX_INFO_COUNT:  # u.info is read as untrusted as the file
            raise PipelineError(
                f"{Path(path).parent / 'u.info'} counts {shape[0]:,} users and {shape[1]:,} "
                f"items, more than a MovieLens 100K folder holds (at most {_MAX_INFO_COUNT:,})"
            )
    if layout.movielens and not skip_bad_lines and duplicates == "refuse":
        ids = "offset" if offset else "compact"
        try:
            X, users, items = load_movielens(path, ids=ids, return_ids=True)
        except ValueError as exc:
            if _first_bad_line(Path(path), layout, "int", False) is None:
                raise PipelineError(str(exc)) from None  # not a line: repeated pairs...
            raise _bad_line_error(Path(path), layout, "int", exc) from None
        return X.astype(np.float32), IdMap(users), IdMap(items), 0
    cols = read_ratings(path, sep=sep, skip_bad_lines=skip_bad_lines)
    if len(cols) == 0:
        raise PipelineError(f"{path} has no ratings to train on")
    if offset and cols.users.dtype != object and cols.items.dtype != object:
        shape = _read_info(Path(path).parent)
        if min(cols.users.min(), cols.items.min()) < 1:
            raise PipelineError(f"{path}: ids below 1 in a MovieLens 100K folder")
        largest = (int(cols.users.max()), int(cols.items.max()))
        if largest[0] > shape[0] or largest[1] > shape[1]:  # as load_movielens refuses them
            raise PipelineError(
                f"{path}: ids up to {largest} (users, items) do not fit the {shape[0]} users "
                f"and {shape[1]} items of u.info beside it; a file of another dataset does "
                "not belong in a MovieLens 100K folder"
            )
        users, items = IdMap(np.arange(1, shape[0] + 1)), IdMap(np.arange(1, shape[1] + 1))
        rows, columns = cols.users - 1, cols.items - 1
    else:
        user_ids, rows = np.unique(cols.users, return_inverse=True)
        item_ids, columns = np.unique(cols.items, return_inverse=True)
        users, items = IdMap(user_ids), IdMap(item_ids)
    X = sp.coo_matrix((cols.values, (rows, columns)), shape=(len(users), len(items))).tocsr()
    if duplicates == "refuse" and X.nnz != len(cols):
        raise PipelineError(
            f"{path}: {len(cols) - X.nnz} repeated (user, item) pairs; with --loss squared "
            "each pair holds one rating (keep the latest, or their mean)"
        )
    X.sort_indices()
    return X.astype(np.float32), users, items, cols.n_bad_lines


# --- model files ---------------------------------------------------------------------------
@dataclass
class RatingsModel:
    """A MatrixFactorization and what the command knows around it."""

    model: object
    users: IdMap
    items: IdMap
    min_rating: float | None = None
    n_interactions: int | None = None
    # the vocabularies of the side features ({"user": [...], "item": [...]}), if trained with
    # them (sparseopt.cli._side_features)
    features: dict | None = None

    @property
    def loss(self) -> str:
        return self.model.get_params()["loss"]

    def score(self, users_raw, items_raw, user_features=None, item_features=None):
        """Scores of raw (user, item) pairs; returns (scores, number of pairs with an
        unknown id scored by the biases alone, as the module docstring says).

        ``user_features`` and ``item_features``: (raw ids, features) of features files
        (:func:`~sparseopt.cli._side_features.read_feature_rows`); a user (item) the model
        does not know but a file names is scored from its features."""
        m = self.model
        u, known_u = self.users.lookup(users_raw)
        i, known_i = self.items.lookup(items_raw)
        s = np.empty(u.size, dtype=np.float64)
        if self.features is None:  # read_new_features refused feature files for it
            both = known_u & known_i
            if both.any():
                s[both] = m.predict(u[both], i[both])
            rest = ~both
            bu = np.where(known_u, m.user_biases_[u], 0.0)
            bi = np.where(known_i, m.item_biases_[i], 0.0)
            cold = m.global_mean_ + bu[rest].astype(np.float64) + bi[rest].astype(np.float64)
            if self.loss == "squared":
                cold = np.clip(cold, *m.rating_range_)
            s[rest] = cold
            return s, int(rest.sum())
        # side features: an id the model does not know is its features row (empty if no file
        # names it: the biases alone), and each of the four kinds of pairs is one predict
        user_rows, named_u = self._feature_rows("user", users_raw, user_features)
        item_rows, named_i = self._feature_rows("item", items_raw, item_features)
        for new_user in (False, True):
            for new_item in (False, True):
                use = (~known_u if new_user else known_u) & (~known_i if new_item else known_i)
                if not use.any():
                    continue
                at = np.flatnonzero(use)
                rows = np.arange(at.size)
                s[use] = m.predict(
                    rows if new_user else u[use], rows if new_item else i[use],
                    user_features=user_rows[at] if new_user else None,
                    item_features=item_rows[at] if new_item else None,
                )  # fmt: skip
        return s, int(((~known_u & ~named_u) | (~known_i & ~named_i)).sum())

    def _feature_rows(self, side, raw_ids, given):
        """(a features matrix with one row per id of ``raw_ids``, whether ``given`` (raw
        ids, features) of a features file names the id; None: no file)."""
        vocabulary = (self.features or {}).get(side) or []
        if given is None:
            return sp.csr_matrix((len(raw_ids), len(vocabulary)), dtype=np.float32), np.zeros(
                len(raw_ids), bool)  # fmt: skip
        raw, features = given
        at, named = IdMap(np.sort(raw)).lookup(np.asarray(raw_ids))
        by_sorted = np.argsort(raw, kind="stable")
        rows = [features[by_sorted[a]] if ok else [] for a, ok in zip(at, named, strict=True)]
        return feature_matrix(rows, vocabulary), named

    def recommend(self, users_raw, n, exclude_seen=True, user_features=None,
                  item_features=None):  # fmt: skip
        """Top-``n`` candidates per raw user (at most as many as the candidates; -1 fills),
        the number of unknown users given the items of largest bias, and the candidates' raw
        ids. Unknown users named by ``user_features`` (see :meth:`score`) are recommended for
        from their features; the items of ``item_features`` that the model does not know join
        the candidates, scored from their features."""
        candidates = self.items.ids
        if item_features is not None:
            raw = item_features[0]
            candidates = np.concatenate([candidates, np.unique(raw[~self.items.lookup(raw)[1]])])
        n = min(n, candidates.size)
        u, known = self.users.lookup(users_raw)
        out = np.full((u.size, n), -1, dtype=np.int64)
        if known.any():
            out[known] = self.model.recommend(u[known], n=n, exclude_seen=exclude_seen)
        if user_features is not None:
            rows, featured = self._feature_rows("user", users_raw, user_features)
            use = ~known & featured
            if use.any():
                out[use] = self.model.recommend(user_features=rows[np.flatnonzero(use)], n=n)
            known = known | use
        if not known.all():  # a cold user: the items by bias, ties to the lower index
            bias = self.model.item_biases_.astype(np.float64)
            order = np.lexsort((np.arange(bias.size), -bias))[:n]
            out[~known, : order.size] = order
        if candidates.size > len(self.items):
            out = self._merge_new_items(users_raw, out, candidates, n,
                                        (user_features, item_features))  # fmt: skip
        return out, int((~known).sum()), candidates

    def _merge_new_items(self, users_raw, top, candidates, n, features):
        """``top`` (fitted items) and every candidate past the fitted items, merged by score
        into the top ``n`` per user (ties to the lower candidate index)."""
        n_fitted, n_users = len(self.items), len(users_raw)
        new = np.arange(n_fitted, candidates.size)
        picks = np.hstack([top, np.tile(new, (n_users, 1))])
        users = np.repeat(np.asarray(users_raw), picks.shape[1])
        scores, _ = self.score(users, candidates[np.maximum(picks, 0)].ravel(), *features)
        scores = scores.reshape(picks.shape)
        scores[picks < 0] = -np.inf
        order = np.lexsort((picks, -scores), axis=1)[:, :n]
        out = np.take_along_axis(picks, order, axis=1)
        out[np.take_along_axis(scores, order, axis=1) == -np.inf] = -1
        return out


def save(model, path, users: IdMap, items: IdMap, min_rating, n_interactions,
         features=None) -> None:  # fmt: skip
    """``model.save(path)`` with the id maps (and what inspect shows) in its metadata, and
    the side features' vocabularies (``features``) if any."""
    metadata = {
        "version": METADATA_VERSION,
        "model": KIND,
        "ratings": {
            "users": users.to_json(),
            "items": items.to_json(),
            "min_rating": min_rating,
            "n_interactions": n_interactions,
        },
    }
    if features is not None:
        metadata["ratings"]["features"] = features
    with _io.model_metadata(metadata):
        model.save(path)


def save_checked(model, path, users: IdMap, items: IdMap, min_rating, n_interactions,
                 features=None) -> None:  # fmt: skip
    """:func:`save` through a temporary file that is loaded back (:func:`load`, which checks
    the file as untrusted) before it takes ``path``'s place: a model file that could not be
    loaded is never written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save(model, tmp, users, items, min_rating, n_interactions, features)
        try:
            load(tmp)
        except ValueError as exc:
            raise PipelineError(
                f"the trained model does not load back ({exc}); nothing was saved"
            ) from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _header_note(path, sep) -> str:
    """What the commands say when the first line of ``path`` was read as a header."""
    text = _layout(path, sep).header_text
    return "" if text is None else f" (line 1 read as a header: {text[:60]!r})"


def _metadata(path) -> dict:
    if not Path(path).is_file():
        raise PipelineError(f"{path}: no such model file")
    return _io.read_metadata(path) or {}


def is_ratings_model(path) -> bool:
    """Whether ``path`` holds a MatrixFactorization (``sparseopt train --model mf`` or its
    own ``save``)."""
    meta = _metadata(path)
    if "model" in meta:
        return meta["model"] == KIND
    import sparseopt

    return isinstance(sparseopt.load(path), sparseopt.MatrixFactorization)


def load(path) -> RatingsModel:
    """Load an mf model file with its id maps (checked: the file is untrusted)."""
    import sparseopt

    meta = _metadata(path)
    model = sparseopt.load(path)
    if not isinstance(model, sparseopt.MatrixFactorization):
        kind = meta.get("model", type(model).__name__)
        raise PipelineError(
            f"{path} holds a {type(model).__name__} (model {kind}); recommend works on a model "
            "of sparseopt train --model mf"
        )
    version = meta.get("version", METADATA_VERSION)
    if type(version) is int and version > METADATA_VERSION:
        raise PipelineError(f"{path} was written by a newer sparseopt; upgrade sparseopt")
    if "ratings" not in meta:  # saved by MatrixFactorization.save: ids are indices
        ids = IdMap(np.arange(model.n_users_)), IdMap(np.arange(model.n_items_))
        return RatingsModel(model, *ids)
    try:
        ratings = meta["ratings"]
        keys = {"users", "items", "min_rating", "n_interactions"}
        if not isinstance(ratings, dict) or not keys <= set(ratings) <= keys | {"features"}:
            raise ValueError(f"it must hold {sorted(keys)} (and features, with side features)")
        users = IdMap.from_json(ratings["users"], model.n_users_, "user")
        items = IdMap.from_json(ratings["items"], model.n_items_, "item")
        min_rating = ratings["min_rating"]
        if min_rating is not None and not (
            isinstance(min_rating, int | float) and not isinstance(min_rating, bool)
        ):
            raise ValueError("min_rating must be a number or null")
        n_interactions = ratings["n_interactions"]
        if type(n_interactions) is not int or n_interactions < 0:
            raise ValueError("n_interactions must be a count")
        features = ratings.get("features")
        if features is not None:
            features = _checked_features(model, features)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PipelineError(f"{path}: the id maps in the file are damaged: {exc}") from None
    return RatingsModel(model, users, items, min_rating, n_interactions, features)


def _checked_features(model, features) -> dict:
    """The side features' vocabularies of a model file, checked against the model's feature
    columns."""
    if not isinstance(features, dict) or set(features) != {"user", "item"}:
        raise ValueError("features must hold the user and item vocabularies")
    if "feature_columns" not in model.tables_:
        raise ValueError("the model has no side features, the metadata names some")
    columns = model.tables_["feature_columns"]
    return {side: check_vocabulary(features[side], int(columns[n]), side)
            for n, side in enumerate(("user", "item"))}  # fmt: skip


# --- metrics -------------------------------------------------------------------------------
def evaluate_ratings(rm: RatingsModel, cols: Ratings, features=(None, None)) -> dict:
    """RMSE and MAE (squared loss) or ranking metrics at 10 (implicit losses) on ``cols``;
    ``features``: the user and item features of :meth:`RatingsModel.score`."""
    from ..metrics import mae, rmse

    if len(cols) == 0:
        raise PipelineError("no ratings to evaluate")
    if rm.loss == "squared":
        scores, unknown = rm.score(cols.users, cols.items, *features)
        y = cols.values.astype(np.float64)
        return {
            "n_ratings": len(cols),
            "rmse": rmse(y, scores),
            "mae": mae(y, scores),
            "n_unknown": unknown,
        }
    return _ranking(rm, cols)


def _ranking(rm: RatingsModel, cols: Ratings, k=10) -> dict:
    """Precision, recall and NDCG at ``k`` of the recommendations (training items excluded)
    against the positives of ``cols`` (ratings >= the model's --min-rating, if any), over
    the known users that have one; pairs with an unknown id are left out and counted."""
    from ..metrics import ndcg_at_k, precision_at_k, recall_at_k

    model = rm.model
    u, known_u = rm.users.lookup(cols.users)
    i, known_i = rm.items.lookup(cols.items)
    positive = cols.values >= rm.min_rating if rm.min_rating is not None else cols.values > 0
    keep = known_u & known_i & positive
    test = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (u[keep], i[keep])),
        shape=(model.n_users_, model.n_items_),
    )
    test.sum_duplicates()
    users = np.flatnonzero(np.diff(test.indptr))
    result = {"n_ratings": len(cols), "n_unknown": int((~(known_u & known_i)).sum())}
    result["n_users"] = int(users.size)
    if users.size == 0:
        raise PipelineError("no known user has a positive to rank in the evaluation file")
    rec = model.recommend(users, n=k)
    for name, metric in (("precision", precision_at_k), ("recall", recall_at_k),
                         ("ndcg", ndcg_at_k)):  # fmt: skip
        result[f"{name}@{k}"] = metric(test, rec, k=k, user_ids=users)
    return result


def feature_matrix(features, vocabulary) -> sp.csr_matrix:
    """One row per list of ``features``, one column per entry of ``vocabulary`` (sorted);
    features outside it are left out."""
    vocabulary = np.asarray(vocabulary, dtype=object)
    rows, cols = [], []
    for r, names in enumerate(features):
        if not names or vocabulary.size == 0:
            continue
        names = np.array(names, dtype=object)
        at = np.minimum(np.searchsorted(vocabulary, names), vocabulary.size - 1)
        found = vocabulary[at] == names
        rows.extend([r] * int(found.sum()))
        cols.extend(at[found].tolist())
    data = np.ones(len(rows), np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(features), vocabulary.size))


def check_vocabulary(value, n_columns: int, what: str) -> list:
    """A vocabulary stored in a model file, checked: ``n_columns`` sorted, distinct texts."""
    if value is None and n_columns == 0:
        return []
    if not isinstance(value, list) or len(value) != n_columns or not all(
        isinstance(v, str) for v in value
    ):
        raise ValueError(f"the {what} features must be a list of {n_columns} texts")
    if any(a >= b for a, b in zip(value, value[1:], strict=False)):
        raise ValueError(f"the {what} features are not sorted and distinct")
    return value
