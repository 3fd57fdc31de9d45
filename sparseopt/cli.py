"""The ``sparseopt`` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def demo(args) -> int:
    """Train logistic regression with lazy AdaGrad on generated sparse data; print the fit."""
    from sparseopt.optim import AdaGrad

    rng = np.random.default_rng(args.seed)
    n_rows, n_features, nnz = args.rows, 1 << 16, 20
    true_w = rng.normal(scale=0.8, size=n_features)
    cols = rng.zipf(1.2, size=(n_rows, nnz)) % n_features
    margins = true_w[cols].sum(axis=1) / np.sqrt(nnz) - 1.0
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-margins))).astype(np.float64)

    w = np.zeros(n_features)
    opt = AdaGrad(learning_rate=0.1)
    state = opt.init(w)
    split = int(0.8 * n_rows)
    for i in range(split):
        p = 1 / (1 + np.exp(-w[cols[i]].sum() / np.sqrt(nnz) + 1.0))
        opt.update(w, state, cols[i], np.full(nnz, (p - y[i]) / np.sqrt(nnz)))

    def logloss(m):
        p = np.clip(1 / (1 + np.exp(-m)), 1e-12, 1 - 1e-12)
        return -np.mean(y[split:] * np.log(p) + (1 - y[split:]) * np.log(1 - p))

    learned = w[cols[split:]].sum(axis=1) / np.sqrt(nnz) - 1.0
    print(f"trained on {split:,} rows, {opt.init(w).slots.shape[0]:,} hashed features")
    print(
        f"test logloss: learned {logloss(learned):.4f}, true model {logloss(margins[split:]):.4f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparseopt", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    p = commands.add_parser("demo", help=demo.__doc__)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    return args.run(args)
