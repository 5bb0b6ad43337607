"""The ``muaudit`` command line: a thin shell over :mod:`muaudit.audit`.

Exit codes (:class:`ExitCode`): 0 success; 1 a regression gate failed (``--fail-on``, ``--require``, ``--gates``;
reported after the results are written); 2 a usage, task, data,
checkpoint or output error; 3 a plugin error (unknown, duplicate, broken, failing or contract-violating plugin,
named with its distribution; in ``compare``, any method that failed, reported after the others' results are
written); 4 an internal error; 130 interrupted (Ctrl-C). User errors print one line on stderr, never a traceback
(``MUAUDIT_DEBUG=1`` shows it for internal errors). A closed stdout (``muaudit ... | head``) ends quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from muaudit.defaults import DEFAULT_ATTACKS, DEFAULT_BUDGET, DEFAULT_PROXIES, DEFAULT_PROXY_GOLDS, MAX_GOLD_SEEDS


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE_ERROR = 2
    PLUGIN_ERROR = 3
    INTERNAL_ERROR = 4
    INTERRUPTED = 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")




_EPILOGS = {
    "train": """examples:
  muaudit train --task digits --out original.pt
  muaudit train --task fashion-mnist-random --out fmnist.pt
  muaudit train --task my_task.toml --out model.safetensors""",
    "score": """examples:
  muaudit score --method finetune                      # embedded default: the digits task
  muaudit score --method neggrad --method-arg lr=1e-3 --model original.pt
  muaudit score --method finetune --model weights.pt --task digits --arch mlp   # bare state dict
  muaudit score --method retrain --gold-seeds 4 --out reports/runs/retrain
  muaudit score --method finetune --fail-on "forget_error outside gold band" --fail-on "verdict != aligned"
  muaudit score --method neggrad --gates gates.toml    # fail_on = [...] and require = [...]""",
    "compare": """examples:
  muaudit compare --methods retrain,finetune,neggrad --out reports/runs/digits
  muaudit compare --methods finetune,neggrad --method-arg neggrad.lr=1e-3 --model original.pt
  muaudit compare --methods finetune,neggrad --fail-on "mia_loss_auc.upper > 0.55"   # per method""",
    "merge": """examples:
  muaudit merge runs/finetune runs/neggrad --out runs/all      # scorecards from two machines, one comparison
  muaudit merge runs/cmp-a/comparison.json runs/cmp-b --json""",
    "golds": """examples:
  muaudit golds --task fashion-mnist-random --gold-seeds 3 --cache-dir /shared/muaudit   # before a grid of jobs
  muaudit golds --task digits --attacks lira --attack-arg lira.n_shadows=64 --executor processes --workers 2""",
    "list": """examples:
  muaudit list
  muaudit list methods -v
  muaudit list tasks""",
    "describe": """examples:
  muaudit describe pgu
  muaudit describe finetune --task digits-class     # also show what preset=auto picks for that task""",
    "tune": """examples:
  muaudit tune --method finetune --budget 16                 # digits: proxies of the random 10% forget set
  muaudit tune --method neggrad --task digits-class --budget 8 --out reports/runs/tune-neggrad
  muaudit score --method finetune --tuned                    # audit with the tuned parameters""",
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="named task (see 'muaudit list tasks') or a .toml/.json task file")
    p.add_argument("--data-root", help="override the dataset location (directory, or .npz file)")
    p.add_argument("--cache-dir", help="model cache (default: $MUAUDIT_CACHE_DIR or ~/.cache/muaudit)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=["sequential", "processes", "ray"], default="sequential",
                   help="who trains missing models: this process (default), local worker processes, or Ray "
                        "(pip install 'muaudit[ray]')")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes for --executor processes; for --executor ray the CPUs of a Ray started "
                        "here and the models in flight (default: the CPU count)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join a running Ray: auto, host:port or ray://host:port (default: start a local Ray)")
    p.add_argument("--ray-cpus", type=float, default=1.0, metavar="C",
                   help="CPUs per model on Ray (also its torch threads; default 1)")
    p.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                   help="GPUs per model on Ray, fractions allowed (e.g. 0.25: four models share a GPU; default 0)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint of the original model (default: train one for the task)")
    p.add_argument("--arch", help="architecture of a bare state dict given with --model")
    p.add_argument("--arch-factory", metavar="MODULE:CALLABLE",
                   help="your own architecture: build(input_shape, n_classes, **options) -> nn.Module (no "
                        "normalisation); hashed into the cache key by name and source")
    p.add_argument("--strip-prefix", action="append", default=[], metavar="PREFIX",
                   help="remove PREFIX from the checkpoint's keys, e.g. module. (repeatable)")
    p.add_argument("--key-map", metavar="FILE|NAME",
                   help="rename the checkpoint's keys: a JSON file {rename, patterns}, 'order' (by position, "
                        "shapes must match) or a built-in map (torchvision-resnet18, kuangliu-resnet18)")
    p.add_argument("--normalize", metavar="none|data|MEAN/STD",
                   help="the input normalisation of a checkpoint without muaudit's normalize.* buffers")


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    _add_model_options(p)
    p.add_argument("--gold-seeds", type=int, default=2, metavar="K",
                   help=f"gold models to train (default 2, at most {MAX_GOLD_SEEDS} unless $MUAUDIT_MAX_GOLD_SEEDS "
                        "allows more)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a method hyperparameter (repeatable)")
    p.add_argument("--seed", type=int, help="method seed (default: derived from the task seed)")
    p.add_argument("--attacks", "--attack", dest="attacks", default=DEFAULT_ATTACKS, metavar="NAMES",
                   help=f"comma-separated membership attacks for the scorecard (default {DEFAULT_ATTACKS}; "
                        "shadow-model attacks such as shadow-xgb, lira, ulira train extra models)")
    p.add_argument("--attack-arg", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="an attack parameter, e.g. lira.n_shadows=32 (repeatable)")
    p.add_argument("--challenge-models", type=int, default=0, metavar="N",
                   help="add the NeurIPS 2023 challenge score from N unlearned runs and N gold models "
                        "(plus N more gold models for its noise floor); 0 = off (default); the challenge used 512")
    p.add_argument("--out", help="directory to write the JSON and Markdown results into")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--fail-on", action="append", default=[], metavar="EXPR",
                   help="a regression gate: exit 1 (after writing the results) when EXPR is TRUE, e.g. "
                        "'forget_error.gap > 2*gold_spread', 'verdict != aligned', 'forget_error outside gold band' "
                        "(repeatable; grammar in muaudit.gates)")
    p.add_argument("--require", action="append", default=[], metavar="EXPR",
                   help="a regression gate: exit 1 when EXPR is FALSE, e.g. 'forget_error within gold band' "
                        "(repeatable)")
    p.add_argument("--gates", action="append", default=[], metavar="FILE",
                   help="a TOML file of gates: fail_on = [EXPR, ...] and require = [EXPR, ...] (repeatable)")
    p.add_argument("--retain-sample", default="10000", metavar="N|all",
                   help="retain-set readouts and attack fits on a fixed, seeded sample of N examples of D_r "
                        "(default 10000; 'all' = all of D_r); methods always get all of D_r")


def _add_method_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method-seeds", type=int, default=1, metavar="K",
                   help="run each method K times with derived seeds: every readout as mean, sd and interval "
                        "over seeds, and verdicts over seeds (default 1)")


def _add_tune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proxies", type=int, default=DEFAULT_PROXIES, metavar="K",
                   help=f"proxy forget sets, disjoint from D_f (default {DEFAULT_PROXIES})")
    p.add_argument("--proxy-golds", type=int, default=DEFAULT_PROXY_GOLDS, metavar="G",
                   help=f"gold models per proxy forget set (default {DEFAULT_PROXY_GOLDS})")
    p.add_argument("--tune-seed", type=int, help="seed of the proxies and configurations (default: from the task)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="muaudit", description="Audit machine unlearning against the gold retrained model.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser("train", help="train the original model of a task", epilog=_EPILOGS["train"],
                           formatter_class=fmt)
    _add_common(train)
    train.add_argument("--out", required=True, help="checkpoint path (.pt or .safetensors)")
    train.add_argument("--arch-factory", metavar="MODULE:CALLABLE",
                       help="train your own architecture: build(input_shape, n_classes, **options) -> nn.Module")
    score = sub.add_parser("score", help="audit one method and print its scorecard", epilog=_EPILOGS["score"],
                           formatter_class=fmt)
    score.add_argument("--method", required=True, help="method name (or dist:name)")
    _add_audit_options(score)
    _add_method_seeds(score)
    score.add_argument("--tuned", action="store_true",
                       help="use the parameters 'muaudit tune' selects (cached; run first if missing)")
    score.add_argument("--tune-budget", type=int, default=None, metavar="N",
                       help="the tuning budget for --tuned (default 16)")
    _add_tune_options(score)
    compare = sub.add_parser("compare", help="audit several methods on the same task and gold models",
                             epilog=_EPILOGS["compare"], formatter_class=fmt)
    compare.add_argument("--methods", required=True, help="comma-separated method names")
    _add_method_seeds(compare)
    _add_audit_options(compare)
    compare.add_argument("--tune", type=int, default=0, metavar="N",
                         help="tune every method with the same budget of N configurations first (0 = off)")
    _add_tune_options(compare)
    tune = sub.add_parser("tune", help="tune a method on proxy forget sets (the same budget for every method)",
                          epilog=_EPILOGS["tune"], formatter_class=fmt)
    tune.add_argument("--method", required=True, help="method name (or dist:name)")
    tune.add_argument("--budget", type=int, default=None, metavar="N",
                      help="configurations to try, the method's defaults included (default 16)")
    _add_common(tune)
    _add_model_options(tune)
    tune.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                      help="fix a method hyperparameter (not searched; repeatable)")
    tune.add_argument("--out", help="directory to write tune.json and tune.md into")
    _add_tune_options(tune)
    merge = sub.add_parser("merge", help="combine scorecards from several runs or machines into one comparison",
                           epilog=_EPILOGS["merge"], formatter_class=fmt)
    merge.add_argument("paths", nargs="+", metavar="PATH",
                       help="a scorecard.json or comparison.json, or a directory holding one")
    merge.add_argument("--out", help="directory to write comparison.json, comparison.md and report.html into")
    merge.add_argument("--json", action="store_true", help="print JSON instead of the table")
    golds = sub.add_parser("golds", help="train and cache a task's original and gold models (warm a shared cache)",
                           epilog=_EPILOGS["golds"], formatter_class=fmt)
    _add_common(golds)
    golds.add_argument("--gold-seeds", type=int, default=2, metavar="K", help="gold models to cache (default 2)")
    golds.add_argument("--attacks", "--attack", dest="attacks", default="", metavar="NAMES",
                       help="also warm these attacks: their shadow models, and their runs on the original and gold "
                            "models (e.g. lira,shadow-xgb; default none)")
    golds.add_argument("--attack-arg", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                       help="an attack parameter, e.g. lira.n_shadows=64 (repeatable; as given to score)")
    golds.add_argument("--retain-sample", default="10000", metavar="N|all",
                       help="as given to score (attack runs are cached per retain sample; default 10000)")
    lister = sub.add_parser("list", help="list methods, attacks and tasks", epilog=_EPILOGS["list"],
                            formatter_class=fmt)
    lister.add_argument("what", nargs="?", choices=["methods", "attacks", "tasks"], help="only this kind")
    lister.add_argument("-v", "--verbose", action="store_true", help="methods: every parameter and preset")
    describe = sub.add_parser("describe", help="a method's parameters, ranges, search space and presets",
                              epilog=_EPILOGS["describe"], formatter_class=fmt)
    describe.add_argument("method", help="method name (or dist:name)")
    describe.add_argument("--task", help="also show which preset 'auto' picks for this task")
    describe.add_argument("--data-root", help="override the dataset location of --task")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns an :class:`ExitCode`."""
    from muaudit.errors import MuauditError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.version:
            from muaudit import __version__

            print(f"muaudit {__version__}")
            return ExitCode.OK
        if args.command is None:
            parser.print_help()
            return ExitCode.USAGE_ERROR
        _configure_logging(args)
        return _COMMANDS[args.command](args)
    except _UsageError as exc:
        return _fail(str(exc), ExitCode.USAGE_ERROR)
    except MuauditError as exc:
        return _fail(str(exc), ExitCode(exc.exit_code))
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:  # the reader went away (``muaudit ... | head``): end quietly
        _silence_stdout()
        return ExitCode.OK
    except Exception as exc:  # an internal error: still one line unless debugging
        if os.environ.get("MUAUDIT_DEBUG"):
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(f"internal error: {type(exc).__name__}: {detail} (set MUAUDIT_DEBUG=1 for details)",
                     ExitCode.INTERNAL_ERROR)


def _configure_logging(args: argparse.Namespace) -> None:
    """One stderr line per audit phase (the ``muaudit`` logger) when stderr is not a terminal, where progress bars
    cannot be drawn (a pipe, a CI log); silent with ``--quiet`` and in a terminal (the bars show progress)."""
    import logging

    logger = logging.getLogger("muaudit")
    if getattr(args, "quiet", True) or sys.stderr.isatty() or any(
            getattr(h, "_muaudit_cli", False) for h in logger.handlers):
        return
    handler = _stderr_handler()
    handler.setFormatter(logging.Formatter("muaudit: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _stderr_handler() -> Any:
    """A logging handler that writes to whatever ``sys.stderr`` is at each record (it may be replaced later, e.g.
    by pytest's capture); logging is imported only when the log is wanted."""
    import logging

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        _muaudit_cli = True

        @property  # type: ignore[override]
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    return StderrHandler()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(message: str, code: ExitCode) -> int:
    print(f"muaudit: error: {message}", file=sys.stderr)
    return int(code)


# ---------------------------------------------------------------------------------------- commands
def _task(args: argparse.Namespace) -> Any:
    from muaudit.task import resolve_task

    return None if args.task is None else resolve_task(args.task)


def _executor(args: argparse.Namespace) -> Any:
    from muaudit.engine import make_executor

    return make_executor(getattr(args, "executor", "sequential"), getattr(args, "workers", None),
                         getattr(args, "ray_address", None), getattr(args, "ray_cpus", 1.0),
                         getattr(args, "ray_gpus", 0.0))


def _runtime(args: argparse.Namespace) -> tuple[Any, Any]:
    from muaudit.cache import TensorCache
    from muaudit.training import resolve_device

    return TensorCache(args.cache_dir), resolve_device(args.device)


def _cmd_train(args: argparse.Namespace) -> int:
    from muaudit.audit import checkpoint_metadata, train_original
    from muaudit.shadows import ShadowBank
    from muaudit.checkpoint import save_checkpoint
    from muaudit.task import NAMED_TASKS

    _check_executor(args)
    cache, device = _runtime(args)
    task = (_task(args) or NAMED_TASKS["digits"]).with_data_root(args.data_root)
    if args.arch_factory:
        from dataclasses import replace

        from muaudit.factories import factory_arch
        from muaudit.task import ModelSpec

        task = replace(task, model=ModelSpec(factory_arch(args.arch_factory), task.model.options, task.model.normalize))
    data = task.dataset.load()
    task = task.materialise(data)
    trained = train_original(ShadowBank(task, data, cache, device, progress=not args.quiet, executor=_executor(args)))
    sha = save_checkpoint(trained.model, args.out,
                          checkpoint_metadata(task, "original", trained.seed, trained.train_seconds))
    print(f"wrote {args.out} (task {task.name} [{task.content_hash()[:12]}], arch {task.model.arch}, "
          f"forget set of {len(task.forget_indices or ())}, sha256 {sha[:12]})")
    return ExitCode.OK


def _setup(args: argparse.Namespace, golds: bool = True) -> Any:
    """Data and original model, and (unless ``golds`` is False, for tuning first) the gold models."""
    from muaudit.audit import prepare

    gold_seeds = getattr(args, "gold_seeds", 1)
    _check_gold_seeds(gold_seeds)
    if getattr(args, "challenge_models", 0) and args.challenge_models < 3:
        raise _UsageError("--challenge-models needs at least 3 models (or 0 for off)")
    cache, device = _runtime(args)
    task, arch, adapter = _model_source(args)
    return prepare(task, args.model, arch, args.data_root, gold_seeds if golds else 0, cache, device,
                   progress=not args.quiet, retain_sample_size=_retain_sample(args), adapter=adapter,
                   executor=_executor(args))


def _model_source(args: argparse.Namespace) -> tuple[Any, str | None, Any]:
    """The task (with a factory architecture when no checkpoint is given), the architecture and the adapter."""
    from dataclasses import replace

    from muaudit.adapt import StateAdapter, parse_normalize
    from muaudit.factories import factory_arch
    from muaudit.task import NAMED_TASKS, ModelSpec

    task, arch = _task(args), args.arch
    if getattr(args, "arch_factory", None):
        if arch is not None:
            raise _UsageError("give either --arch or --arch-factory, not both")
        arch = factory_arch(args.arch_factory)
        if args.model is None:  # train the original (and gold models) with the user's architecture
            base = task or NAMED_TASKS["digits"]
            task, arch = replace(base, model=ModelSpec(arch, base.model.options, base.model.normalize)), None
    normalize = parse_normalize(args.normalize) if getattr(args, "normalize", None) else None
    adapter = StateAdapter(tuple(getattr(args, "strip_prefix", ())), getattr(args, "key_map", None), normalize)
    return task, arch, adapter


def _retain_sample(args: argparse.Namespace) -> int | None:
    text = str(getattr(args, "retain_sample", "all")).strip().lower()
    if text == "all":
        return None
    try:
        size = int(text)
    except ValueError:
        raise _UsageError(f"--retain-sample must be a positive integer or 'all', got {text!r}") from None
    if size < 1:
        raise _UsageError(f"--retain-sample must be a positive integer or 'all', got {size}")
    return size


def _check_tune_options(args: argparse.Namespace, budget: int | None) -> None:
    """Usage errors of the tuning options, before any training."""
    if budget is not None and budget < 1:
        raise _UsageError(f"the tuning budget must be at least 1, got {budget}")
    if args.proxies < 1:
        raise _UsageError(f"--proxies must be at least 1, got {args.proxies}")
    if args.proxy_golds < 1:
        raise _UsageError(f"--proxy-golds must be at least 1, got {args.proxy_golds}")


def _tune(setup: Any, plugin: Any, params: dict[str, Any], budget: int, args: argparse.Namespace) -> Any:
    """Run (or load from the cache) ``muaudit tune`` for one method; one progress line on stderr."""
    from muaudit.tune import tune

    if not args.quiet:
        print(f"muaudit: tuning {plugin.spec.name} ({budget} configurations x {args.proxies} proxy forget "
              f"set(s))", file=sys.stderr)
    return tune(setup, plugin, params, budget=budget, proxies=args.proxies, proxy_golds=args.proxy_golds,
                seed=args.tune_seed)


def _tuned_run(setup: Any, plugin: Any, params: dict[str, Any], result: Any, seed: int | None) -> Any:
    """Run the method with the tuned parameters, recording the tuning in the run's provenance."""
    from dataclasses import replace

    from muaudit.audit import run_method

    return replace(run_method(setup, plugin, dict(result.chosen), seed), tuning=result.summary())


def _report_signal(setup: Any, card: Any) -> None:
    """The signal line and any consistency warning, once, on stderr."""
    if card.signal is None:
        return
    from muaudit.signal import too_few_examples

    print(f"muaudit: {card.signal['line']}", file=sys.stderr)
    few = too_few_examples(len(setup.forget))
    if few is not None:
        print(f"muaudit: verdicts {few}", file=sys.stderr)
    for warning in card.signal["warnings"]:
        print(f"muaudit: warning: {warning}", file=sys.stderr)


def _precheck(group: str, name: str, pairs: Sequence[str]) -> None:
    """Cheap checks before any heavy import: the plugin exists and every KEY=VALUE names one of its parameters
    (from its cached declarations; types and ranges are checked when the plugin is loaded)."""
    from muaudit.errors import ParameterError
    from muaudit.plugins import declarations, resolve

    spec = resolve(group, name)
    known = {p["name"] for p in declarations(spec)["params"]}
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"Expected key=value for a parameter of {spec.name}, got {pair!r}.")
        if key.strip() not in known:
            raise ParameterError(f"{spec.name} has no parameter {key.strip()!r} (known parameters: "
                                 f"{', '.join(sorted(known)) or 'none'}).")


def _check_executor(args: argparse.Namespace) -> None:
    """The executor options' usage errors, before anything is loaded or trained (an explicit Ray address must
    answer within :data:`muaudit.rayconnect.RAY_CONNECT_TIMEOUT_S` seconds)."""
    executor = getattr(args, "executor", "sequential")
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise _UsageError(f"--workers must be at least 1, got {workers}")
    if workers is not None and executor == "sequential":
        raise _UsageError("--workers needs --executor processes or ray")
    ray_options = [f"--ray-{name}" for name, default in (("address", None), ("cpus", 1.0), ("gpus", 0.0))
                   if getattr(args, f"ray_{name}", default) != default]
    if ray_options and executor != "ray":
        raise _UsageError(f"{ray_options[0]} needs --executor ray")
    if executor == "ray":
        _check_ray(args)


def _check_ray(args: argparse.Namespace) -> None:
    from muaudit.rayconnect import check_ray_address, missing_ray_message, ray_installed

    if not ray_installed():
        raise _UsageError(missing_ray_message())
    if not args.ray_cpus > 0 or args.ray_gpus < 0:
        raise _UsageError(f"--ray-cpus must be > 0 and --ray-gpus >= 0, got {args.ray_cpus} and {args.ray_gpus}")
    if args.ray_address not in (None, "auto"):
        check_ray_address(args.ray_address)


def _check_audit_options(args: argparse.Namespace) -> None:
    """The audit options' usage errors, before any heavy import."""
    _check_executor(args)
    _check_gold_seeds(getattr(args, "gold_seeds", 1))
    if getattr(args, "challenge_models", 0) and args.challenge_models < 3:
        raise _UsageError("--challenge-models needs at least 3 models (or 0 for off)")
    _retain_sample(args)


def _check_gold_seeds(count: int) -> None:
    """``--gold-seeds`` lies in [1, the documented bound] (``$MUAUDIT_MAX_GOLD_SEEDS`` raises the bound)."""
    from muaudit.defaults import max_gold_seeds

    if count < 1:
        raise _UsageError("--gold-seeds must be at least 1")
    bound = max_gold_seeds()
    if count > bound:
        raise _UsageError(f"--gold-seeds {count} exceeds the bound of {bound} gold models (each is a full "
                          "retrain); set MUAUDIT_MAX_GOLD_SEEDS to allow more")


def _precheck_attacks(names: str, pairs: Sequence[str]) -> None:
    from muaudit.plugins import ATTACKS

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted or len(set(wanted)) != len(wanted):
        raise _UsageError("--attacks needs distinct, comma-separated attack names")
    per_attack = _split_prefixed(wanted, pairs, "--attack-arg ATTACK.KEY=VALUE", "--attacks")
    for name in wanted:
        _precheck(ATTACKS, name, per_attack[name])


def _load_method(name: str, pairs: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    from muaudit.params import parse_param_strings
    from muaudit.plugins import METHODS, load_by_name

    plugin = load_by_name(METHODS, name)
    params = parse_param_strings(plugin.spec.name, plugin.cls.params, pairs)
    plugin.cls(**params)  # validate before any expensive work
    return plugin, params


def _load_attacks(names: str, pairs: Sequence[str]) -> list[tuple[Any, dict[str, Any]]]:
    """The ``--attacks`` plugins with their validated ``--attack-arg`` parameters."""
    from muaudit.params import parse_param_strings
    from muaudit.plugins import ATTACKS, load_by_name

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted or len(set(wanted)) != len(wanted):
        raise _UsageError("--attacks needs distinct, comma-separated attack names")
    per_attack = _split_prefixed(wanted, pairs, "--attack-arg ATTACK.KEY=VALUE", "--attacks")
    loaded = []
    for name in wanted:
        plugin = load_by_name(ATTACKS, name)
        params = parse_param_strings(plugin.spec.name, plugin.cls.params, per_attack[name])
        plugin.cls(**params)  # validate before any expensive work
        loaded.append((plugin, params))
    return loaded


def _cmd_score(args: argparse.Namespace) -> int:
    from muaudit.plugins import METHODS

    _precheck(METHODS, args.method, args.method_arg)
    _precheck_attacks(args.attacks, args.attack_arg)
    _check_audit_options(args)
    gates = _gates(args)
    budget = args.tune_budget if args.tune_budget is not None else DEFAULT_BUDGET
    if args.tune_budget is not None and not args.tuned:
        raise _UsageError("--tune-budget needs --tuned")
    _check_tune_options(args, budget)
    _check_method_seeds(args)
    _check_out_dir(args.out)
    from muaudit.audit import add_golds, build_scorecard, run_method

    plugin, params = _load_method(args.method, args.method_arg)
    attacks = _load_attacks(args.attacks, args.attack_arg)
    setup = _setup(args, golds=False)  # tuning, if any, happens before the gold models exist
    result = _tune(setup, plugin, params, budget, args) if args.tuned else None
    add_golds(setup, args.gold_seeds)
    run = (_tuned_run(setup, plugin, params, result, args.seed) if result is not None
           else run_method(setup, plugin, params, args.seed))
    card = build_scorecard(setup, run, attacks, args.challenge_models)
    if args.method_seeds > 1:
        card = _over_seeds(setup, card, run, attacks, args, result)
    _report_signal(setup, card)
    written = _emit(card.to_json() if args.json else card.to_text(), args.out,
                    {"scorecard.json": card.to_json(), "scorecard.md": card.to_markdown()}, lambda: _report(card))
    return _apply_gates(gates, [card], written)


def _check_method_seeds(args: argparse.Namespace) -> None:
    if args.method_seeds < 1:
        raise _UsageError(f"--method-seeds must be at least 1, got {args.method_seeds}")


def _over_seeds(setup: Any, card: Any, run: Any, attacks: Any, args: argparse.Namespace, tuned: Any) -> Any:
    """The first run's scorecard with statistics over ``--method-seeds`` runs (:mod:`muaudit.seeds`)."""
    from dataclasses import replace

    from muaudit.audit import build_scorecard
    from muaudit.seeds import method_seeds, seed_section

    seeds = method_seeds(run.seed, args.method_seeds)
    params = dict(tuned.chosen) if tuned is not None else run.params
    from muaudit.engine import executor_of

    runs = executor_of(setup).run_methods(setup, run.plugin, params, seeds[1:])  # spread over the executor's workers
    cards = [card] + [build_scorecard(setup, r, attacks, args.challenge_models) for r in runs]
    return replace(card, method_seeds=seed_section(cards, seeds))


def _gates(args: argparse.Namespace) -> list[Any]:
    """Parse ``--fail-on``, ``--require`` and ``--gates`` and check their names against the readouts this audit
    will have: usage errors (exit 2) before any training."""
    from muaudit.gates import audit_vocabulary, gate_list
    from muaudit.plugins import ATTACKS, resolve

    gates = gate_list(args.fail_on, args.require, args.gates)
    if gates:
        attacks = [resolve(ATTACKS, n.strip()).name for n in args.attacks.split(",") if n.strip()]
        task = _task(args)
        poisoning = task is not None and task.forget.kind == "label-flip"
        audit_vocabulary(attacks, args.gold_seeds, bool(args.challenge_models), poisoning).check(gates)
    return gates


def _apply_gates(gates: Sequence[Any], cards: Sequence[Any], written: int) -> int:
    """Evaluate the gates on every scorecard (after the results are written): one stderr line per violated gate
    (value, bound, interval, gold band) and a summary; exit 1 when any is violated, 2 when one cannot be
    evaluated, or ``written`` when writing failed."""
    if not gates:
        return written
    from muaudit.gates import GateError, evaluate, summary_line

    results, errors = [], 0
    for card in cards:
        try:
            results += evaluate(card, gates)
        except GateError as exc:
            errors += 1
            _fail(str(exc), ExitCode.USAGE_ERROR)
    for result in results:
        if result.violated:
            print(f"muaudit: {result.line()}", file=sys.stderr)
    print(f"muaudit: {summary_line(results)}", file=sys.stderr)
    if written != ExitCode.OK:
        return written
    if errors:
        return ExitCode.USAGE_ERROR
    return ExitCode.GATE_FAILED if any(r.violated for r in results) else ExitCode.OK


def _split_prefixed(names: list[str], pairs: Sequence[str], form: str, option: str) -> dict[str, list[str]]:
    """Group ``NAME.KEY=VALUE`` strings by NAME (which must be one of ``names``)."""
    grouped: dict[str, list[str]] = {n: [] for n in names}
    for pair in pairs:
        prefix, dot, rest = pair.partition(".")
        if not dot or prefix not in grouped:
            raise _UsageError(f"expected {form} with a name given in {option}, got {pair!r}")
        grouped[prefix].append(rest)
    return grouped


def _tune_or_skip(setup: Any, plugin: Any, params: dict[str, Any], args: argparse.Namespace) -> Any:
    """Tune one method of a comparison; a method with nothing to tune (e.g. retrain) runs with its defaults."""
    from muaudit.tune import has_search_space

    if not has_search_space(plugin.cls, params):
        print(f"muaudit: {plugin.spec.name} has nothing to tune; it runs with its defaults", file=sys.stderr)
        return None
    return _tune(setup, plugin, params, args.tune, args)


def _cmd_compare(args: argparse.Namespace) -> int:
    from muaudit.plugins import METHODS

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise _UsageError("--methods needs distinct, comma-separated method names")
    pairs = _split_prefixed(names, args.method_arg, "--method-arg METHOD.KEY=VALUE", "--methods")
    for name in names:
        _precheck(METHODS, name, pairs[name])
    _precheck_attacks(args.attacks, args.attack_arg)
    _check_audit_options(args)
    gates = _gates(args)
    if args.tune < 0:
        raise _UsageError(f"--tune must be 0 (off) or a budget of at least 1, got {args.tune}")
    _check_tune_options(args, args.tune or None)
    _check_method_seeds(args)
    _check_out_dir(args.out)
    from muaudit.audit import add_golds, build_scorecard, run_method
    from muaudit.comparison import compare_methods

    loaded = [_load_method(n, pairs[n]) for n in names]
    attacks = _load_attacks(args.attacks, args.attack_arg)
    setup = _setup(args, golds=False)  # tuning, if any, happens before the gold models exist
    tuned: dict[str, Any] = {}
    if args.tune:  # tuning failures are recorded per method below, like any other failure of that method
        for plugin, kw in loaded:
            try:
                tuned[plugin.spec.name] = _tune_or_skip(setup, plugin, kw, args)
            except Exception as exc:  # noqa: BLE001 - re-raised inside that method's own audit below
                tuned[plugin.spec.name] = exc
    add_golds(setup, args.gold_seeds)

    def audit_one(plugin: Any, kw: dict[str, Any]) -> Any:
        result = tuned.get(plugin.spec.name)
        if isinstance(result, Exception):
            raise result
        run = (_tuned_run(setup, plugin, kw, result, args.seed) if result is not None
               else run_method(setup, plugin, kw, args.seed))
        card = build_scorecard(setup, run, attacks, args.challenge_models)
        return _over_seeds(setup, card, run, attacks, args, result) if args.method_seeds > 1 else card

    comparison = compare_methods(setup, loaded, audit_one)
    if comparison.scorecards:
        _report_signal(setup, comparison.scorecards[0])
    for failure in comparison.failures:
        print(f"muaudit: {failure.method} ({failure.distribution} {failure.version}) {failure.kind}: "
              f"{failure.reason}", file=sys.stderr)
    text = comparison.to_json() if args.json else comparison.to_markdown()
    files = {"comparison.json": comparison.to_json(), "comparison.md": comparison.to_markdown()}
    written = _emit(text, args.out, files, lambda: _report(comparison))
    gated = _apply_gates(gates, list(comparison.scorecards), written)
    if written != ExitCode.OK:
        return written
    if comparison.interrupted:
        return _fail("interrupted; the scorecards computed before the interrupt were kept", ExitCode.INTERRUPTED)
    if comparison.failures:
        return _fail(f"{len(comparison.failures)} of {len(loaded)} method(s) failed (see above); the others' "
                     f"results were kept", ExitCode.PLUGIN_ERROR)
    return gated


def _cmd_list(args: argparse.Namespace) -> int:
    from muaudit.errors import PluginError
    from muaudit.plugins import ATTACKS, METHODS, declarations, discover

    broken = 0
    if args.what in (None, "tasks"):
        _list_tasks()
    for group, title in ((METHODS, "methods"), (ATTACKS, "attacks")):
        if args.what not in (None, title):
            continue
        print(f"{title}:")
        for spec in discover(group):
            try:
                decl = declarations(spec)
            except PluginError as exc:
                broken += 1
                print(f"  {spec.name:<16} {spec.dist} {spec.version}  BROKEN: {exc}")
                continue
            needs = ", ".join(decl["needs"]) or "forget set only"
            extra = f"  [needs: {needs}]" if group == METHODS else ""
            print(f"  {spec.name:<16} {spec.dist} {spec.version}  {decl['summary']}{extra}")
            if group == METHODS and getattr(args, "verbose", False):
                from muaudit.describe import describe_method

                text = describe_method(spec.name, spec.dist, spec.version, decl)
                print("\n".join("      " + line for line in text.splitlines()[3:]))
    return ExitCode.PLUGIN_ERROR if broken else ExitCode.OK


def _list_tasks() -> None:
    from muaudit.task import NAMED_TASKS

    signals = _measured_signals()
    print("tasks:")
    for name, task in NAMED_TASKS.items():
        forget = {k: v for k, v in vars(task.forget).items() if v is not None}
        subset = f" ({task.dataset.train_subset} training examples)" if task.dataset.train_subset else ""
        print(f"  {name:<24} {task.dataset.name}{subset}, {task.model.arch}, {task.recipe.epochs} epochs, "
              f"forget {forget}")
        print(f"  {'':<24} {_signal_text(task, signals.get(name))}")


def _measured_signals() -> dict[str, Any]:
    """The committed measurements of ``reports/scripts/task_signals.py`` (shipped as package data)."""
    from importlib.resources import files

    try:
        return json.loads(files("muaudit").joinpath("task_signals.json").read_text())
    except (OSError, ValueError):
        return {}


def _signal_text(task: Any, record: dict[str, Any] | None) -> str:
    from muaudit.task import spec_digest

    if record is None:
        return "signal: not measured"
    if record.get("spec_digest") != spec_digest(task):
        return f"signal: measured {record['measured']} for an earlier definition of this task (re-measure)"
    ratio = record["gap_in_spreads"]
    spread = ("gold models agree exactly" if ratio is None else f"gap {ratio}x the gold spread")
    verdict = "shows forgetting" if record["detectable"] else "CANNOT show forgetting"
    return (f"signal: {verdict}: forget error original {record['forget_error_original']}% vs gold "
            f"{record['forget_error_gold']}% ({spread}); {record['checks']} checks separate them "
            f"(measured {record['measured']}, {record['gold_seeds']} gold seeds)")


def _check_out_dir(out: str | None) -> None:
    """``--out`` must be (or be creatable as) a writable directory: checked before any expensive work."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise _UsageError(f"--out {out}: exists and is not a directory")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise _UsageError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _UsageError(f"--out {out}: {existing} is not writable")


def _report(result: Any) -> dict[str, str | bytes]:
    """``report.html``, ``arrays.npz`` and ``roc.npz`` of a scorecard or comparison (matplotlib loads here)."""
    from muaudit.report import report_files

    return report_files(result)


def _emit(text: str, out: str | None, files: dict[str, str | bytes],
          extra: Callable[[], dict[str, str | bytes]] | None = None) -> int:
    """Write the result files (when ``--out`` is given), then print ``text``; if writing fails after all, the
    result is still printed, then the failure is reported (exit 2): an audit's result is never lost. ``extra``
    renders further files (the report); if that fails, the other files are still written and the failure is
    reported as an internal error (exit 4)."""
    failure, code = None, ExitCode.USAGE_ERROR
    if out:
        files = dict(files)
        if extra is not None:
            try:
                files.update(extra())
            except Exception as exc:  # noqa: BLE001 - a report bug must not lose the audit's result
                if os.environ.get("MUAUDIT_DEBUG"):
                    traceback.print_exc()
                failure, code = (f"internal error: could not render the report ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); the other files were "
                                 f"written"), ExitCode.INTERNAL_ERROR
        try:
            _write_outputs(Path(out), files)
        except OSError as exc:
            failure, code = (f"could not write --out {out}: {exc.strerror or exc}; the result is printed above "
                             f"instead"), ExitCode.USAGE_ERROR
    print(text)
    return _fail(failure, code) if failure else ExitCode.OK


def _write_outputs(directory: Path, files: dict[str, str | bytes]) -> None:
    """Write every file to a temporary name first, then rename all: no half-written output."""
    from muaudit.files import publish

    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, content in files.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(content if isinstance(content, bytes) else content.encode("utf-8"))
            staged.append((tmp, directory / name))
        for tmp, final in staged:
            publish(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    print(f"wrote {', '.join(str(directory / n) for n in files)}", file=sys.stderr)


def _cmd_tune(args: argparse.Namespace) -> int:
    from muaudit.plugins import METHODS

    _precheck(METHODS, args.method, args.method_arg)
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    _check_tune_options(args, budget)
    _check_executor(args)
    _check_out_dir(args.out)
    plugin, params = _load_method(args.method, args.method_arg)
    from muaudit.tune import search_space

    search_space(plugin.cls, params, plugin.spec.describe())  # nothing to search: fail before any training
    result = _tune(_setup(args, golds=False), plugin, params, budget, args)
    return _emit(result.to_markdown(), args.out, {"tune.json": result.to_json(), "tune.md": result.to_markdown()})


def _cmd_describe(args: argparse.Namespace) -> int:
    from muaudit.describe import describe_method
    from muaudit.plugins import METHODS, declarations, load, resolve

    spec = resolve(METHODS, args.method)
    decl = declarations(spec)
    reason = None
    if args.data_root is not None and args.task is None:
        raise _UsageError("--data-root applies to the --task of describe; no --task was given")
    from muaudit.task import resolve_task

    task = None if args.task is None else resolve_task(args.task, args.data_root)  # a bad --task is an error
    if task is not None and decl.get("presets"):  # which preset 'auto' picks needs the task and the class
        from muaudit.presets import profile_of

        data = task.dataset.load()
        reason = load(spec).cls.auto_preset(profile_of(task.materialise(data), data)).reason
    print(describe_method(spec.name, spec.dist, spec.version, decl, reason))
    return ExitCode.OK


def _cmd_merge(args: argparse.Namespace) -> int:
    _check_out_dir(args.out)
    from muaudit.merge import merge, read_source

    comparison = merge([read_source(p) for p in args.paths])
    text = comparison.to_json() if args.json else comparison.to_markdown()
    files = {"comparison.json": comparison.to_json(), "comparison.md": comparison.to_markdown()}
    return _emit(text, args.out, files, lambda: _report(comparison))


def _cmd_golds(args: argparse.Namespace) -> int:
    """Train (or find) the original and ``--gold-seeds`` gold models in the cache, and with ``--attacks`` those
    attacks' shadow banks and their runs on the original and gold models, so later jobs only read them."""
    _check_gold_seeds(args.gold_seeds)
    _check_executor(args)
    retain = _retain_sample(args)
    attacks = _warmable_attacks(args)
    from muaudit.audit import prepare

    cache, device = _runtime(args)
    task = _task(args)
    setup = prepare(task, None, None, args.data_root, args.gold_seeds, cache, device, progress=not args.quiet,
                    retain_sample_size=retain, executor=_executor(args))
    trained = setup._bank.n_trained if setup._bank is not None else 0
    print(f"task {setup.task.name} [{setup.task.content_hash()[:12]}]: the original and {len(setup.golds)} gold "
          f"model(s) are cached in {cache.root} ({trained} trained now, {1 + len(setup.golds) - trained} reused)")
    if attacks:
        from muaudit.attacking import run_attack

        for plugin, params in attacks:
            run_attack(setup, plugin, None, params)  # trains the missing shadows, caches the reference runs
        shadows = setup._bank.n_trained - trained if setup._bank is not None else 0
        print(f"attacks {', '.join(p.spec.name for p, _ in attacks)}: shadow models and the runs on the original "
              f"and gold models are cached ({shadows} shadow model(s) trained now)")
    return ExitCode.OK


def _warmable_attacks(args: argparse.Namespace) -> list[tuple[Any, dict[str, Any]]]:
    """The ``--attacks`` of ``golds``; an attack that needs the method under audit cannot be warmed without one."""
    if not args.attacks.strip():
        if args.attack_arg:
            raise _UsageError("--attack-arg needs --attacks")
        return []
    _precheck_attacks(args.attacks, args.attack_arg)
    loaded = _load_attacks(args.attacks, args.attack_arg)
    for plugin, _ in loaded:
        if "method" in getattr(plugin.cls, "needs", frozenset()):
            raise _UsageError(f"attack {plugin.spec.name!r} needs the method under audit, so golds cannot warm "
                              "it (warm the attacks whose trained shadows it shares: for ulira, lira with the same "
                              "n_shadows and max_eval)")
    return loaded


_COMMANDS = {"train": _cmd_train, "score": _cmd_score, "compare": _cmd_compare, "tune": _cmd_tune,
             "list": _cmd_list, "describe": _cmd_describe, "merge": _cmd_merge, "golds": _cmd_golds}
