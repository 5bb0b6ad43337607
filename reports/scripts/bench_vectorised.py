"""Throughput of vectorised (vmap) versus sequential shadow-model training, measured in one run.

For each workload, models are trained on random halves of a training pool (the LiRA shadow set-up) with the task's
recipe (fewer epochs, so the script runs in minutes). Rounds interleave the two paths (vmap on ``M`` models, then
sequential on ``K`` models) so that changing load on the machine hits both alike; throughput is models trained per
second of wall time summed over rounds, and the ratio is vmap / sequential.

Workloads: the MLP on scikit-learn digits (the ``digits`` task) and the zoo's ``cnn`` on a Fashion-MNIST subset
(``/usr/share/datasets/fashion-mnist``), or, without it, on digits (8x8 images).

    python reports/scripts/bench_vectorised.py [--models 32] [--sequential 8] [--rounds 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from muaudit.data import FASHION_MNIST_ROOT, DataBundle, Split, load_dataset
from muaudit.task import NAMED_TASKS, ModelSpec, Recipe, Task
from muaudit.training import train_from_scratch
from muaudit.vectorised import train_vectorised

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Workload:
    name: str
    task: Task
    data: DataBundle
    pool: Split


def workloads(fmnist_pool: int) -> list[Workload]:
    digits = load_dataset("digits")
    mlp = replace(NAMED_TASKS["digits"], recipe=replace(NAMED_TASKS["digits"].recipe, epochs=3))
    out = [Workload("mlp / digits (1257 train, half each, 3 epochs, batch 64)", mlp, digits, digits.train)]
    if os.path.isdir(FASHION_MNIST_ROOT):
        fmnist = load_dataset("fashion-mnist")
        cnn = replace(NAMED_TASKS["fashion-mnist-random-5ep"], recipe=Recipe(epochs=2, batch_size=128, lr=0.05))
        pool = fmnist.train.subset(np.arange(fmnist_pool))
        out.append(Workload(f"cnn / fashion-mnist ({fmnist_pool} train, half each, 2 epochs, batch 128)",
                            cnn, fmnist, pool))
    else:
        cnn = replace(mlp, model=ModelSpec("cnn"))
        out.append(Workload("cnn / digits as 1x8x8 images (no Fashion-MNIST found; 3 epochs, batch 64)",
                            cnn, digits, digits.train))
    return out


def forward_macs(work: Workload) -> int:
    """Multiply-accumulates of one forward pass of one example through the conv and linear layers."""
    from muaudit.training import fresh_model

    model, total = fresh_model(work.task, work.data, 0), 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * (module.weight[0].numel())

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(work.pool.x[:1])
    for hook in hooks:
        hook.remove()
    return total


def bench(work: Workload, n_vmap: int, n_seq: int, rounds: int) -> tuple[float, float]:
    """Models per second of the vmap and the sequential path, over interleaved rounds."""
    rng = np.random.default_rng(0)
    n = len(work.pool)
    subsets = [np.sort(rng.choice(n, size=n // 2, replace=False)) for _ in range(n_vmap)]
    train_vectorised(work.task, work.data, work.pool, subsets[:2], [0, 1], CPU)  # warm-up (one-time set-up cost)
    t_vmap = t_seq = 0.0
    for r in range(rounds):
        seeds = [1000 * r + m for m in range(n_vmap)]
        start = time.perf_counter()
        train_vectorised(work.task, work.data, work.pool, subsets, seeds, CPU, chunk=n_vmap)
        t_vmap += time.perf_counter() - start
        start = time.perf_counter()
        for subset, seed in zip(subsets[:n_seq], seeds):
            train_from_scratch(work.task, work.data, work.pool.subset(subset), seed, CPU)
        t_seq += time.perf_counter() - start
        print(f"  round {r}: vmap {n_vmap} models in {t_vmap:.1f}s cumulative, sequential {n_seq} in {t_seq:.1f}s",
              flush=True)
    return rounds * n_vmap / t_vmap, rounds * n_seq / t_seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=32, help="models per vectorised call (M)")
    parser.add_argument("--sequential", type=int, default=8, help="models trained sequentially per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both paths")
    parser.add_argument("--fmnist-pool", type=int, default=4000, help="Fashion-MNIST training examples in the pool")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, "
          f"M={args.models} vectorised, K={args.sequential} sequential per round, {args.rounds} rounds")
    for work in workloads(args.fmnist_pool):
        print(work.name, flush=True)
        fast, slow = bench(work, args.models, args.sequential, args.rounds)
        print(f"  vmap {fast:.2f} models/s, sequential {slow:.2f} models/s, ratio {fast / slow:.1f}x", flush=True)
        # training FLOPs ~ 3 x forward (forward + two backward products), 2 FLOPs per multiply-accumulate
        flops = 6 * forward_macs(work) * (len(work.pool) // 2) * work.task.recipe.epochs
        print(f"  arithmetic: {flops / 1e9:.2f} GFLOP per model; sequential achieves {slow * flops / 1e9:.1f} "
              f"GFLOP/s, vmap {fast * flops / 1e9:.1f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
