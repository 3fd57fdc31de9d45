"""What the ``sparseopt`` command prints and draws: lines fitted to the terminal, metrics as
text, the progress bar of the chunked trainer, and the PNG report of a click-model run
(``--report``).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._jit import compile_seconds
from ._runs import PipelineError
from .datasets._cache import atomic_write
from .datasets._parsers import count_lines

TICK_SECONDS = 0.25  # how often the bar moves while a chunk trains


def fit_terminal(line: str) -> str:
    """``line`` broken between words to the width of the terminal, when stdout is one
    (``$COLUMNS`` overrides), so that a terminal never wraps it mid-word; unchanged in a
    file or a pipe, where a line of a log stays one line."""
    if not sys.stdout.isatty():
        return line
    width = shutil.get_terminal_size().columns - 1
    return textwrap.fill(
        line, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    )


def format_click_metrics(m: dict) -> str:
    """The click metrics of :meth:`~sparseopt.metrics.ClickMetrics.result` on one line."""
    auc = "n/a" if m["auc"] is None else f"{m['auc']:.4f}"
    return (
        f"logloss {m['logloss']:.4f}  AUC {auc}  mean prediction "
        f"{m['mean_prediction']:.4f} (base rate {m['base_rate']:.4f})"
    )


def format_ratings_metrics(m: dict) -> str:
    """The metrics of a ratings model (:func:`~sparseopt.cli._ratings_files.evaluate_ratings`) on
    one line."""
    unknown = f", {m['n_unknown']:,} with an unknown id" if m["n_unknown"] else ""
    if "rmse" in m:
        return f"RMSE {m['rmse']:.6f}  MAE {m['mae']:.6f} ({m['n_ratings']:,} ratings{unknown})"
    return (
        f"precision@10 {m['precision@10']:.4f}  recall@10 {m['recall@10']:.4f}  ndcg@10 "
        f"{m['ndcg@10']:.4f} ({m['n_users']:,} users, {m['n_ratings']:,} lines{unknown})"
    )


class EpochBar:
    """The progress bar of the chunked trainer's epochs (tqdm on stderr, when ``enabled``),
    and the lines ``log`` writes past it.

    Within an epoch the bar counts rows; its total is the epoch's rows once an epoch has
    ended, before that a count of the file's lines (:func:`_count_lines_of`).
    """

    def __init__(self, enabled: bool, log=print):
        self.enabled, self.log = enabled, log
        self.rate = None  # rows/s of the last chunk trained, to move the bar within the next
        self.bar, self.counted = None, {}

    def start(self, reader, desc: str, total, done: int, loss: str):
        """The bar of an epoch of ``total`` rows (None: not known yet), ``done`` of them
        trained, the mean ``loss`` so far; use it as a context manager."""
        from tqdm.auto import tqdm

        self.counted = {}
        if total is None and self.enabled:
            _count_lines_of(reader, self.counted)
        self.bar = tqdm(
            total=total or self.counted.get("n"),
            initial=done,
            unit="rows",
            unit_scale=True,
            disable=not self.enabled,
            file=sys.stderr,
            desc=desc,
            leave=False,
            dynamic_ncols=True,  # fit the terminal as it is now: the line never wraps
            postfix={"loss": loss},
        )
        return self.bar

    def advance(self, done: int, loss: str) -> None:
        """A chunk has ended: ``done`` rows of the epoch trained, their mean ``loss``."""
        bar = self.bar
        bar.set_postfix(loss=loss, refresh=False)
        if bar.total is None:
            bar.total = self.counted.get("n")
        bar.update(done - bar.n)  # where the chunk truly ends

    def notice(self, line: str) -> None:
        """``log(line)`` from within an epoch: the progress bar (on the same terminal) is
        cleared first and drawn again below the line, so the line is not written into it."""
        from tqdm.auto import tqdm

        with tqdm.external_write_mode():
            self.log(line)

    @contextmanager
    def moving(self, rows):
        """While a chunk of ``rows`` trains, move the bar every ``TICK_SECONDS`` at the rate
        the previous chunk trained at, short of the chunk's end; the caller then sets the
        true position. The kernels say nothing until they return, so within a chunk the
        position is an estimate, put right at its end; before any rate is known (the run's
        first chunk) only the elapsed time moves. Training calls are not split for the bar:
        each call ends with a pass over the whole weight table (weight decay's pending
        steps), which made 10,000-row calls up to 8 times slower.
        """
        started, compiling = time.perf_counter(), compile_seconds()
        bar, rate = self.bar, self.rate
        start_n = bar.n
        stop = threading.Event()

        def tick():
            while not stop.wait(TICK_SECONDS):
                if rate is None:
                    bar.refresh()
                    continue
                ahead = min(int(rate * (time.perf_counter() - started)), rows - 1)
                bar.update(max(start_n + ahead - bar.n, 0))

        ticker = threading.Thread(target=tick, name="sparseopt-bar", daemon=True)
        if not bar.disable:
            ticker.start()
        try:
            yield
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
        seconds = time.perf_counter() - started - (compile_seconds() - compiling)
        self.rate = rows / seconds if seconds > 0 else None


def _count_lines_of(reader, counted: dict) -> None:
    """Count the lines of ``reader``'s file into ``counted["n"]``, for the bar's total and
    ETA: a pass over the bytes, far faster than parsing them, in the background (waited for
    a second at most, so that a small file's bar has it from the start)."""

    def count():
        n, last = 0, None
        try:
            for block, _ in reader._blocks():
                n += int(count_lines(block))
                last = block
        except Exception:  # the bar goes without a total; the parser reports the file
            return
        if last is not None and last.size and last[-1] != ord("\n"):
            n += 1  # a last line without its newline
        counted["n"] = n

    thread = threading.Thread(target=count, name="sparseopt-count", daemon=True)
    thread.start()
    thread.join(timeout=1.0)


def check_plotting() -> None:
    """Fail early, before training, when ``--report`` cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PipelineError("--report needs matplotlib: pip install 'sparseopt[plot]'") from None


def write_report(summary: dict, path) -> None:
    """A PNG of the run: learning curves and the validation calibration of the saved model.

    The training curve is progressive: within each epoch, the mean loss of the rows trained
    so far, after each chunk (so one epoch draws a curve, not a lone point); validation
    logloss is marked at the end of each epoch, the saved epoch circled. The title names the
    data file, the model and the saved model's validation metrics.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    history = summary["history"]
    fig, (curves, calib) = plt.subplots(1, 2, figsize=(10, 4.4))
    xs, train = [], []
    for h in history:
        # records from before per-chunk curves were kept: the epoch's mean alone
        points = h.get("train_curve") or [[h["rows"], h["train_logloss"]]]
        # each epoch its own segment: the progressive mean starts over with every epoch
        xs += [h["epoch"] - 1 + rows / h["rows"] for rows, _ in points] + [np.nan]
        train += [loss for _, loss in points] + [np.nan]
    curves.plot(xs, train, ".-", label="train (progressive, per chunk)")
    valid = [(h["epoch"], h["validation"]["logloss"]) for h in history if "validation" in h]
    if valid:
        curves.plot(*zip(*valid, strict=True), "s-", label="validation")
        kept = summary.get("kept_epoch")
        if kept is not None and any(e == kept for e, _ in valid):
            loss = dict(valid)[kept]
            curves.plot([kept], [loss], "o", ms=14, mfc="none", color="C3", label="saved")
    curves.set(
        xlabel="epoch (fraction of the rows trained)",
        ylabel="logloss",
        title="Learning curves",
        xlim=(0, max(len(history), 1) * 1.02),
    )
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.legend()
    title = f"{Path(summary.get('data_file') or 'data').name}: {summary['model_type']}"
    title += f", epoch {summary['kept_epoch']} saved" if summary.get("kept_epoch") else ""
    valid = summary.get("validation")
    if valid:
        auc = "n/a" if valid["auc"] is None else f"{valid['auc']:.4f}"
        title += f"; validation logloss {valid['logloss']:.4f}, AUC {auc}"
    fig.suptitle(textwrap.fill(title, 110), fontsize=10)
    table = summary.get("calibration")
    if table:
        pred = [b["mean_prediction"] for b in table]
        obs = [b["observed_rate"] for b in table]
        top = max(max(pred), max(obs)) * 1.05
        calib.plot([0, top], [0, top], ":", color="gray", label="perfect")
        calib.plot(pred, obs, "o-", label="model")
        calib.set(
            xlabel="mean predicted click rate",
            ylabel="observed click rate",
            title="Calibration (validation, equal-count bins)",
        )
        calib.legend()
    else:
        calib.text(0.5, 0.5, "no validation file", ha="center", va="center")
        calib.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
