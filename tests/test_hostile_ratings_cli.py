"""Never crash, never lie: matrix factorization on the command line, used as a hostile and
as a careless user would.

The cases run in one child process (the MF kernels compile once there): a crash is a negative
exit status that fails the test naming the running case, not a dead test run. Each case
records the command's exit status, its output and what it left on disk, and the test asserts
the one right outcome: the right answer, or exit status 1 with a message naming the file,
line or option at fault, with nothing trained or saved before the refusal.
"""

import os
import textwrap

import child
import pytest

# the child runs in a temporary folder: it imports the package of this checkout
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELUDE = r'''
import contextlib, io, json, os, sys, traceback, warnings
from pathlib import Path
import numpy as np
warnings.simplefilter("ignore")
from sparseopt.cli import main

def run(*argv):
    """The command's exit status, stdout and stderr (a traceback is stderr, status 99)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except BaseException:
            traceback.print_exc()
            status = 99
    return {"status": status, "out": out.getvalue(), "err": err.getvalue()}

def case(name, fn):
    print(json.dumps(["start", name]), flush=True)
    try:
        result = fn()
    except BaseException as exc:
        result = {"raised": f"{type(exc).__name__}: {exc}"}
    print(json.dumps([name, result], default=repr), flush=True)

def write(name, text, mode="w"):
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path

EPOCH = ["--epochs", "1", "--set", "n_components=2"]
GOOD = "1,1,5\n1,2,3\n2,1,4\n2,2,2\n3,1,1\n"
'''


def run_cases(tmp_path, body: str) -> dict:
    return child.run_cases(PRELUDE + textwrap.dedent(body), cwd=tmp_path)


def refused(result, *words):
    """Exit status 1, one line of error naming ``words``, no traceback."""
    assert result["status"] == 1, result
    assert result["err"].startswith("sparseopt: error: ") and "Traceback" not in result["err"]
    for word in words:
        assert word in result["err"], (word, result["err"])


def test_ratings_files_hostile_and_careless(tmp_path):
    r = run_cases(
        tmp_path,
        r"""
        def trained(path, out, *extra):
            result = run("train", path, "--model", "mf", "--out", out, *EPOCH, *extra)
            if result["status"] == 0:
                from sparseopt.cli import _ratings_files as R
                rm = R.load(Path(out) / "model.npz")
                result.update(users=rm.users.ids.tolist(), items=rm.items.ids.tolist(),
                              n=rm.n_interactions)
            folder = Path(out)
            result["files"] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
            return result

        # a UTF-8 byte-order mark: the first line is data, not a header
        case("bom", lambda: trained(write("bom.csv", b"\xef\xbb\xbf" + GOOD.encode()), "r_bom"))
        case("bom_tab", lambda: trained(
            write("bom.tsv", b"\xef\xbb\xbf1\t1\t5\n2\t2\t3\n"), "r_bomt"))
        # a header is said to be one
        case("header", lambda: trained(write("h.csv", "user,item,rating\n" + GOOD), "r_h"))
        # a malformed first line is data, and fails as such, with its line
        case("bad_first", lambda: trained(write("bf.csv", "1,2,abc\n" + GOOD), "r_bf"))
        case("bad_later", lambda: trained(
            write("bl.csv", "user,item,rating\n1,1,5\n\n1,2,3\n2,1,x4\n"), "r_bl"))
        case("bad_id", lambda: trained(write("bi.csv", "1,1,5\n2,,3\n"), "r_bi"))
        case("bad_with_skip", lambda: trained(
            write("bs.csv", "1,1,5\n1,2,\n3\n2,1,abc\n"), "r_bs", "--skip-bad-lines"))
        case("bad_movielens", lambda: trained(
            write("ml/u1.base", "1\t1\t5\t9\n1\t2\t3\t9\n2\t1\tq\t9\n"), "r_ml"))
        case("bad_timestamp", lambda: trained(
            write("ml2/u1.base", "1\t1\t5\t9\n1\t2\t3\tnoon\n"), "r_ts"))
        case("bad_dat", lambda: trained(
            write("ratings.dat", "1::1::5::9\n1::2::3::9\n2::1::5::9::7\n"), "r_dat"))
        case("inf_rating", lambda: trained(write("inf.csv", "1,1,5\n1,2,1e39\n"), "r_inf"))
        case("bad_validation", lambda: trained(
            write("v.csv", GOOD), "r_v", "--validation", write("vb.csv", "1,1,5\n1,2,?\n")))
        # ratings that overflow the optimizer's accumulators: refused, nothing saved
        case("huge_rating", lambda: trained(write("big.csv", "1,1,5\n1,2,1e30\n2,1,4\n"), "r_big"))
        case("huge_rating_tab", lambda: trained(
            write("big.tsv", "1\t1\t5\t8\n1\t2\t1e30\t8\n2\t1\t4\t8\n"), "r_bigt"))
        case("huge_weights_warp", lambda: trained(
            write("bigw.csv", "1,1,5\n1,2,1e30\n2,1,4\n2,3,1\n"), "r_bigw", "--loss", "bpr"))

        def estimator_refuses():
            import scipy.sparse as sp
            from sparseopt import DivergenceError, MatrixFactorization
            X = sp.csr_matrix(np.array([[5, 1e30], [4, 0]], np.float32))
            try:
                MatrixFactorization(n_components=2, max_iter=1).fit(X)
            except DivergenceError as exc:
                return str(exc)
            return "fitted"
        case("estimator_huge_rating", estimator_refuses)

        def partial_fit_changes_nothing():
            import scipy.sparse as sp
            from sparseopt import DivergenceError, MatrixFactorization
            m = MatrixFactorization(n_components=2, max_iter=2).fit(
                sp.csr_matrix(np.array([[5, 3], [4, 1]], np.float32)))
            before = m.predict([0, 1, 0], [0, 1, 1])
            try:
                m.partial_fit(sp.csr_matrix(np.array([[5, 1e30], [4, 0]], np.float32)))
            except DivergenceError:
                return bool(np.array_equal(before, m.predict([0, 1, 0], [0, 1, 1])))
            return "trained"
        case("partial_fit_huge_rating", partial_fit_changes_nothing)

        # --out: checked (and locked) before any reading or training
        def out_is_file():
            write("afile", "mine")
            result = trained(write("g.csv", GOOD), "afile")
            return dict(result, content=Path("afile").read_text())
        case("out_file", out_is_file)
        case("out_under_file", lambda: trained(write("g.csv", GOOD), "afile/run"))

        def out_read_only():
            Path("ro").mkdir()
            os.chmod("ro", 0o555)
            try:
                return trained(write("g.csv", GOOD), "ro/run")
            finally:
                os.chmod("ro", 0o755)
        case("out_read_only", out_read_only)

        def out_in_use():
            from sparseopt import _runs
            lock = _runs.lock_run_folder(Path("busy"))
            try:
                return trained(write("g.csv", GOOD), "busy")
            finally:
                lock.close()
        case("out_in_use", out_in_use)

        # one model family per run folder
        def click_into_mf():
            first = trained(write("g.csv", GOOD), "r_mf")
            before = Path("r_mf/model.npz").read_bytes()
            click = run("train", "--out", "r_mf", "--n-bits", "10", "--epochs", "1")
            return dict(click, first=first["status"],
                        same=Path("r_mf/model.npz").read_bytes() == before)
        case("click_into_mf", click_into_mf)

        def mf_into_click():
            from sparseopt import MatrixFactorization, _io
            import scipy.sparse as sp
            m = MatrixFactorization(n_components=2, max_iter=1).fit(sp.eye(3, format="csr"))
            Path("r_click").mkdir()
            with _io.model_metadata({"version": 1, "model": "lr", "data": {}}):
                m.save("r_click/model.npz")  # what the folder holds is named an lr model
            before = Path("r_click/model.npz").read_bytes()
            result = trained(write("g.csv", GOOD), "r_click")
            return dict(result, same=Path("r_click/model.npz").read_bytes() == before)
        case("mf_into_click", mf_into_click)

        def mf_into_click_run():
            write("r_run/checkpoint.json", "{}")
            return trained(write("g.csv", GOOD), "r_run")
        case("mf_into_click_run", mf_into_click_run)
        case("mf_replaces_mf", lambda: trained(write("g2.csv", "7,8,1\n7,9,2\n"), "r_mf"))

        # u.info is untrusted too: counts and ids beyond them do not size the model
        def info(counts, name, lines):
            write(f"{name}/u.info", counts)
            return trained(write(f"{name}/{lines[0]}", lines[1]), f"r_{name}")
        case("info_huge", lambda: info("99999999999 users\n5 items\n", "i1", ("r.csv", GOOD)))
        case("info_huge_tab", lambda: info("99999999999 users\n5 items\n", "i2",
                                           ("u1.base", "1\t1\t5\t9\n")))
        case("id_beyond_info", lambda: info("5 users\n5 items\n", "i3",
                                            ("r.csv", "1,1,5\n2,1000000000000,3\n")))
        case("id_beyond_info_tab", lambda: info("5 users\n5 items\n", "i4",
                                                ("u1.base", "1\t1\t5\t9\n2\t999999999999\t3\t9\n")))

        # recommend: sizes and ids from the command line
        def recommend(*argv):
            import tracemalloc
            tracemalloc.start()
            result = run("recommend", "r_bom/model.npz", *argv)
            result["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            return result
        case("n_billion", lambda: recommend("--users", "1,3,77", "--n", "1000000000",
                                            "--include-seen"))
        case("out_folder", lambda: recommend("--users", "1", "--out", "r_bom"))
        case("users_overflow", lambda: recommend("--users", "99999999999999999999"))
        case("users_underscore", lambda: recommend("--users", "1_0"))
        case("users_other_digits", lambda: recommend("--users", "\u0663"))
        case("users_file_binary", lambda: recommend(
            "--users-file", write("u.bin", b"\xff\xfe1\n")))
        case("users_file_bom", lambda: recommend(
            "--users-file", write("u.txt", b"\xef\xbb\xbf3\n")))
        """,
    )
    # the byte-order mark: all five lines are ratings, no header
    for name, n in (("bom", 5), ("bom_tab", 2)):
        assert r[name]["status"] == 0 and r[name]["n"] == n, r[name]
        assert "header" not in r[name]["out"]
    assert r["bom"]["users"] == [1, 2, 3] and r["bom"]["items"] == [1, 2]
    assert r["header"]["status"] == 0 and r["header"]["n"] == 5
    assert "line 1 read as a header: 'user,item,rating'" in r["header"]["out"]
    # malformed lines: file and line, before training
    for name, where in (
        ("bad_first", "bf.csv, line 1: the rating 'abc' is not a number"),
        ("bad_later", "bl.csv, line 5: the rating 'x4' is not a number"),
        ("bad_id", "bi.csv, line 2: an empty item id: '2,,3' (--skip-bad-lines skips"),
        ("bad_with_skip", "bs.csv, line 4: the rating 'abc' is not a number: '2,1,abc'\n"),
        ("bad_movielens", "u1.base, line 3: the rating 'q' is not a number"),
        ("bad_timestamp", "u1.base, line 2: the timestamp 'noon' is not an integer"),
        ("bad_dat", "ratings.dat, line 3: 5 fields, expected 4"),
        ("inf_rating", "inf.csv, line 2: the rating '1e39' is not a finite number"),
        ("bad_validation", "vb.csv, line 2: the rating '?' is not a number"),
    ):
        refused(r[name], where)
        assert "epoch" not in r[name]["out"] and "model.npz" not in (r[name]["files"] or [])
    # divergence of the optimizer state: refused, no model file
    for name in ("huge_rating", "huge_rating_tab", "huge_weights_warp"):
        refused(r[name], "diverged", "optimizer state")
        assert r[name]["files"] == ["run.lock"], r[name]
    assert "optimizer state of the users overflowed" in r["estimator_huge_rating"]
    assert r["partial_fit_huge_rating"] is True  # refused, and the model as it was
    # --out
    refused(r["out_file"], "--out afile is a file, not a run folder")
    assert r["out_file"]["content"] == "mine" and "training" not in r["out_file"]["out"]
    refused(r["out_under_file"], "--out afile/run cannot be written")
    if os.geteuid() != 0:  # root writes into read-only folders
        refused(r["out_read_only"], "--out ro/run cannot be written")
    refused(r["out_in_use"], "busy is in use by another sparseopt train", "process")
    assert "training" not in r["out_in_use"]["out"]
    # one model family per folder; the same family replaces
    assert r["click_into_mf"]["first"] == 0 and r["click_into_mf"]["same"]
    refused(r["click_into_mf"], "r_mf holds an mf model", "choose another --out")
    refused(r["mf_into_click"], "r_click holds an lr model")
    assert r["mf_into_click"]["same"]
    refused(r["mf_into_click_run"], "holds a click-model run (checkpoint.json)")
    assert r["mf_replaces_mf"]["status"] == 0 and r["mf_replaces_mf"]["users"] == [7]
    # u.info
    for name in ("info_huge", "info_huge_tab"):
        refused(r[name], "u.info counts 99,999,999,999 users")
    refused(r["id_beyond_info"], "do not fit the 5 users and 5 items of u.info")
    refused(r["id_beyond_info_tab"], "do not fit shape=(5, 5)")
    # recommend
    n_billion = r["n_billion"]
    assert n_billion["status"] == 0 and n_billion["peak_mb"] < 50, n_billion
    lines = n_billion["out"].splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 1 + 3 * 2  # 2 items each
    assert [line.split(",")[:2] for line in lines[1:3]] == [["1", "1"], ["1", "2"]]
    refused(r["out_folder"], "--out r_bom is a folder")
    for name in ("users_overflow", "users_underscore", "users_other_digits"):
        refused(r[name], "is not a 64-bit integer")
    refused(r["users_file_binary"], "u.bin is not UTF-8 text")
    assert r["users_file_bom"]["status"] == 0 and r["users_file_bom"]["out"].count("\n3,") == 1


@pytest.mark.parametrize("ids", ["1,1,5\n", "user,item\n", "a,b\n"])
def test_header_rule_reads_text_ids_as_data(tmp_path, ids):
    """A first line with a number, or words under words, is data (no silent header)."""
    from sparseopt.cli import _ratings_files as R

    path = tmp_path / "r.csv"
    path.write_text(ids + "alice,matrix" + (",4" if ids[0] == "1" else "") + "\n")
    header = ids.startswith("user")
    assert R._layout(path).header is header
    assert len(R.read_ratings(path)) == 1 + (not header)
