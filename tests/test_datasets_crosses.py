"""Crosses, negative downsampling and weight columns of the readers and FieldHasher (issue 25)."""

import gzip
import io
import struct

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import murmurhash3_32

from sparseopt import FieldHasher, SparseLogisticRegression
from sparseopt.datasets import column_fields, load_tokens, read_criteo, read_csv, sample_path
from sparseopt.inspect import top_features

N_BITS = 20
MASK = (1 << N_BITS) - 1


def _h(text, field):
    return murmurhash3_32(text.encode(), seed=field, positive=True)


def _cross(hashes, field):
    """The documented cross hash: MurmurHash3 of the fields' hashes, seeded by its field."""
    return murmurhash3_32(struct.pack(f"<{len(hashes)}I", *hashes), seed=field, positive=True)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    """A CSV click log with categorical fields, a weight column and 0/1 labels."""
    rng = np.random.default_rng(0)
    n = 2_000
    frame = pd.DataFrame(
        {
            "click": (rng.random(n) < 0.2).astype(int),
            "site": rng.choice(["s1", "s2", "s3", "s4", ""], n),
            "app": rng.choice([f"a{i}" for i in range(7)], n),
            "hour": rng.integers(0, 24, n).astype(str),
            "w": rng.choice([0.5, 1.0, 2.0, 0.0], n),
        }
    )
    path = tmp_path_factory.mktemp("crosses") / "clicks.csv"
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path, dtype=str, keep_default_na=False)


def test_cross_columns_are_the_documented_hash_of_the_fields_hashes(clicks):
    path, frame = clicks
    reader = read_csv(path, "click", ["site", "app", "hour"], n_bits=N_BITS,
                      exclude=["w"], interactions="site*app,app*hour*site")  # fmt: skip
    X, _ = reader.read()
    assert reader.field_names[3:] == ["site x app", "app x hour x site"]
    for r in range(0, len(frame), 97):
        site, app, hour = (frame.loc[r, c] for c in ("site", "app", "hour"))
        expected = {_h(site, 0) & MASK, _h(app, 1) & MASK, _h(hour, 2) & MASK,
                    _cross([_h(site, 0), _h(app, 1)], 3) & MASK,
                    _cross([_h(app, 1), _h(hour, 2), _h(site, 0)], 4) & MASK}  # fmt: skip
        assert set(X[r].indices) == expected


def test_crosses_group_rows_as_hand_built_string_columns(clicks):
    """The cross "site x app" splits the rows as a column of the joined texts does."""
    path, frame = clicks
    X, _ = read_csv(path, "click", ["site", "app"], interactions="site*app").read()
    joined = frame["site"] + "\x00" + frame["app"]
    by_hand = FieldHasher(n_bits=N_BITS, numeric="categorical").fit_transform(
        pd.DataFrame({"site": frame["site"], "app": frame["app"], "both": joined})
    )
    cross_col = [(set(X[r].indices) - set(by_hand[r].indices)).pop() for r in range(len(frame))]
    hand_col = [(set(by_hand[r].indices) - set(X[r].indices)).pop() for r in range(len(frame))]
    pairs = set(zip(cross_col, hand_col, strict=True))
    assert len(pairs) == len(set(cross_col)) == len(set(hand_col)) == joined.nunique()


@pytest.mark.parametrize("field_aware", [False, True])
def test_field_hasher_crosses_equal_the_reader(clicks, field_aware):
    path, frame = clicks
    spec = "all"
    X_file, _ = read_csv(path, "click", ["site", "app", "hour"], field_aware=field_aware,
                         interactions=spec).read()  # fmt: skip
    hasher = FieldHasher(numeric="categorical", field_aware=field_aware, interactions=spec)
    X = hasher.fit_transform(frame[["site", "app", "hour"]])
    assert (X != X_file).nnz == 0 and hasher.crosses_ == ((0, 1), (0, 2), (1, 2))
    if field_aware:  # each cross in a slice of its own: fields 3, 4, 5
        fields = column_fields(N_BITS, 6)[X.indices].reshape(len(frame), -1)
        assert np.array_equal(np.sort(fields, axis=1), np.tile(np.arange(6), (len(frame), 1)))


def test_criteo_counts_cross_as_field_hasher_buckets():
    with gzip.open(sample_path("train"), "rt") as f:
        lines = [next(f) for _ in range(500)]
    names = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    df = pd.read_csv(io.StringIO("".join(lines)), sep="\t", header=None, names=names)
    spec = "I1*C1,C2*"
    hasher = FieldHasher(n_bits=18, numeric="bucket", interactions=spec)
    X = hasher.fit_transform(df.drop(columns="label"))
    path = sample_path("train")
    X_file, _ = read_criteo(path, n_bits=18, interactions=spec, chunk_size=500).chunks().__next__()
    assert (X != X_file).nnz == 0 and len(hasher.crosses_) == 1 + 38


def test_tokens_and_top_features_name_crosses(clicks, tmp_path):
    path, frame = clicks
    hasher = FieldHasher(numeric="categorical", keep_tokens=True, interactions="site*app")
    X = hasher.fit_transform(frame[["site", "app"]])
    model = SparseLogisticRegression(max_iter=2).fit(X, frame["click"].astype(int))
    top = top_features(model, hasher, n=None, field="site x app")
    assert len(top) == (frame["site"] + frame["app"]).nunique()
    assert top["value"].str.contains(" x ").all()
    hasher.tokens_.save(tmp_path / "tokens.npz")
    assert load_tokens(tmp_path / "tokens.npz").crosses == [[0, 1]]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("site*nope", "unknown field 'nope'"),
        ("site*site", "crosses the field 'site' with itself"),
        ("site*app,app*site", "named twice"),
        ("site*app*hour*site", "crosses 4 fields"),
        ("bogus*", "unknown field 'bogus'"),
    ],
)
def test_bad_interactions_are_named(clicks, spec, message):
    path, frame = clicks
    with pytest.raises(ValueError, match=message):
        read_csv(path, "click", ["site", "app", "hour"], interactions=spec)
    with pytest.raises(ValueError, match=message):
        FieldHasher(interactions=spec).fit(frame[["site", "app", "hour"]])


def test_negative_rate_keeps_positives_and_a_fraction_of_negatives(clicks):
    path, _ = clicks
    X_all, y_all = read_csv(path, "click", exclude=["w"]).read()
    reader = read_csv(path, "click", exclude=["w"], negative_rate=0.25, random_state=3)
    X, y = reader.read()
    assert y.sum() == y_all.sum()  # every positive
    n_neg = int((y_all == 0).sum())
    assert abs((y == 0).sum() - 0.25 * n_neg) < 4 * np.sqrt(0.25 * 0.75 * n_neg)
    assert reader.stats["n_dropped"] == n_neg - int((y == 0).sum())
    # the same lines for any block and chunk size; another seed keeps others
    again = read_csv(path, "click", exclude=["w"], negative_rate=0.25, random_state=3,
                     block_size=100, chunk_size=7).read()  # fmt: skip
    assert (again[0] != X).nnz == 0
    other = read_csv(path, "click", exclude=["w"], negative_rate=0.25, random_state=4).read()
    assert other[0].shape != X.shape or (other[0] != X).nnz


def test_a_dropped_negative_is_not_parsed(tmp_path):
    """Skipped after its label, before a field is read: a malformed dropped line passes."""
    path = tmp_path / "log.csv"
    path.write_text("click,site\n1,a\n0,b,extra\n")
    with pytest.raises(ValueError, match="line 3"):
        read_csv(path, "click").read()
    X, y = read_csv(path, "click", negative_rate=1e-9).read()
    assert list(y) == [1.0]


@pytest.mark.parametrize("rate", [0, -0.5, 1.5, float("nan"), "0.5", True])
def test_bad_negative_rate_is_named(clicks, rate):
    path, _ = clicks
    with pytest.raises(ValueError, match="negative_rate"):
        read_csv(path, "click", negative_rate=rate)


def test_weight_column_gives_weighted_chunks(clicks, tmp_path):
    path, frame = clicks
    reader = read_csv(path, "click", weight_column="w", chunk_size=600)
    assert reader.features == ["site", "app", "hour"]
    chunks = list(reader)
    assert [len(c) for c in chunks] == [3] * 4
    w = np.concatenate([c[2] for c in chunks])
    assert np.array_equal(w, frame["w"].astype(np.float32))
    cached = list(reader.cached(tmp_path / "cache"))  # parses and saves
    cached = list(reader.cached(tmp_path / "cache"))  # loads
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(chunks, cached, strict=True))


@pytest.mark.parametrize("weight", ["-1", "nan", "inf", "1e999", "", "x"])
def test_bad_weights_name_the_line(tmp_path, weight):
    path = tmp_path / "log.csv"
    path.write_text(f"click,site,w\n1,a,1\n0,b,{weight}\n")
    with pytest.raises(ValueError, match=r"log.csv, line 3: column 3: the weight .* >= 0"):
        read_csv(path, "click", weight_column="w").read()
    X, y, w = read_csv(path, "click", weight_column="w", skip_bad_lines=True).read()
    assert list(w) == [1.0]


def test_too_many_crosses_are_refused_before_any_memory_is_taken():
    frame = pd.DataFrame({f"c{i}": ["a"] for i in range(200)})  # "all": 19,900 pairs
    with pytest.raises(ValueError, match="19,900 crosses, more than the 10,000"):
        FieldHasher(interactions="all").fit(frame)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta, a: meta.update(crosses=[[0, 7]]), "a cross must be 2 or 3"),
        (lambda meta, a: meta.update(crosses="0*1"), "'crosses' must be a list"),
        (lambda meta, a: meta.update(crosses=[[1, 0]]), "not the hash of their"),
        (lambda meta, a: a.update(column=a["column"][::-1].copy()), "not the hash of their"),
    ],
)
def test_edited_cross_tokens_are_refused(clicks, tmp_path, edit, message):
    import json

    _, frame = clicks
    hasher = FieldHasher(numeric="categorical", keep_tokens=True, interactions="site*app")
    hasher.fit(frame[["site", "app"]])
    path = tmp_path / "tokens.npz"
    hasher.tokens_.save(path)
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(arrays["meta"].tobytes())
    edit(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_tokens(path)


def test_avazu_crosses_by_header_names(tmp_path):
    from sparseopt.datasets import read_avazu

    path = tmp_path / "avazu.csv"
    path.write_text("id,click,hour,site_id,app_id\n1,0,14102100,s1,a1\n2,1,14102100,s2,a1\n")
    reader = read_avazu(path, interactions="site_id*app_id")
    X, y = reader.read()
    assert reader.field_names[-1] == "site_id x app_id" and X.nnz == 2 * 4
    expected = _cross([_h("s1", 1), _h("a1", 2)], 3) & MASK
    assert expected in X[0].indices


def test_damaged_files_give_rows_or_a_clear_error(tmp_path):
    """Random byte edits of a weighted log read with crosses and downsampling: every read
    ends with chunks or a ValueError (a kernel reading out of bounds would crash the run)."""
    good = b"click,site,app,w\n" + b"".join(
        b"%d,s%d,a%d,%d\n" % (i % 3 == 0, i % 7, i % 5, i % 4) for i in range(60)
    )
    rng = np.random.default_rng(0)
    path = tmp_path / "log.csv"
    outcomes = set()
    for _ in range(150):
        data = bytearray(good)
        for p in rng.integers(17, len(data), rng.integers(1, 6)):
            data[p] = rng.choice(list(b",\n\r\"-.e0123456789xyz\xff\x00"))
        path.write_bytes(bytes(data))
        for skip in (False, True):
            try:
                reader = read_csv(path, "click", ["site", "app"], weight_column="w",
                                  interactions="site*app", negative_rate=0.5,
                                  skip_bad_lines=skip, block_size=64)  # fmt: skip
                for X, y, w in reader:
                    assert X.shape[0] == y.size == w.size and np.all(w >= 0)
                outcomes.add("read")
            except ValueError:
                outcomes.add("refused")
    assert outcomes == {"read", "refused"}
