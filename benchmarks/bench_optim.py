"""Throughput of one sparse optimizer step, sparseopt against NumPy and torch, in one run.

    python benchmarks/bench_optim.py [--n-params 1048576] [--n-indices 1000000]

Indices are Zipf-distributed (as hashed sparse features are), with repeats; each system does
the same AdaGrad step (repeats summed) and the table gives million coordinates per second.
"""

import argparse
import time
from functools import partial

import numpy as np

from sparseopt.optim import AdaGrad, Adam


def numpy_adagrad(params, acc, indices, grads, lr=0.1, eps=1e-10):
    unique, inverse = np.unique(indices, return_inverse=True)
    g = np.bincount(inverse, weights=grads)
    acc[unique] += g * g
    params[unique] -= lr * g / (np.sqrt(acc[unique]) + eps)


def best_of(fn, repeat):
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-params", type=int, default=1 << 20)
    parser.add_argument("--n-indices", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    indices = (rng.zipf(1.1, args.n_indices) - 1) % args.n_params
    grads = rng.normal(size=args.n_indices)
    rows = []

    for name, opt in [
        ("sparseopt AdaGrad", AdaGrad(0.1)),
        ("sparseopt Adam (lazy=skip)", Adam(0.01, lazy="skip")),
        ("sparseopt Adam (lazy=exact)", Adam(0.01, lazy="exact")),
    ]:
        params = np.zeros(args.n_params, dtype=np.float32)
        state = opt.init(params)
        step = partial(opt.update, params, state, indices, grads)
        rows.append((name, best_of(step, args.repeat)))

    params = np.zeros(args.n_params, dtype=np.float32)
    acc = np.zeros(args.n_params, dtype=np.float32)
    step = partial(numpy_adagrad, params, acc, indices, grads)
    rows.append(("NumPy AdaGrad (np.unique)", best_of(step, 3)))
    try:
        import torch

        torch.set_num_threads(1)
        weight = torch.nn.Parameter(torch.zeros(args.n_params))
        topt = torch.optim.Adagrad([weight], lr=0.1)
        t_idx = torch.from_numpy(indices).reshape(1, -1)
        t_val = torch.from_numpy(grads.astype(np.float32))

        def torch_step():
            weight.grad = torch.sparse_coo_tensor(t_idx, t_val, (args.n_params,))
            topt.step()

        rows.append(("torch Adagrad (sparse grad, 1 thread)", best_of(torch_step, 3)))
    except ImportError:
        rows.append(("torch Adagrad (not installed)", float("nan")))

    base = rows[0][1]
    print(f"{args.n_indices:,} Zipf indices over {args.n_params:,} float32 params, one step")
    print(f"{'system':40s} {'ms/step':>9s} {'M coords/s':>11s} {'vs sparseopt':>13s}")
    for name, seconds in rows:
        print(
            f"{name:40s} {seconds * 1e3:9.1f} {args.n_indices / seconds / 1e6:11.1f} "
            f"{base / seconds:12.2f}x"
        )


if __name__ == "__main__":
    main()
