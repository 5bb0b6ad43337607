"""Executors measured in one run: a shadow bank trained sequentially, on local worker processes and on Ray.

``--part cpu`` (the default; about 12 minutes on this project's 2-core machine, ``--rounds 2``) measures, with
fresh caches:

1. a 16-model CNN shadow bank on Fashion-MNIST (the ``fashion-mnist-random`` task's data, 10,000-image subset and
   ``cnn``; random halves of the training pool; the recipe cut to ``--cnn-epochs`` epochs so the run takes
   minutes: per-model time scales with epochs, the fixed costs do not), trained by the sequential executor, by 2
   worker processes (a new pool: the first call of a command, worker start, imports and warm-up included; then
   the same pool again into a fresh cache: a command's later calls) and by a local Ray with 2 CPUs. It reports
   the speed-ups, Ray's fixed overhead (start-up, and the rest of its extra time over the process pool) and
   whether the banks are bit-identical.
2. a 64-model digits MLP bank trained with vmap in chunks of 32: the chunks in this process, then one chunk per
   worker (processes, Ray), against one-by-one training of a sample of the same models.
3. the time of one SGD step of the zoo's ``resnet18`` on a CIFAR-10-shaped batch (128 x 3 x 32 x 32, one thread),
   for the extrapolated cost of a CIFAR-10 audit in the README ("Large audits").

``--part gpu`` is the same measurement prepared for a GPU machine (``device`` tool): the CNN bank sequentially on
CUDA, vmapped on CUDA, and on Ray with ``--gpu-workers`` models sharing the GPU (fractional GPUs), plus the
ResNet-18 step on CUDA. One command, a few minutes (with the Fashion-MNIST IDX files copied to
``shared/fashion-mnist/`` when the machine has no ``dataset-fashion-mnist``; the torch the machine has is kept):

    pip install -e ".[ray]" && python reports/scripts/bench_engine.py --part gpu --fmnist-root shared/fashion-mnist

``--part gpu --smoke`` runs that code path on the CPU (Ray is told it has one GPU, so fractional-GPU tasks are
scheduled and train on the CPU), with small ``--cnn-models``/``--cnn-epochs``, to check the command without a GPU.

Output: ``reports/engine/<part>.md`` and ``.json`` (``--out`` to change). Every ratio is measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.data import FASHION_MNIST_ROOT, load_dataset
from muaudit.engine import ProcessExecutor, RayExecutor, SequentialExecutor
from muaudit.shadows import ModelRequest, ShadowBank
from muaudit.task import NAMED_TASKS, ModelSpec, Task

OUT = Path(__file__).resolve().parents[1] / "engine"
ROW_NAMES = {"processes": "processes (new pool)", "processes_warm": "processes (warm pool)",
             "vmap_cuda": "vmap, one chunk (this process)"}


def log(message: str) -> None:
    print(f"[bench_engine {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ workloads
def cnn_task(epochs: int, root: str) -> tuple[Task, Any, str]:
    """The Fashion-MNIST CNN task with ``epochs`` epochs (digits as 1x8x8 images when Fashion-MNIST is absent)."""
    if os.path.isdir(root):
        base = NAMED_TASKS["fashion-mnist-random"]
        data = load_dataset("fashion-mnist", root, train_subset=base.dataset.train_subset)
        label = f"cnn / Fashion-MNIST (10,000-image subset, {epochs} of 25 epochs)"
    else:
        base = replace(NAMED_TASKS["digits"], model=ModelSpec("cnn"))
        data = load_dataset("digits")
        label = f"cnn / digits as 1x8x8 images (no Fashion-MNIST at {root}; {epochs} epochs)"
    task = replace(base, recipe=replace(base.recipe, epochs=epochs)).materialise(data)
    return task, data, label


def mlp_task() -> tuple[Task, Any, str]:
    data = load_dataset("digits")
    task = NAMED_TASKS["digits"].materialise(data)
    return task, data, f"mlp / digits ({task.recipe.epochs} epochs, the task's recipe)"


def halves(n_pool: int, count: int, seed: int = 0) -> list[ModelRequest]:
    """``count`` shadows, each on a random half of the training pool (the LiRA set-up)."""
    rng = np.random.default_rng(seed)
    return [ModelRequest("shadow", np.sort(rng.choice(n_pool, n_pool // 2, replace=False)), seed=m)
            for m in range(count)]


def timed_bank(task: Task, data: Any, requests: list[ModelRequest], executor: Any, device: torch.device,
               vectorise: str, chunk: int = 32) -> tuple[float, list[str], float]:
    """Wall seconds to train ``requests`` into a fresh cache, the models' state hashes, and the mean of each
    model's own training time (as its worker measured it; a vmap chunk's time shared equally)."""
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as root:
        bank = ShadowBank(task, data, TensorCache(root), device, vectorise=vectorise, chunk=chunk, executor=executor)
        start = time.perf_counter()
        models = bank.models(requests)
        seconds = time.perf_counter() - start
        if bank.n_trained != len(requests):
            raise RuntimeError(f"expected {len(requests)} models trained, got {bank.n_trained}")
        own = [bank.metadata(r)["train_seconds"] for r in requests]
        return seconds, [state_dict_sha256(m.state_dict()) for m in models], float(np.mean(own))


def ray_start(workers: int, gpus: float = 0.0, declare_gpu: bool = False) -> tuple[RayExecutor, float]:
    """A local Ray (``workers`` CPUs) and its start-up time in seconds. ``declare_gpu`` (``--smoke``) declares one
    GPU to Ray on a machine without one, so that fractional-GPU tasks are scheduled (they then train on the CPU)."""
    executor = RayExecutor(workers=workers, gpus=gpus)
    start = time.perf_counter()
    if declare_gpu:
        executor.ray.init(num_cpus=workers, num_gpus=1, include_dashboard=False, logging_level="ERROR",
                          log_to_driver=False, _system_config={"worker_niceness": 0})
    executor.connect()
    return executor, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- parts
def executors_on(task: Task, data: Any, requests: list[ModelRequest], workers: int, device: torch.device,
                 vectorise: str, chunk: int, rounds: int, ray_gpus: float = 0.0, declare_gpu: bool = False
                 ) -> dict[str, Any]:
    """The same bank by the sequential executor, ``workers`` processes (CPU only) and Ray, in that order, repeated
    for ``rounds`` rounds (so that a change of load on the machine hits every executor alike); times are summed
    over rounds, own times averaged."""
    label = "vmap chunks" if vectorise == "always" else "models"
    seconds: dict[str, float] = {}
    own: dict[str, list[float]] = {}
    same: dict[str, bool] = {}
    start_ups: list[float] = []
    for round_ in range(rounds):
        runs: dict[str, tuple[float, list[str], float]] = {}
        log(f"round {round_ + 1}/{rounds}: sequential, {len(requests)} {label} in this process")
        runs["sequential"] = timed_bank(task, data, requests, SequentialExecutor(), device, vectorise, chunk)
        if device.type == "cpu" and not declare_gpu:
            log(f"processes: {workers} workers, a new pool")
            with ProcessExecutor(workers) as pool:
                runs["processes"] = timed_bank(task, data, requests, pool, device, vectorise, chunk)
                log("processes: the same pool again (warm workers), a fresh cache")
                runs["processes_warm"] = timed_bank(task, data, requests, pool, device, vectorise, chunk)
        ray, start_up = ray_start(workers, ray_gpus, declare_gpu)
        start_ups.append(start_up)
        log(f"ray: started in {start_up:.1f} s; {workers} workers")
        runs["ray"] = timed_bank(task, data, requests, ray, device, vectorise, chunk)
        ray.ray.shutdown()
        for name, (wall, hashes, own_mean) in runs.items():
            seconds[name] = seconds.get(name, 0.0) + wall
            own.setdefault(name, []).append(own_mean)
            same[name] = same.get(name, True) and hashes == runs["sequential"][1]
    base, base_own = seconds["sequential"], float(np.mean(own["sequential"]))
    out: dict[str, Any] = {}
    for name in seconds:
        own_mean = float(np.mean(own[name]))
        out[name] = {"seconds": seconds[name], "speedup": base / seconds[name], "identical_to_sequential": same[name],
                     "own_seconds_per_model": own_mean,
                     "ceiling": base_own / own_mean * (1 if name == "sequential" else workers)}
    out["ray"]["start_up_seconds"] = float(np.sum(start_ups))
    if "processes" in out:
        out["ray"]["extra_over_processes_seconds"] = seconds["ray"] - seconds["processes"]
    out["rounds"] = rounds
    return out


def one_by_one(task: Task, data: Any, requests: list[ModelRequest], device: torch.device) -> float:
    """Seconds per model trained one by one (the non-vectorised path), on a sample of the bank."""
    seconds, _, _ = timed_bank(task, data, requests, SequentialExecutor(), device, "never")
    return seconds / len(requests)


def resnet18_step(device: torch.device, steps: int = 3) -> dict[str, float]:
    """Seconds per SGD step of the zoo's resnet18 on a CIFAR-10-shaped batch of 128 (after one warm-up step)."""
    from muaudit.zoo import build_model

    model = build_model("resnet18", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3, seed=0).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32, device=device), torch.randint(0, 10, (128,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimiser.zero_grad()
        loss_fn(model(x), y).backward()
        optimiser.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps
    cifar = NAMED_TASKS["cifar10-random"]
    n_train = round(50_000 * (1 - cifar.dataset.val_fraction))
    steps_per_model = cifar.recipe.epochs * math.ceil(n_train / cifar.recipe.batch_size)
    return {"seconds_per_step": per_step, "steps_per_model": steps_per_model,
            "extrapolated_model_hours": per_step * steps_per_model / 3600}


def cpu_part(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    task, data, label = cnn_task(args.cnn_epochs, args.fmnist_root)
    pool = len(task.training_split(data))
    log(f"CNN bank: {args.cnn_models} x {label}")
    cnn = executors_on(task, data, halves(pool, args.cnn_models), args.workers, cpu, "never", 32, args.rounds)
    cnn["workload"] = f"{args.cnn_models} shadows, {label}, random halves of {pool} images"
    cnn["seconds_per_model_sequential"] = cnn["sequential"]["seconds"] / (args.cnn_models * args.rounds)
    mtask, mdata, mlabel = mlp_task()
    mpool = len(mtask.training_split(mdata))
    requests = halves(mpool, args.mlp_models)
    log(f"MLP bank: {args.mlp_models} x {mlabel}, vmap chunks of {args.mlp_models // args.workers}")
    mlp = executors_on(mtask, mdata, requests, args.workers, cpu, "always", args.mlp_models // args.workers,
                       args.rounds)
    mlp["workload"] = (f"{args.mlp_models} shadows, {mlabel}, vmap in chunks of {args.mlp_models // args.workers} "
                       f"(one chunk per worker), random halves of {mpool} examples")
    mlp["seconds_per_model_one_by_one"] = one_by_one(mtask, mdata, requests[:8], cpu)
    mlp["vmap_speedup_over_one_by_one"] = {
        name: mlp["seconds_per_model_one_by_one"] / (mlp[name]["seconds"] / (args.mlp_models * args.rounds))
        for name in ("sequential", "processes", "processes_warm", "ray")}
    log("ResNet-18 step (CIFAR-10 shape, one thread)")
    return {"cnn_bank": cnn, "mlp_bank": mlp, "resnet18_cifar10": resnet18_step(cpu)}


def gpu_part(args: argparse.Namespace) -> dict[str, Any]:
    """The GPU measurement; with ``--smoke``, the same code path on the CPU (Ray told it has one GPU), so that the
    prepared command is known to run before a lent GPU machine's minutes are spent on it."""
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("--part gpu needs CUDA (--smoke runs its code path on the CPU)")
    cuda = torch.device("cpu" if args.smoke else "cuda")
    task, data, label = cnn_task(args.cnn_epochs, args.fmnist_root)
    pool = len(task.training_split(data))
    requests = halves(pool, args.cnn_models)
    log(f"CNN bank on CUDA: {args.cnn_models} x {label}")
    out: dict[str, Any] = {"cnn_bank": executors_on(task, data, requests, args.gpu_workers, cuda, "never", 32,
                                                    args.rounds, ray_gpus=1.0 / args.gpu_workers,
                                                    declare_gpu=args.smoke)}
    out["cnn_bank"]["workload"] = f"{args.cnn_models} shadows, {label}; Ray: {args.gpu_workers} models per GPU"
    try:
        seconds, _, _ = timed_bank(task, data, requests, SequentialExecutor(), cuda, "always", args.cnn_models)
        out["cnn_bank"]["vmap_cuda"] = {"seconds": seconds,
                                        "speedup": out["cnn_bank"]["sequential"]["seconds"] / seconds}
    except ValueError as exc:  # an architecture vmap cannot train
        out["cnn_bank"]["vmap_cuda"] = {"skipped": str(exc)}
    out["resnet18_cifar10"] = resnet18_step(cuda, steps=1 if args.smoke else 20)
    out["gpu"] = "none (--smoke: the code path on the CPU)" if args.smoke else torch.cuda.get_device_name(0)
    return out


# --------------------------------------------------------------------------------------------- report
def markdown(part: str, result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Executors: shadow banks by the sequential executor, local processes and Ray ({part})", "",
             f"Measured {meta['date_utc']} by `{meta['command']}` on "
             f"{meta['machine']} (torch {meta['torch']}, Ray {meta['ray']}); every ratio is measured in this run.", ""]
    for key, title in (("cnn_bank", "CNN shadow bank"), ("mlp_bank", "digits MLP shadow bank, vmap")):
        if key not in result:
            continue
        bank = result[key]
        lines += [f"## {title}", "", f"Workload: {bank['workload']}; {bank['rounds']} round(s) of sequential, "
                  "processes, Ray, times summed over rounds.", "",
                  "| executor | wall s | speed-up vs sequential | own s per model | ceiling | bit-identical |",
                  "|---|---|---|---|---|---|"]
        for name in ("sequential", "processes", "processes_warm", "ray", "vmap_cuda"):
            if name in bank and "seconds" in bank[name]:
                row = bank[name]
                same = row.get("identical_to_sequential")
                own, ceiling = row.get("own_seconds_per_model"), row.get("ceiling")
                own_text = "-" if own is None else f"{own:.2f}"
                ceiling_text = "-" if ceiling is None else f"{ceiling:.2f}x"
                same_text = "-" if same is None else "yes" if same else "no"
                lines.append(f"| {ROW_NAMES.get(name, name)} | {row['seconds']:.1f} | {row['speedup']:.2f}x | {own_text} | {ceiling_text} | "
                             f"{same_text} |")
        if "processes_warm" in bank:
            fixed = (bank["processes"]["seconds"] - bank["processes_warm"]["seconds"]) / bank["rounds"]
            lines += ["", f"A new process pool's fixed cost (worker start, imports, first-model warm-up): {fixed:.1f} s "
                      "per command (new pool minus warm pool, per round)."]
        lines += ["", "*own s per model*: each model's training time as its worker measured it (a vmap chunk's time "
                  "shared equally). *ceiling*: workers x sequential own time / this executor's own time, the speed-up "
                  "if nothing but the models' own training took time; the gap to it is the executor's overhead, and a "
                  "ceiling under the worker count means the models train slower side by side (shared caches and "
                  "memory bandwidth)."]
        ray = bank["ray"]
        with_start = bank["sequential"]["seconds"] / (ray["seconds"] + ray["start_up_seconds"])
        lines += ["", f"Ray's fixed overhead: {ray['start_up_seconds']:.1f} s to start (in no row above; with it, "
                  f"Ray's speed-up is {with_start:.2f}x)"
                  + (f"; its run took {ray['extra_over_processes_seconds']:+.1f} s against a new process pool "
                     "(both start their workers and import; Ray adds its object store)"
                     if "extra_over_processes_seconds" in ray else "")
                  + "."]
        if "vmap_speedup_over_one_by_one" in bank:
            ratios = ", ".join(f"{ROW_NAMES.get(k, k)} {v:.1f}x" for k, v in bank["vmap_speedup_over_one_by_one"].items())
            lines += ["", f"One by one (no vmap): {bank['seconds_per_model_one_by_one']:.2f} s per model; the vmap "
                      f"banks' throughput against it: {ratios}."]
        lines.append("")
    step = result["resnet18_cifar10"]
    lines += ["## ResNet-18 on CIFAR-10 (for the README's extrapolation)", "",
              f"One SGD step (batch 128, 3x32x32): {step['seconds_per_step']:.3f} s. The `cifar10-random` recipe "
              f"is {step['steps_per_model']} steps per model, so one model would take about "
              f"{step['extrapolated_model_hours']:.1f} h here (extrapolated, not measured; data loading and "
              "augmentation not included).", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers (processes and Ray; default 2)")
    parser.add_argument("--gpu-workers", type=int, default=4, help="models sharing one GPU on Ray (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of sequential, processes, Ray (default 2)")
    parser.add_argument("--cnn-models", type=int, default=16)
    parser.add_argument("--cnn-epochs", type=int, default=2)
    parser.add_argument("--mlp-models", type=int, default=64)
    parser.add_argument("--fmnist-root", default=FASHION_MNIST_ROOT,
                        help="folder of the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--smoke", action="store_true",
                        help="with --part gpu: run its code path on the CPU (no GPU needed), to check the command")
    args = parser.parse_args()
    try:
        import ray
        ray_version = ray.__version__
    except ImportError:
        raise SystemExit("this benchmark needs Ray: pip install 'muaudit[ray]'") from None
    part: Callable[[argparse.Namespace], dict[str, Any]] = cpu_part if args.part == "cpu" else gpu_part
    start = time.perf_counter()
    result = part(args)
    meta = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "torch": torch.__version__,
            "command": " ".join(["python reports/scripts/bench_engine.py", *sys.argv[1:]]),
            "ray": ray_version, "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "machine": f"{os.cpu_count()} CPU(s), {platform.machine()}" + (
                f", {result['gpu']}" if args.part == "gpu" else ""),
            "args": vars(args) | {"out": str(args.out)}, "wall_seconds": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.part}-smoke" if args.smoke else args.part
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, **result}, indent=1, sort_keys=True))
    text = markdown(args.part, result, meta)
    (args.out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
