"""The ``muaudit`` command line: a thin shell over :mod:`muaudit.audit`.

Exit codes (:class:`ExitCode`): 0 success; 1 reserved for failed regression gates; 2 a usage, task, data or
checkpoint error; 3 a plugin error (unknown, duplicate, broken or contract-violating plugin); 4 an internal error.
User errors print one line on stderr, never a traceback (``MUAUDIT_DEBUG=1`` shows it for internal errors).
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
from typing import Any, NoReturn, Sequence


class ExitCode(IntEnum):
    OK = 0
    GATE_FAILED = 1
    USAGE_ERROR = 2
    PLUGIN_ERROR = 3
    INTERNAL_ERROR = 4


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


#: Attacks of a scorecard unless --attacks says otherwise: the population attacks, which need no extra models.
DEFAULT_ATTACKS = "loss,entropy-lr,entropy-svc"


_EPILOGS = {
    "train": """examples:
  muaudit train --task digits --out original.pt
  muaudit train --task fashion-mnist-random --out fmnist.pt
  muaudit train --task my_task.toml --out model.safetensors""",
    "score": """examples:
  muaudit score --method finetune                      # embedded default: the digits task
  muaudit score --method neggrad --method-arg lr=1e-3 --model original.pt
  muaudit score --method finetune --model weights.pt --task digits --arch mlp   # bare state dict
  muaudit score --method retrain --gold-seeds 4 --out reports/runs/retrain""",
    "compare": """examples:
  muaudit compare --methods retrain,finetune,neggrad --out reports/runs/digits
  muaudit compare --methods finetune,neggrad --method-arg neggrad.lr=1e-3 --model original.pt""",
    "list": """examples:
  muaudit list
  muaudit list methods""",
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="named task (see 'muaudit list tasks') or a .toml/.json task file")
    p.add_argument("--data-root", help="override the dataset location (directory, or .npz file)")
    p.add_argument("--cache-dir", help="model cache (default: $MUAUDIT_CACHE_DIR or ~/.cache/muaudit)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_audit_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--model", help="checkpoint of the original model (default: train one for the task)")
    p.add_argument("--arch", help="architecture of a bare state dict given with --model")
    p.add_argument("--gold-seeds", type=int, default=2, metavar="K", help="gold models to train (default 2)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="muaudit", description="Audit machine unlearning against the gold retrained model.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    fmt = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser("train", help="train the original model of a task", epilog=_EPILOGS["train"],
                           formatter_class=fmt)
    _add_common(train)
    train.add_argument("--out", required=True, help="checkpoint path (.pt or .safetensors)")
    score = sub.add_parser("score", help="audit one method and print its scorecard", epilog=_EPILOGS["score"],
                           formatter_class=fmt)
    score.add_argument("--method", required=True, help="method name (or dist:name)")
    _add_audit_options(score)
    compare = sub.add_parser("compare", help="audit several methods on the same task and gold models",
                             epilog=_EPILOGS["compare"], formatter_class=fmt)
    compare.add_argument("--methods", required=True, help="comma-separated method names")
    _add_audit_options(compare)
    lister = sub.add_parser("list", help="list methods, attacks and tasks", epilog=_EPILOGS["list"],
                            formatter_class=fmt)
    lister.add_argument("what", nargs="?", choices=["methods", "attacks", "tasks"], help="only this kind")
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
        return _COMMANDS[args.command](args)
    except _UsageError as exc:
        return _fail(str(exc), ExitCode.USAGE_ERROR)
    except MuauditError as exc:
        return _fail(str(exc), ExitCode(exc.exit_code))
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.USAGE_ERROR)
    except Exception as exc:  # an internal error: still one line unless debugging
        if os.environ.get("MUAUDIT_DEBUG"):
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(f"internal error: {type(exc).__name__}: {detail} (set MUAUDIT_DEBUG=1 for details)",
                     ExitCode.INTERNAL_ERROR)


def _fail(message: str, code: ExitCode) -> int:
    print(f"muaudit: error: {message}", file=sys.stderr)
    return int(code)


# ---------------------------------------------------------------------------------------- commands
def _task(args: argparse.Namespace) -> Any:
    from muaudit.task import resolve_task

    return None if args.task is None else resolve_task(args.task)


def _runtime(args: argparse.Namespace) -> tuple[Any, Any]:
    from muaudit.cache import TensorCache
    from muaudit.training import resolve_device

    return TensorCache(args.cache_dir), resolve_device(args.device)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from muaudit.audit import checkpoint_metadata, train_original
    from muaudit.shadows import ShadowBank
    from muaudit.checkpoint import save_checkpoint
    from muaudit.task import NAMED_TASKS

    cache, device = _runtime(args)
    task = _task(args) or NAMED_TASKS["digits"]
    if args.data_root is not None:
        task = replace(task, dataset=replace(task.dataset, root=args.data_root))
    data = task.dataset.load()
    task = task.materialise(data)
    trained = train_original(ShadowBank(task, data, cache, device, progress=not args.quiet))
    sha = save_checkpoint(trained.model, args.out,
                          checkpoint_metadata(task, "original", trained.seed, trained.train_seconds))
    print(f"wrote {args.out} (task {task.name} [{task.content_hash()[:12]}], arch {task.model.arch}, "
          f"forget set of {len(task.forget_indices or ())}, sha256 {sha[:12]})")
    return ExitCode.OK


def _setup(args: argparse.Namespace) -> Any:
    from muaudit.audit import prepare

    if args.gold_seeds < 1:
        raise _UsageError("--gold-seeds must be at least 1")
    if args.challenge_models and args.challenge_models < 3:
        raise _UsageError("--challenge-models needs at least 3 models (or 0 for off)")
    cache, device = _runtime(args)
    return prepare(_task(args), args.model, args.arch, args.data_root, args.gold_seeds, cache, device,
                   progress=not args.quiet)


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
    from muaudit.audit import build_scorecard, run_method

    plugin, params = _load_method(args.method, args.method_arg)
    attacks = _load_attacks(args.attacks, args.attack_arg)
    setup = _setup(args)
    card = build_scorecard(setup, run_method(setup, plugin, params, args.seed), attacks, args.challenge_models)
    if args.out:
        _write_outputs(Path(args.out), {"scorecard.json": card.to_json(), "scorecard.md": card.to_markdown()})
    print(card.to_json() if args.json else card.to_text())
    return ExitCode.OK


def _split_prefixed(names: list[str], pairs: Sequence[str], form: str, option: str) -> dict[str, list[str]]:
    """Group ``NAME.KEY=VALUE`` strings by NAME (which must be one of ``names``)."""
    grouped: dict[str, list[str]] = {n: [] for n in names}
    for pair in pairs:
        prefix, dot, rest = pair.partition(".")
        if not dot or prefix not in grouped:
            raise _UsageError(f"expected {form} with a name given in {option}, got {pair!r}")
        grouped[prefix].append(rest)
    return grouped


def _cmd_compare(args: argparse.Namespace) -> int:
    from muaudit.audit import build_scorecard, run_method
    from muaudit.results import comparison_table

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise _UsageError("--methods needs distinct, comma-separated method names")
    pairs = _split_prefixed(names, args.method_arg, "--method-arg METHOD.KEY=VALUE", "--methods")
    loaded = [_load_method(n, pairs[n]) for n in names]
    attacks = _load_attacks(args.attacks, args.attack_arg)
    setup = _setup(args)
    cards = [build_scorecard(setup, run_method(setup, p, kw, args.seed), attacks, args.challenge_models)
             for p, kw in loaded]
    table = comparison_table(cards)
    title = (f"# muaudit comparison on task {setup.task.name} [{setup.task.content_hash()[:12]}], "
             f"{len(setup.golds)} gold model(s)\n\n")
    if args.out:
        payload = json.dumps([c.to_dict() for c in cards], indent=2, sort_keys=True, allow_nan=False)
        _write_outputs(Path(args.out), {"comparison.json": payload, "comparison.md": title + table})
    print(payload if args.json and args.out else (json.dumps([c.to_dict() for c in cards], indent=2)
                                                   if args.json else title + table))
    return ExitCode.OK


def _cmd_list(args: argparse.Namespace) -> int:
    from muaudit.errors import PluginError
    from muaudit.plugins import ATTACKS, METHODS, discover, load

    broken = 0
    if args.what in (None, "tasks"):
        _list_tasks()
    for group, title in ((METHODS, "methods"), (ATTACKS, "attacks")):
        if args.what not in (None, title):
            continue
        print(f"{title}:")
        for spec in discover(group):
            try:
                cls = load(spec).cls
            except PluginError as exc:
                broken += 1
                print(f"  {spec.name:<16} {spec.dist} {spec.version}  BROKEN: {exc}")
                continue
            needs = ", ".join(sorted(getattr(cls, "needs", ()))) or "forget set only"
            extra = f"  [needs: {needs}]" if group == METHODS else ""
            print(f"  {spec.name:<16} {spec.dist} {spec.version}  {cls.summary}{extra}")
    return ExitCode.PLUGIN_ERROR if broken else ExitCode.OK


def _list_tasks() -> None:
    from muaudit.task import NAMED_TASKS

    print("tasks:")
    for name, task in NAMED_TASKS.items():
        forget = {k: v for k, v in vars(task.forget).items() if v is not None}
        print(f"  {name:<22} {task.dataset.name}, {task.model.arch}, forget {forget}")


def _write_outputs(directory: Path, files: dict[str, str]) -> None:
    """Write every file to a temporary name first, then rename all: no half-written output."""
    directory.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            staged.append((tmp, directory / name))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    print(f"wrote {', '.join(str(directory / n) for n in files)}", file=sys.stderr)


_COMMANDS = {"train": _cmd_train, "score": _cmd_score, "compare": _cmd_compare, "list": _cmd_list}
