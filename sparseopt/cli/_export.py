"""``sparseopt export``: a model file to ONNX or JSON for serving without sparseopt, and the
hashing spec of its rows (the logic of both in :mod:`sparseopt.export`)."""

from __future__ import annotations

from pathlib import Path

from .. import _io
from .._load import load
from ..export import (
    FORMATS,
    GRAPHS,
    HASHED_FORMATS,
    INPUT_FORMS,
    ExportError,
    export,
    hashing_spec,
)


def add_arguments(parser) -> None:
    """The options of ``sparseopt export`` (added to ``parser``)."""
    parser.add_argument("model", nargs="?", help="model file (model.npz of a run)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or json")
    parser.add_argument("--out", help="the export's file (model.onnx, model.json)")
    parser.add_argument("--input-form", choices=INPUT_FORMS, default="padded",
                        help="onnx input of click models: padded (default) or offsets (CSR)")
    parser.add_argument("--graph", choices=GRAPHS, default="score",
                        help="onnx of matrix factorization: score (default) or recommend (top k)")
    parser.add_argument("--hashing-spec", metavar="PATH",
                        help="also write the hashing spec (with test vectors) of the model's "
                        "data; without MODEL: of --data-format, --n-bits, --field-aware")
    parser.add_argument("--data-format", choices=(*HASHED_FORMATS, "libsvm"),
                        help="without MODEL: the data format of --hashing-spec (criteo)")
    parser.add_argument("--n-bits", type=int, help="without MODEL: 2**N columns (20)")
    parser.add_argument("--field-aware", action="store_true", default=None,
                        help="without MODEL: each field its own slice of columns")  # fmt: skip


def export_command(args) -> int:
    """Export a model file for serving without sparseopt (ONNX or JSON), and write the hashing
    spec of its rows (--hashing-spec)."""
    if args.model is None and args.hashing_spec is None:
        raise ExportError("give a MODEL file to export, --hashing-spec PATH, or both")
    data = None
    if args.model is not None:
        if args.out is None:
            raise ExportError("give --out PATH, the file to write the export to")
        if Path(args.out).resolve() == Path(args.model).resolve():
            raise ExportError("--out names the model file itself: give another file")
        try:
            model = load(args.model)
        except FileNotFoundError:
            raise ExportError(f"{args.model}: no such model file") from None
        meta = _io.read_metadata(args.model) or {}
        # a click model's data section (sparseopt train), or a ratings model's id maps
        data = meta.get("data") or meta.get("ratings")
        written = export(model, args.out, args.format, data=data, input_form=args.input_form,
                         graph=args.graph, downsampling=meta.get("downsampling"))  # fmt: skip
        print(f"exported {type(model).__name__} to " + ", ".join(map(str, written)))
    if args.hashing_spec is not None:
        if args.model is not None and (data is None or "format" not in data):
            raise ExportError(
                f"{args.model} does not say how its rows were hashed (a model of sparseopt "
                "train on a hashed format has it): run --hashing-spec without MODEL, with "
                "--data-format, --n-bits and --field-aware as in training"
            )
        options = {"format": args.data_format, "n_bits": args.n_bits,
                   "field_aware": args.field_aware}  # fmt: skip
        if args.model is not None:
            given = [k for k, v in options.items() if v is not None]
            if given:
                raise ExportError(f"{given} apply without MODEL; the model's data says them")
        spec = hashing_spec(args.hashing_spec, data if args.model is not None else options)
        vectors = spec["test_vectors"]
        crosses = f"{len(vectors['crosses'])} crosses, " if vectors["crosses"] else ""
        print(f"hashing spec written to {args.hashing_spec} ({len(vectors['pairs'])} pairs, "
              f"{crosses}{len(vectors['rows'])} rows of test vectors)")  # fmt: skip
    return 0
