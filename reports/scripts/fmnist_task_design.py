"""Measure whether a Fashion-MNIST task design makes the original model memorise its forget set D_f.

Builds a :class:`muaudit.task.Task` from the command line (training subset, recipe, forget kind), then trains the
original and ``--gold-seeds`` gold models through :func:`muaudit.audit.prepare` (so the models, seeds and cache
entries are exactly the ones an audit of that task would use) and reports, per model: training seconds, error on
D_f, D_r and the test split, the mean loss and mean softmax entropy on D_f, and the AUC of a loss-threshold
population attack (D_f vs the test split). The summary gives the gold spread on D_f (max - min and std over gold
seeds) and the original-vs-gold gap divided by that spread. Everything runs on ONE CPU thread.

Usage (random forget set, the suggested design):
    OMP_NUM_THREADS=1 python reports/scripts/fmnist_task_design.py --train-subset 10000 --epochs 30 \
        --forget-count 1000 --gold-seeds 3 --cache-dir /tmp/fm-cache --out reports/protocol/fmnist-design/x.json
Needs ``apt-get install dataset-fashion-mnist``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from muaudit import readouts as R  # noqa: E402
from muaudit.audit import AuditSetup, prepare  # noqa: E402
from muaudit.base import ModelOutputs  # noqa: E402
from muaudit.cache import TensorCache  # noqa: E402
from muaudit.task import DatasetSpec, ForgetSpec, ModelSpec, Recipe, Task  # noqa: E402

KINDS = ("random", "full-class", "label-flip")


@dataclass(frozen=True)
class ModelNumbers:
    """One trained model's measurements (errors in percent, loss and entropy in nats)."""

    role: str
    seed: int | None
    train_seconds: float
    from_cache: bool | None  # None: not reported (the original's cache status is not exposed by prepare)
    forget_error: float
    forget_clean_error: float | None
    retain_error: float
    test_error: float
    forget_loss: float
    forget_entropy: float
    test_loss: float
    test_entropy: float
    loss_auc: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: the design (subset, recipe, forget set) and where to cache and write."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-subset", type=int, default=10000, help="training examples kept (0: all 60,000)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--schedule", default="cosine", choices=("constant", "cosine", "step"))
    p.add_argument("--arch", default="cnn")
    p.add_argument("--kind", default="random", choices=KINDS)
    p.add_argument("--forget-count", type=int, default=1000, help="random: size of D_f")
    p.add_argument("--forget-class", type=int, default=0, help="full-class: the class forgotten")
    p.add_argument("--flip-fraction", type=float, default=0.05, help="label-flip: fraction of D poisoned")
    p.add_argument("--gold-seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="task seed (draws D_f; derives every model seed)")
    p.add_argument("--cache-dir", default="/tmp/fm-cache")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, required=True, help="JSON file for the numbers")
    return p.parse_args(argv)


def forget_spec(args: argparse.Namespace) -> ForgetSpec:
    """The forget specification of ``--kind``."""
    if args.kind == "random":
        return ForgetSpec("random", count=args.forget_count)
    if args.kind == "full-class":
        return ForgetSpec("full-class", cls=args.forget_class)
    return ForgetSpec("label-flip", fraction=args.flip_fraction)


def build_task(args: argparse.Namespace) -> Task:
    """The task under test, built the way ``muaudit.task._fashion`` builds the named Fashion-MNIST tasks."""
    subset = args.train_subset or None
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
                    momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule)
    name = f"fmnist-design-{args.kind}-n{subset or 60000}-e{args.epochs}-wd{args.weight_decay:g}"
    return Task(name=name, dataset=DatasetSpec("fashion-mnist", root=args.data_root, train_subset=subset),
                forget=forget_spec(args), model=ModelSpec(args.arch), recipe=recipe, seed=args.seed)


def _losses(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-example cross-entropy in float64 (nats)."""
    return torch.nn.functional.cross_entropy(logits.double(), labels.long(), reduction="none").numpy()


def measure(setup: AuditSetup, model: torch.nn.Module, role: str, seed: int | None, seconds: float,
            from_cache: bool | None) -> ModelNumbers:
    """Errors, D_f loss/entropy and the loss-threshold AUC (D_f members vs test non-members) of one model."""
    out: ModelOutputs = setup.outputs(model)
    forget_loss, test_loss = _losses(out.forget_logits, out.forget_labels), _losses(out.test_logits, out.test_labels)
    scores = np.concatenate([-forget_loss, -test_loss])  # lower loss = more member-like
    members = np.concatenate([np.ones(len(forget_loss)), np.zeros(len(test_loss))])
    clean = None
    if setup.task.poison_labels is not None:
        true_labels = setup.data.train.y[list(setup.task.forget_indices or ())]
        clean = R.error_percent(out.forget_logits, true_labels)
    return ModelNumbers(
        role=role, seed=seed, train_seconds=seconds, from_cache=from_cache,
        forget_error=R.error_percent(out.forget_logits, out.forget_labels), forget_clean_error=clean,
        retain_error=R.error_percent(out.retain_logits, out.retain_labels),
        test_error=R.error_percent(out.test_logits, out.test_labels),
        forget_loss=float(forget_loss.mean()), forget_entropy=float(R.entropies(out.forget_logits).mean()),
        test_loss=float(test_loss.mean()), test_entropy=float(R.entropies(out.test_logits).mean()),
        loss_auc=float(roc_auc_score(members, scores)),
    )


def summarise(original: ModelNumbers, golds: list[ModelNumbers]) -> dict[str, Any]:
    """Gold spread on D_f (max - min, std), the original-vs-gold gap and gap / spread, means over the golds."""
    errors = [g.forget_error for g in golds]
    spread = max(errors) - min(errors)
    std = statistics.stdev(errors) if len(errors) > 1 else float("nan")
    gap = statistics.fmean(errors) - original.forget_error
    return {
        "gold_forget_error_mean": statistics.fmean(errors),
        "gold_forget_error_spread": spread,
        "gold_forget_error_std": std,
        "gap": gap,
        "gap_over_spread": gap / spread if spread > 0 else float("inf"),
        "gap_over_std": gap / std if std > 0 else float("inf"),
        "gold_test_error_mean": statistics.fmean(g.test_error for g in golds),
        "gold_retain_error_mean": statistics.fmean(g.retain_error for g in golds),
        "gold_forget_loss_mean": statistics.fmean(g.forget_loss for g in golds),
        "gold_forget_entropy_mean": statistics.fmean(g.forget_entropy for g in golds),
        "gold_loss_auc_mean": statistics.fmean(g.loss_auc for g in golds),
        "max_train_seconds": max([original.train_seconds] + [g.train_seconds for g in golds]),
    }


def print_table(rows: list[ModelNumbers], summary: dict[str, Any]) -> None:
    """A plain-text table of the per-model numbers, then the summary."""
    header = ("role", "seed", "train_s", "cached", "forget%", "clean%", "retain%", "test%", "Df_loss",
              "Df_H", "AUC")
    print(" ".join(f"{h:>10}" for h in header))
    for r in rows:
        clean = "-" if r.forget_clean_error is None else f"{r.forget_clean_error:.2f}"
        seed = "-" if r.seed is None else str(r.seed)
        cached = "-" if r.from_cache is None else str(r.from_cache)
        cells = (r.role, seed, f"{r.train_seconds:.1f}", cached, f"{r.forget_error:.2f}", clean,
                 f"{r.retain_error:.2f}", f"{r.test_error:.2f}", f"{r.forget_loss:.4f}", f"{r.forget_entropy:.4f}",
                 f"{r.loss_auc:.3f}")
        print(" ".join(f"{c:>10}" for c in cells))
    for key, value in summary.items():
        print(f"{key:>26}: {value:.4f}" if isinstance(value, float) else f"{key:>26}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Train (or load from the cache) the original and gold models of the design, measure, print, write JSON."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    task = build_task(args)
    start = time.perf_counter()
    setup = prepare(task, gold_count=args.gold_seeds, cache=TensorCache(args.cache_dir), device=torch.device("cpu"))
    wall = time.perf_counter() - start
    source = setup.original_source
    original = measure(setup, setup.original, "original", None, float(source.get("train_seconds", float("nan"))),
                       None)
    golds = [measure(setup, g.model, "gold", g.seed, g.train_seconds, g.from_cache) for g in setup.golds]
    summary = summarise(original, golds)
    print(f"task {task.name}: {len(setup.train)} train, |D_f| = {len(setup.forget)}, {len(setup.data.test)} test; "
          f"hash {setup.task.content_hash()[:12]}; prepare took {wall:.0f} s; torch threads {torch.get_num_threads()}")
    print_table([original, *golds], summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "task": {k: v for k, v in task.to_dict().items() if k not in ("forget_indices", "poison_labels")},
               "task_hash": setup.task.content_hash(), "n_train": len(setup.train), "n_forget": len(setup.forget),
               "n_test": len(setup.data.test), "torch_threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "prepare_wall_seconds": wall,
               "original": asdict(original), "golds": [asdict(g) for g in golds], "summary": summary}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
