"""Feature crosses (interactions): a feature per combination of two or three fields' values.

A cross of fields ``(a, b)`` is a field of its own, numbered after the input fields (the
``k``-th cross is field ``n_fields + k``, so ``field_aware=True`` gives it its own slice of
columns and ``inspect`` names it). Its value in a row is hashed from the values' hashes, never
from a string built per row: with ``h_a`` and ``h_b`` the 32-bit hashes of the two (field,
value) pairs (see :mod:`._hashing`), the cross's hash is MurmurHash3 x86_32 of the 8 bytes
``h_a, h_b`` (little-endian uint32 each; 12 bytes for a triple) seeded by the cross's field,
that is ``sklearn.utils.murmurhash3_32(struct.pack("<2I", h_a, h_b), seed=n_fields + k,
positive=True)``, then mapped to a column as any field's hash. A cross is absent where one of
its fields is (an empty numeric value), and its value is the product of the fields' values
(1 for a categorical), as Vowpal Wabbit's ``-q`` multiplies them.
"""

from itertools import combinations

import numba
import numpy as np

from .._jit import JIT
from ._hashing import finish_hash, mix_block, to_column

MAX_ORDER = 3  # pairs and triples; more fields per cross would be mostly unseen combinations
# every cross is a column of the readers' per-row tables: "all" over 1,000 fields would be
# half a million per row
MAX_CROSSES = 10_000
CROSS_NAME_SEP = " x "
# a cross token's value keeps its fields' texts apart with this byte (see FieldHasher tokens)
CROSS_VALUE_SEP = "\x1f"


def parse_interactions(interactions, field_names):
    """The crosses named by ``interactions``, as tuples of field indices.

    Parameters
    ----------
    interactions : str, sequence of str or of sequences of names, or None
        ``"site_id*app_id,device_model*hour"`` (or the list of its items): ``*`` joins the
        fields of one cross (two or three); ``"all"``: every pair of fields; ``"name*"``: the
        field ``name`` with every other field. A sequence of names (``("a", "b")``) is one
        cross, for names holding ``*`` or ``,``.
    field_names : sequence of str
        The input fields, in field order.

    Returns
    -------
    crosses : tuple of tuples of int
        One tuple of 2 or 3 field indices per cross, in the order named.

    Raises
    ------
    ValueError
        On an unknown field, a field crossed with itself, a cross named twice, a cross of
        more than three fields, or more than ``MAX_CROSSES`` crosses.
    """
    names = [str(n) for n in field_names]
    if interactions is None:
        return ()
    if isinstance(interactions, str):
        items = [item.strip() for item in interactions.split(",") if item.strip()]
    else:
        items = list(interactions)
    crosses = []
    for item in items:
        if isinstance(item, str):
            if item == "all":
                crosses.extend(combinations(range(len(names)), 2))
                continue
            parts = [p.strip() for p in item.split("*")]
            if len(parts) == 2 and parts[1] == "" and parts[0]:
                f = _field_index(parts[0], names, item)
                crosses.extend((f, g) if f < g else (g, f) for g in range(len(names)) if g != f)
                continue
        else:
            parts = [str(p) for p in item]
        if not 2 <= len(parts) <= MAX_ORDER:
            raise ValueError(
                f"interactions: {item!r} crosses {len(parts)} fields; a cross joins 2 or "
                f"{MAX_ORDER} fields with '*' (as 'site_id*app_id')"
            )
        fields = tuple(_field_index(p, names, item) for p in parts)
        if len(set(fields)) != len(fields):
            raise ValueError(
                f"interactions: {item!r} crosses the field {names[fields[0]]!r} with itself "
                f"(a cross joins different fields)"
                if len(set(fields)) == 1
                else f"interactions: {item!r} names a field twice"
            )
        crosses.append(fields)
    if len(crosses) > MAX_CROSSES:
        raise ValueError(
            f"interactions: {len(crosses):,} crosses, more than the {MAX_CROSSES:,} a row can "
            f"hold: name the pairs (or use 'name*' for a few fields) instead of 'all'"
        )
    seen = set()
    for cross in crosses:
        key = tuple(sorted(cross))
        if key in seen:
            raise ValueError(f"interactions: the cross {cross_name(cross, names)!r} is named twice")
        seen.add(key)
    return tuple(tuple(int(f) for f in c) for c in crosses)


def _field_index(name, names, item):
    if name not in names:
        shown = names if len(names) <= 40 else names[:40] + ["..."]
        raise ValueError(
            f"interactions: {item!r} names the unknown field {name!r}; the fields are {shown}"
        )
    return names.index(name)


def cross_name(cross, field_names):
    """``"site_id x app_id"``: the name of a cross's field."""
    return CROSS_NAME_SEP.join(str(field_names[f]) for f in cross)


def cross_table(crosses):
    """The crosses as an (n_crosses, MAX_ORDER) int64 array for the kernel, -1 padded."""
    table = np.full((len(crosses), MAX_ORDER), -1, dtype=np.int64)
    for k, cross in enumerate(crosses):
        table[k, : len(cross)] = cross
    return table


@numba.njit(**JIT)
def add_crosses(hashes, cols, vals, table, n_rows, n_bits, slice_size, with_values):
    """Write each cross's column into ``cols[r, n_fields + k]`` (``n_fields``: the columns of
    ``hashes``, the input fields' 32-bit hashes) for the first ``n_rows`` rows; absent
    (``2**n_bits``) where a field of the cross is. With ``with_values`` the cross's value, the
    product of its fields' values, goes into ``vals``.

    The hash is computed here, not in a helper taking the arrays: a compiled call that
    receives an array costs atomic reference counts, several times the hash's own cost.
    """
    n_fields = hashes.shape[1]
    absent = cols.dtype.type(np.int64(1) << n_bits)
    for r in range(n_rows):
        for k in range(table.shape[0]):
            slot = n_fields + k
            h = np.uint32(slot)
            n = 0
            value = 1.0
            for j in range(table.shape[1]):
                f = table[k, j]
                if f < 0:
                    break
                if cols[r, f] == absent:
                    n = -1
                    break
                h = mix_block(h, hashes[r, f])
                n += 4
                if with_values:
                    value *= vals[r, f]
            if n < 0:
                cols[r, slot] = absent
                continue
            h = finish_hash(h, np.uint32(0), n)
            cols[r, slot] = to_column(h, slot, n_bits, slice_size)
            if with_values:
                vals[r, slot] = value
