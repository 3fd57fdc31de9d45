"""The commands of the click models (``--model lr``, ``fm``, ``ffm``): hashed or LIBSVM files
read chunk by chunk (:class:`sparseopt.pipeline.DataSpec`), trained by the chunked trainer
(:class:`sparseopt.pipeline.Trainer`) into a checkpointed run folder
(:data:`sparseopt._runs.CLICK_RUNS`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from .. import _io
from .. import pipeline as P
from .._report import check_plotting, fit_terminal, format_click_metrics, write_report
from .._runs import PipelineError
from ..inspect import load_tokens, top_features
from ._options import (
    CHUNK_SIZE,
    EXIT_INTERRUPTED,
    SAMPLE_CHUNK_SIZE,
    data_options,
    model_params,
)


def train(args) -> int:
    """``sparseopt train [DATA] --model lr|fm|ffm``: the chunked trainer, checkpointed."""
    config, data = _train_config(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    trainer = P.Trainer(
        config,
        args.out,
        epochs=args.epochs,
        checkpoint_every=10 if args.checkpoint_every is None else args.checkpoint_every,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        parse_threads=args.parse_threads,
        progress=progress,
        after_chunk=getattr(args, "after_chunk", None),
    )
    # counted before training: a line the counting refuses stops the run before any model
    tokens = (
        P.count_tokens(trainer.spec, data, args.skip_bad_lines, args.max_tokens)
        if args.keep_tokens
        else None
    )
    trainer.start(resume=args.resume)
    print(f"training {args.model} on {data} ({trainer.spec.describe()})")
    try:
        with P.sigterm_as_interrupt():
            summary = trainer.run()
    except KeyboardInterrupt:
        print(
            f"sparseopt: interrupted; continue from the last checkpoint with "
            f"`sparseopt train ... --out {args.out} --resume`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    _print_outcome(args, trainer, summary, tokens)
    return 0


def _train_config(args) -> tuple[P.TrainConfig, str]:
    """The run's configuration from the options, checked, and the training file as given
    (the packaged sample's without DATA)."""
    for flag, value in (("--loss", args.loss), ("--min-rating", args.min_rating),
                        ("--user-features", args.user_features),
                        ("--item-features", args.item_features)):  # fmt: skip
        if value is not None:
            raise PipelineError(f"{flag} applies to --model mf; click models learn logloss")
    args.format = args.format or "criteo"
    args.n_bits = 20 if args.n_bits is None else args.n_bits
    if args.report:
        check_plotting()
    if args.keep_tokens and args.format == "libsvm":
        raise PipelineError("--keep-tokens needs a hashed format (criteo, avazu, csv)")
    data, validation = args.data, args.validation
    chunk_size = args.chunk_size or (CHUNK_SIZE if data is not None else SAMPLE_CHUNK_SIZE)
    if data is None:
        if args.format != "criteo":
            raise PipelineError("the packaged sample is in criteo format; give a DATA file")
        data, sample_valid = P.default_data()
        validation = validation or sample_valid
    options = {k: v for k, v in data_options(args).items() if v is not None}
    if args.negative_rate is not None:
        if not 0 < args.negative_rate <= 1:  # NaN too
            raise PipelineError(
                f"--negative-rate must be in (0, 1], the fraction of negatives kept, got "
                f"{args.negative_rate!r}"
            )
        options["negative_rate"] = args.negative_rate
    config = P.TrainConfig(
        data=str(Path(data).resolve()),
        validation=None if validation is None else str(Path(validation).resolve()),
        model=args.model,
        spec={**options, "field_aware": bool(args.field_aware)},
        params=model_params(args),
        chunk_size=chunk_size,
        skip_bad_lines=args.skip_bad_lines,
        seed=args.seed,
    )
    return config, data


def _print_outcome(args, trainer: P.Trainer, summary: dict, tokens) -> None:
    """What the run did: rows, epochs and the epoch kept, the downsampling applied, the
    validation metrics; saves the token counts and the report asked for."""
    rate = summary["rows_per_second"]
    kept, best = summary["kept_epoch"], summary["best_epoch"]
    print(
        fit_terminal(
            f"done: {summary['rows_seen']:,} rows over {summary['epochs']} epochs"
            + (f" ({rate:,.0f} rows/s)" if rate else "")
            + f", {summary['n_bad_lines']} bad lines skipped; model of epoch "
            + f"{kept} saved to {summary['model']}: {summary['kept_because']}"
            + (f"; best validation logloss at epoch {best}" if best not in (None, kept) else "")
        )
    )
    negative_rate = trainer.spec.negative_rate
    if negative_rate != 1:
        dropped = trainer.reader.stats.get("n_dropped", 0)
        print(
            f"negative downsampling: {dropped:,} negative lines dropped per epoch (kept "
            f"{negative_rate:g} of them); the saved model's intercept is shifted by "
            f"log({negative_rate:g}) = {math.log(negative_rate):.4f}, so its predictions are "
            f"on the true scale (metadata 'downsampling')"
        )
    if summary["validation"]:
        print("validation: " + format_click_metrics(summary["validation"]))
    if tokens is not None:
        path = P.save_tokens(tokens, args.out, summary["model"])
        print(f"token counts: {path} (see `sparseopt inspect`)")
    if args.report:
        write_report(summary, args.report)
        print(f"report: {args.report}")


def _open(args):
    """The click model of ``args.model`` and a reader of ``args.data`` into its columns."""
    for flag, value in (("--user-features", args.user_features),
                        ("--item-features", args.item_features)):  # fmt: skip
        if value is not None:
            raise PipelineError(f"{flag} applies to mf models; a click model reads DATA alone")
    model, spec = P.load_model(args.model)
    reader = P.open_data(
        model, spec, args.data, data_options(args), args.chunk_size, args.skip_bad_lines
    )
    return model, reader


def predict(args) -> int:
    """``sparseopt predict MODEL DATA --out FILE`` for a click model: one probability per
    row."""
    model, reader = _open(args)
    n = P.predict_file(model, reader.chunks(args.parse_threads), args.out)
    print(
        f"wrote {n:,} predictions to {args.out} ({reader.stats['n_bad_lines']} bad lines skipped)"
    )
    return 0


def evaluate(args) -> int:
    """``sparseopt evaluate MODEL DATA`` for a click model: logloss, AUC, calibration."""
    model, reader = _open(args)
    metrics = P.score(model, reader.chunks(args.parse_threads))
    result = dict(metrics.result(), n_bad_lines=reader.stats["n_bad_lines"])
    if args.json:
        print(json.dumps(dict(result, calibration=metrics.calibration())))
    else:
        print(
            f"{args.data}: {result['n_rows']:,} rows, "
            + format_click_metrics(result)
            + f", {result['n_bad_lines']} bad lines skipped"
        )
    return 0


def inspect(args) -> int:
    """``sparseopt inspect MODEL`` for a click model: its strongest features, by name with
    the token counts of --keep-tokens."""
    model, _ = P.load_model(args.model)
    tokens_path = Path(args.tokens or Path(args.model).parent / P.TOKENS_FILE)
    if args.tokens is None and not tokens_path.is_file():
        return _inspect_columns(model, args)
    try:
        tokens = load_tokens(tokens_path)
    except FileNotFoundError:
        raise PipelineError(f"{tokens_path}: no such token file") from None
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    if tokens.model_sha256 not in (None, P.file_sha256(args.model)):
        stale = f"{tokens_path} holds the token counts of another model than {args.model}"
        if args.tokens is not None:
            raise PipelineError(f"{stale}: give the token file saved with this model")
        why = f"{stale} (it was trained again since), so columns have no names"
        return _inspect_columns(model, args, why)
    try:
        table = top_features(model, tokens, n=args.top, field=args.field)
    except ImportError:
        raise PipelineError("sparseopt inspect needs pandas: pip install pandas") from None
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(table.drop(columns="column").to_string(index=False, float_format="{:.4f}".format))
    return 0


def _inspect_columns(model, args, why=None) -> int:
    """Without token counts: the hashed columns with the largest weights, unnamed (``why``:
    the note, when a token file is there but not this model's)."""
    if args.field is not None:
        raise PipelineError(
            f"--field needs the token counts beside the model ({P.TOKENS_FILE}): train with "
            "--keep-tokens"
        )
    weights = np.asarray(model.coef_)[0]
    top = np.argsort(-np.abs(weights), kind="stable")[: args.top]
    if args.json:
        print(json.dumps([{"column": int(c), "weight": float(weights[c])} for c in top]))
    else:
        print(f"{'column':>10}  {'weight':>9}")
        for c in top:
            print(f"{c:>10}  {weights[c]:>9.4f}")
    why = why or f"no token counts beside {args.model}, so columns have no names"
    print(
        f"sparseopt: {why}: train with --keep-tokens to save them ({P.TOKENS_FILE})",
        file=sys.stderr,
    )
    return 0


def recommend(args) -> int:
    """``sparseopt recommend`` refuses a click model: it ranks items for users."""
    recorded = (_io.read_metadata(args.model) or {}).get("model", "no --model recorded")
    raise PipelineError(
        f"{args.model} holds a click model ({recorded}); recommend needs a model of "
        "sparseopt train --model mf"
    )
