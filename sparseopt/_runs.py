"""Run folders of the ``sparseopt`` command: their layout, their lock and their checkpoints.

A run folder holds one model (``model.npz``) and the files of the run that trained it. Each
model family of the command line writes its own layout (:class:`RunLayout`): the click
models' chunked trainer keeps a checkpoint record (``checkpoint.json``) naming a checkpoint
model and the best epoch's model; matrix factorization writes its model and metrics only.

Every run holds the folder's ``run.lock`` (which records the process id) for as long as it
writes there, so a second run into the same folder is refused, naming the first's process; a
process killed with ``kill -9`` drops its lock with it. Under the lock, the temporary files
and the checkpoints left by a killed run are removed. Every file is written atomically (a
temporary file renamed into place), the checkpoint record last: a crash leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import _io
from .datasets._cache import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

LOCK = "run.lock"
MODEL = "model.npz"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.json"
_CHECKPOINT_MODEL = re.compile(r"checkpoint-\d{6}\.npz")
_BEST_MODEL = re.compile(r"best-\d{6}\.npz")


class PipelineError(ValueError):
    """A problem with the user's files or options, reported as one line by the command."""


@dataclass(frozen=True)
class RunLayout:
    """What the run folder of one model family holds.

    Parameters
    ----------
    what : str
        The family's runs, named in messages ("click-model").
    models : tuple of str
        The ``--model`` kinds whose ``model.npz`` such a folder holds.
    record : str or None
        The file that marks a run of the family as started (it may resume), if any.
    leftovers : tuple of re.Pattern
        The model files of a run, besides ``model.npz``, that a killed run may leave behind.
    """

    what: str
    models: tuple[str, ...]
    record: str | None = None
    leftovers: tuple[re.Pattern, ...] = ()


CLICK_RUNS = RunLayout("click-model", ("lr", "fm", "ffm"), CHECKPOINT,
                       (_CHECKPOINT_MODEL, _BEST_MODEL))  # fmt: skip
RATINGS_RUNS = RunLayout("mf", ("mf",))
LAYOUTS = (CLICK_RUNS, RATINGS_RUNS)


def lock_run_folder(out: Path):
    """Check that ``out`` is a run folder this process can write into (made if needed), and
    hold its ``run.lock`` (which records the process id); returns the open lock file, to
    close when the run ends (None where files cannot be locked). Raises PipelineError, before
    any training, for a file, a folder that cannot be made or written, or a folder that
    another run holds (naming its process)."""
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} is a file, not a run folder: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / LOCK, "a+")  # held open for the whole run
    except OSError as exc:
        raise PipelineError(
            f"--out {out} cannot be written ({exc.strerror or exc}): choose another --out"
        ) from None
    if fcntl is None:
        lock.close()
        return None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise PipelineError(
            f"{out} is in use by another sparseopt train (process {holder}); wait "
            "for it to end, or choose another --out"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def check_model_kind(out: Path, kind: str) -> None:
    """Refuse to train a model of ``kind`` into a run folder holding another family's (a
    click model, lr fm or ffm, against mf): a run folder holds one model, and a run of the
    same family replaces it (a finished one; an unfinished click run needs --resume)."""
    layout = next(layout for layout in LAYOUTS if kind in layout.models)
    others = [other for other in LAYOUTS if other is not layout and other.record]
    started = [other for other in others if (out / other.record).is_file()]
    path = out / MODEL
    if started:
        held = f"a {started[0].what} run ({started[0].record})"
    elif not path.is_file():
        return
    else:
        try:
            held_kind = (_io.read_metadata(path) or {}).get("model")
        except (ValueError, OSError):
            held_kind = None
        if held_kind in layout.models:
            return
        known = any(held_kind in other.models for other in LAYOUTS)
        held = f"an {held_kind} model" if known else "a model.npz sparseopt cannot read"
    raise PipelineError(
        f"{out} holds {held}; a run folder holds one model, so training {kind} there would "
        f"replace it: choose another --out (or delete {out})"
    )


def remove_leftovers(out: Path, layout: RunLayout, keep=()) -> None:
    """Remove what a killed run left in ``out``: temporary files (``.*.tmp``) and the
    layout's model files not named in ``keep``. Only under the lock: no writer is running."""
    for path in out.iterdir():
        stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
        model = any(pattern.fullmatch(path.name) for pattern in layout.leftovers)
        if (stale_tmp or model and path.name not in keep) and path.is_file():
            path.unlink(missing_ok=True)


def write_json(path: Path, value) -> None:
    """``value`` as indented JSON in ``path``, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=1).encode()))


# --- checkpoints (the click trainer's) ------------------------------------------------------
def read_checkpoint(out: Path, keys, optional) -> dict:
    """``checkpoint.json`` of ``out``, checked: its ``state`` must hold ``keys`` (but for
    ``optional``, added in later versions), name a checkpoint model and a best-epoch model
    by their file names. PipelineError naming the file if it is damaged."""
    record = out / CHECKPOINT
    try:
        saved = json.loads(record.read_text())
        state, config = saved["state"], saved["config"]
        if not (isinstance(state, dict) and isinstance(config, dict)):
            raise TypeError("state and config must be objects")
        missing = sorted(set(keys) - set(state) - set(optional))
        if missing:
            raise KeyError(f"state has no {missing}")
        name = state["checkpoint"]
        if name is not None and not _CHECKPOINT_MODEL.fullmatch(str(name)):
            raise ValueError(f"checkpoint {name!r} is not a checkpoint file name")
        best = state.get("best")
        if best is not None and not (
            isinstance(best, dict)
            and {"epoch", "logloss", "file"} <= best.keys()
            and _BEST_MODEL.fullmatch(str(best["file"]))
        ):
            raise ValueError(f"best {best!r:.60} does not name a best-epoch file")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{record} is damaged ({exc}); delete the run folder {out} to start over"
        ) from None
    return saved


def next_checkpoint(previous: str | None) -> str:
    """The file name of the checkpoint model after ``previous`` (None: the first)."""
    n = int(previous.split("-")[1].split(".")[0]) + 1 if previous else 0
    return f"checkpoint-{n:06d}.npz"


def commit_checkpoint(out: Path, config: dict, state: dict, name: str, best=None) -> None:
    """Make the model file ``name`` (saved in ``out``) the run's checkpoint: record it in
    ``state["checkpoint"]``, write the record, then drop the previous checkpoint model.

    ``best``: this model is the best epoch so far, recorded as ``state["best"]`` (its
    ``file``, ``best-<epoch>.npz``, linked to the checkpoint before the record names it).
    """
    previous = state["checkpoint"]
    previous_best = None
    if best is not None:
        link_or_copy(out / name, out / best["file"])
        previous_best = state["best"] and state["best"]["file"]
        state["best"] = best
    state["checkpoint"] = name
    record = {"config": config, "state": state}
    atomic_write(out / CHECKPOINT, lambda f: _write_synced(f, json.dumps(record, indent=1)))
    if previous:
        (out / previous).unlink(missing_ok=True)
    if previous_best and previous_best != best["file"]:
        (out / previous_best).unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """Put ``source``'s content at ``target`` atomically: a hard link, a copy where the file
    system has none."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _write_synced(f, text: str) -> None:
    """Write ``text`` and flush it to disk before the file is renamed into place."""
    f.write(text.encode())
    f.flush()
    os.fsync(f.fileno())
