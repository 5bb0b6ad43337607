"""Regression gates: small boolean expressions over a scorecard, parsed by a tiny recursive-descent parser.

Grammar (keywords are lower case; names may contain ``-`` and ``:``, so write subtraction with spaces)::

    gate     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | test
    test     := "(" gate ")" | sum [CMP sum] | READOUT ("within" | "outside") band
    band     := "gold" "band" | sum
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | 'word' | NAME | "abs" "(" sum ")" | "(" sum ")"
    CMP      := "<" | "<=" | ">" | ">=" | "==" | "!="

Names:

- ``forget_error`` (a readout: its unlearned value), ``forget_error.gap``, ``.gold``, ``.original``,
  ``.unlearned``, ``.lower`` / ``.upper`` (its 95% interval), ``.gold_spread`` (its largest gold-vs-gold spread),
  ``.band_lower`` / ``.band_upper`` (its gold band); attack readouts are ``mia_<attack>_<metric>``, e.g.
  ``mia_entropy-lr_auc.upper``;
- ``gold_spread`` alone: the gold spread of the one readout its comparison names;
- ``verdict`` (the summary) and ``verdict.<check>`` (e.g. ``verdict.forget_accuracy``,
  ``verdict.attack_auc:loss``), compared with ``==`` / ``!=`` to ``aligned``, ``over-forgetting``,
  ``under-forgetting``, ``mixed`` or ``undetermined``;
- ``speedup_vs_gold``, ``method_seconds``, ``gold_seconds`` (timings; wall-clock, so noisy).

``R within gold band`` holds when readout R's 95% interval (its value where it has none) overlaps R's gold band:
the gold models' range widened by ``SPREAD_FACTOR`` x that range on each side, as in the verdicts
(:class:`~muaudit.verdicts.GoldReference`), so it agrees with the ``aligned`` rule. ``R within E`` holds when the
interval overlaps ``[gold - E, gold + E]`` (for a distance to gold, ``[0, E]``), e.g. ``within 2*gold_spread``.
``outside`` is the negation of ``within``.

How a gate fails: a ``fail_on`` gate (``muaudit score --fail-on EXPR``) fails the build when EXPR is **true**; a
``require`` gate (``--require EXPR``, and :func:`check`) fails it when EXPR is **false**. A name this audit does
not have, or a value it could not compute (``None``), is an error (:class:`GateError`), never a pass.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence, Union

from muaudit.errors import MuauditError

__all__ = ["GateError", "GateFailure", "BaselineError", "Gate", "GateResult", "Vocabulary", "parse", "load_gates",
           "gate_list", "evaluate", "check", "card_vocabulary", "audit_vocabulary", "gold_band", "baseline_of",
           "compare_baseline", "FAIL_ON", "REQUIRE"]

VERDICT_WORDS = ("aligned", "over-forgetting", "under-forgetting", "mixed", "undetermined")
ATTRIBUTES = ("unlearned", "original", "gold", "gap", "lower", "upper", "gold_spread", "band_lower", "band_upper")
TIMINGS = ("speedup_vs_gold", "method_seconds", "gold_seconds")
ATTACK_METRICS = ("auc", "member_rate", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr")
#: The readouts of every audit (muaudit.scoring names them), then those of some audits only.
CORE_READOUTS = ("test_error", "forget_error", "retain_error", "activation_distance", "js_to_gold",
                 "kl_gold_to_model", "forget_entropy_mean", "entropy_wasserstein", "entropy_ks",
                 *(f"param_{n}_to_{w}" for n in ("l1_all", "l2_all", "l1_last", "l2_last")
                   for w in ("original", "gold")), "avg_gap", "avg_gap_code")
POISON_READOUTS = ("forget_clean_error",)
CHALLENGE_READOUTS = ("challenge_forgetting_quality", "challenge_score")
CORE_CHECKS = ("forget_accuracy", "forget_loss", "forget_entropy")
ATTACK_CHECKS = ("attack_auc", "member_rate")
FAIL_ON, REQUIRE = "fail_on", "require"


class GateError(MuauditError):
    """A malformed gate, an unknown name, or a name or value this audit does not have (exit 2)."""


class GateFailure(AssertionError):
    """Raised by :func:`check`: one line per violated gate (value, bound, interval, gold band)."""


# ------------------------------------------------------------------------------------------ syntax tree
@dataclass(frozen=True)
class Num:
    value: float
    text: str


@dataclass(frozen=True)
class Word:
    value: str
    text: str


@dataclass(frozen=True)
class Ref:
    """A name: ``kind`` is readout, verdict, timing or spread (bare ``gold_spread``, bound to ``name`` later)."""

    kind: str
    name: str | None
    attr: str
    text: str


@dataclass(frozen=True)
class Arith:
    op: str  # + - * / neg abs
    args: tuple["Node", ...]
    text: str


@dataclass(frozen=True)
class Compare:
    op: str
    left: "Node"
    right: "Node"
    text: str


@dataclass(frozen=True)
class Within:
    readout: Ref
    tolerance: "Node | None"  # None: the gold band
    negate: bool
    text: str


@dataclass(frozen=True)
class Logic:
    op: str  # and or not
    args: tuple["Node", ...]
    text: str


Node = Union[Num, Word, Ref, Arith, Compare, Within, Logic]


@dataclass(frozen=True)
class Gate:
    """One parsed gate: its source text, whether it fails when true (``fail_on``) or when false (``require``)."""

    text: str
    mode: str
    node: Node

    def refs(self) -> list[Ref]:
        return list(_walk_refs(self.node))


# -------------------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:[-.:][A-Za-z0-9_]+)*)"
                    r"|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)))")
_CMP = ("<", "<=", ">", ">=", "==", "!=")
_KEYWORDS = ("and", "or", "not", "within", "outside", "abs")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            where = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise GateError(f"gate {text!r}: unexpected character {text[where]!r} at position {where + 1}")
        kind = m.lastgroup or ""
        out.append(_Tok(kind, m.group(kind), m.start(kind), m.end()))
        pos = m.end()
    return out


# -------------------------------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent over the tokens of one gate (grammar in the module docstring)."""

    def __init__(self, text: str) -> None:
        self.text, self.toks, self.i = text, _tokens(text), 0

    def parse(self) -> Node:
        if not self.toks:
            raise GateError("an empty gate")
        node = self.logic_or()
        if self.i < len(self.toks):
            self.fail(f"unexpected {self.toks[self.i].text!r}")
        if _type(node) != "bool":
            raise GateError(f"gate {self.text!r}: not a condition (compare it, e.g. '{self.text} > 0.5')")
        return node

    # helpers
    def fail(self, message: str) -> None:
        at = self.toks[self.i].start + 1 if self.i < len(self.toks) else len(self.text) + 1
        raise GateError(f"gate {self.text!r}: {message} at position {at}")

    def peek(self, text: str | None = None, offset: int = 0) -> _Tok | None:
        j = self.i + offset
        tok = self.toks[j] if j < len(self.toks) else None
        return tok if tok is not None and (text is None or tok.text == text) else None

    def take(self, text: str) -> _Tok:
        tok = self.peek(text)
        if tok is None:
            self.fail(f"expected {text!r}")
        self.i += 1
        return tok  # type: ignore[return-value]

    def span(self, start: int) -> str:
        return self.text[self.toks[start].start:self.toks[self.i - 1].end].strip()

    # boolean layer
    def logic_or(self) -> Node:
        return self._chain("or", self.logic_and)

    def logic_and(self) -> Node:
        return self._chain("and", self.logic_not)

    def _chain(self, word: str, sub: Any) -> Node:
        start, items = self.i, [sub()]
        while self.peek(word):
            self.i += 1
            items.append(sub())
        if len(items) == 1:
            return items[0]
        for item in items:
            self._need(item, "bool", word)
        return Logic(word, tuple(items), self.span(start))

    def logic_not(self) -> Node:
        start = self.i
        if self.peek("not"):
            self.i += 1
            arg = self.logic_not()
            self._need(arg, "bool", "not")
            return Logic("not", (arg,), self.span(start))
        return self.test()

    def test(self) -> Node:
        start = self.i
        if self.peek("(") and self._parenthesised_condition():
            self.i += 1
            node = self.logic_or()
            self.take(")")
            return node
        left = self.sum()
        tok = self.peek()
        if tok is not None and tok.text in ("within", "outside"):
            return self.within(left, start)
        if tok is None or tok.text not in _CMP:
            return left
        self.i += 1
        right = self.sum()
        kinds = {_type(left), _type(right)}
        for side in (left, right):
            if "str" in kinds and isinstance(side, Ref) and side.kind == "readout" and "." not in side.text:
                raise GateError(f"gate {self.text!r}: {side.text!r} is not a verdict word"
                                f"{_suggest(side.text, VERDICT_WORDS)} (one of {', '.join(VERDICT_WORDS)})")
        if "str" in kinds and (kinds != {"str"} or tok.text not in ("==", "!=")):
            raise GateError(f"gate {self.text!r}: verdicts are compared with == or != to a verdict word "
                            f"({', '.join(VERDICT_WORDS)})")
        return _bind(Compare(tok.text, left, right, self.span(start)))

    def _parenthesised_condition(self) -> bool:
        """Whether the ``(`` at the cursor opens a condition (it holds a comparison or keyword at depth 1)."""
        depth = 0
        for tok in self.toks[self.i:]:
            depth += tok.text == "("
            depth -= tok.text == ")"
            if depth == 0:
                return False
            if depth == 1 and tok.kind in ("op", "name") and tok.text in (*_CMP, "and", "or", "not", "within",
                                                                           "outside"):
                return True
        return False

    def within(self, left: Node, start: int) -> Node:
        negate = self.toks[self.i].text == "outside"
        self.i += 1
        if not (isinstance(left, Ref) and left.kind == "readout" and left.attr == "unlearned"
                and "." not in left.text):
            raise GateError(f"gate {self.text!r}: 'within' and 'outside' follow a readout name, e.g. "
                            f"'forget_error within gold band'")
        tolerance: Node | None = None
        if self.peek("gold") and self.peek("band", 1):
            self.i += 2
        else:
            tolerance = self.sum()
            self._need(tolerance, "num", "within")
        return _bind(Within(left, tolerance, negate, self.span(start)))

    # arithmetic layer
    def sum(self) -> Node:
        return self._arith(("+", "-"), self.product)

    def product(self) -> Node:
        return self._arith(("*", "/"), self.unary)

    def _arith(self, ops: tuple[str, ...], sub: Any) -> Node:
        start, node = self.i, sub()
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in ops:
            self.i += 1
            right = sub()
            self._need(node, "num", tok.text)
            self._need(right, "num", tok.text)
            node = Arith(tok.text, (node, right), self.span(start))
        return node

    def unary(self) -> Node:
        start = self.i
        if self.peek("-"):
            self.i += 1
            arg = self.unary()
            self._need(arg, "num", "-")
            return Arith("neg", (arg,), self.span(start))
        return self.atom()

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            self.fail("expected a number or a name")
        assert tok is not None
        start = self.i
        self.i += 1
        if tok.kind == "num":
            return Num(float(tok.text), tok.text)
        if tok.kind == "str":
            return self.word(tok.text[1:-1], tok.text)
        if tok.text == "(":
            node = self.sum()
            self.take(")")
            return node
        if tok.text == "abs" and self.peek("("):
            self.i += 1
            arg = self.sum()
            self.take(")")
            self._need(arg, "num", "abs")
            return Arith("abs", (arg,), self.span(start))
        if tok.kind != "name" or tok.text in _KEYWORDS:
            self.i -= 1
            self.fail(f"unexpected {tok.text!r}")
        if tok.text in VERDICT_WORDS:
            return Word(tok.text, tok.text)
        return _ref(tok.text)

    def word(self, value: str, text: str) -> Word:
        if value not in VERDICT_WORDS:
            raise GateError(f"gate {self.text!r}: {value!r} is not a verdict (one of {', '.join(VERDICT_WORDS)})")
        return Word(value, text)

    def _need(self, node: Node, kind: str, where: str) -> None:
        if _type(node) != kind:
            what = {"bool": "a condition", "num": "a number", "str": "a verdict"}[kind]
            raise GateError(f"gate {self.text!r}: {where!r} needs {what}, got {_text(node)!r}")


def _ref(text: str) -> Ref:
    if text == "verdict":
        return Ref("verdict", None, "verdict", text)
    if text.startswith("verdict."):
        return Ref("verdict", text.removeprefix("verdict."), "verdict", text)
    if text in TIMINGS:
        return Ref("timing", text, "value", text)
    if text == "gold_spread":
        return Ref("spread", None, "gold_spread", text)
    name, dot, attr = text.partition(".")
    if dot and attr not in ATTRIBUTES:
        suggestion = _suggest(attr, ATTRIBUTES)
        raise GateError(f"unknown attribute {attr!r} in {text!r}{suggestion}; attributes: {', '.join(ATTRIBUTES)}")
    return Ref("readout", name, attr or "unlearned", text)


def _type(node: Node) -> str:
    if isinstance(node, (Compare, Within, Logic)):
        return "bool"
    if isinstance(node, Word) or (isinstance(node, Ref) and node.kind == "verdict"):
        return "str"
    return "num"


def _text(node: Node) -> str:
    return node.text


def _walk(node: Node) -> Iterable[Node]:
    yield node
    children: tuple[Node, ...] = ()
    if isinstance(node, (Arith, Logic)):
        children = node.args
    elif isinstance(node, Compare):
        children = (node.left, node.right)
    elif isinstance(node, Within):
        children = (node.readout,) + (() if node.tolerance is None else (node.tolerance,))
    for child in children:
        yield from _walk(child)


def _walk_refs(node: Node) -> Iterable[Ref]:
    return (n for n in _walk(node) if isinstance(n, Ref))


def _bind(node: Compare | Within) -> Node:
    """Bind a bare ``gold_spread`` to the one readout its comparison names."""
    refs = list(_walk_refs(node))
    if not any(r.kind == "spread" for r in refs):
        return node
    subjects = sorted({r.name for r in refs if r.kind == "readout" and r.name})
    if len(subjects) != 1:
        which = "names no readout" if not subjects else f"names {', '.join(subjects)}"
        raise GateError(f"gate {node.text!r}: a bare gold_spread needs exactly one readout in its comparison, and "
                        f"this one {which} (write e.g. forget_error.gold_spread)")
    return _rebind(node, subjects[0])


def _rebind(node: Any, subject: str) -> Any:
    if isinstance(node, Ref) and node.kind == "spread":
        return Ref("readout", subject, "gold_spread", node.text)
    if isinstance(node, (Arith, Logic)):
        return replace(node, args=tuple(_rebind(a, subject) for a in node.args))
    if isinstance(node, Compare):
        return replace(node, left=_rebind(node.left, subject), right=_rebind(node.right, subject))
    if isinstance(node, Within):
        return replace(node, tolerance=None if node.tolerance is None else _rebind(node.tolerance, subject))
    return node


def parse(text: str, mode: str = FAIL_ON) -> Gate:
    """Parse one gate (:class:`GateError` when malformed). Names are checked by :meth:`Vocabulary.check`."""
    if mode not in (FAIL_ON, REQUIRE):
        raise ValueError(f"mode must be {FAIL_ON!r} or {REQUIRE!r}, got {mode!r}")
    if not isinstance(text, str):
        raise GateError(f"a gate must be a string, got {type(text).__name__}")
    return Gate(text.strip(), mode, _Parser(text.strip()).parse())


def load_gates(path: str | Any) -> list[Gate]:
    """The gates of a TOML file: ``fail_on = [...]`` (fail when true) and ``require = [...]`` (fail when false)."""
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GateError(f"--gates {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"--gates {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - {FAIL_ON, REQUIRE})
    if unknown:
        raise GateError(f"--gates {path}: unknown key(s) {', '.join(unknown)} (expected fail_on and require)")
    gates = []
    for mode in (FAIL_ON, REQUIRE):
        items = raw.get(mode, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise GateError(f"--gates {path}: {mode} must be a list of strings")
        gates += [parse(i, mode) for i in items]
    if not gates:
        raise GateError(f"--gates {path}: no gates (give fail_on = [...] or require = [...])")
    return gates


# ------------------------------------------------------------------------------------------ vocabulary
@dataclass(frozen=True)
class Vocabulary:
    """The names an audit has: readouts, verdict checks, and how many gold models (for spreads and bands)."""

    readouts: tuple[str, ...]
    checks: tuple[str, ...]
    gold_models: int
    note: str = ""  # what is left out of this audit, for the error message

    def check(self, gates: Sequence[Gate]) -> None:
        """Every name of ``gates`` exists here (:class:`GateError` otherwise, with a suggestion and the list)."""
        for gate in gates:
            for ref in gate.refs():
                self._check_ref(gate, ref)

    def _check_ref(self, gate: Gate, ref: Ref) -> None:
        if ref.kind == "readout" and ref.name not in self.readouts:
            what = "is not in this audit" if _is_known_pattern(ref.name or "") else "is an unknown readout"
            what += _attack_hint(ref.name or "")
            raise GateError(f"gate {gate.text!r}: {ref.name!r} {what}{_suggest(ref.name or '', self.readouts)}"
                            f"{_subtraction_hint(ref.name or '', self.readouts)}{self.note}; valid readouts: "
                            f"{', '.join(self.readouts)}")
        if ref.kind == "verdict" and ref.name is not None and ref.name not in self.checks:
            raise GateError(f"gate {gate.text!r}: {ref.name!r} is not a verdict check of this audit"
                            f"{_suggest(ref.name, self.checks)}; checks: {', '.join(self.checks)}")
        needs_golds = ref.attr in ("gold_spread", "band_lower", "band_upper") or any(
            isinstance(n, Within) and n.tolerance is None and n.readout is ref for n in _walk(gate.node))
        if needs_golds and self.gold_models < 2:
            raise GateError(f"gate {gate.text!r}: gold spreads and bands need at least 2 gold models, this audit "
                            f"has {self.gold_models} (use --gold-seeds 2 or more)")


def audit_vocabulary(attacks: Sequence[str], gold_models: int, challenge: bool = False,
                     poisoning: bool = False) -> Vocabulary:
    """The names a scorecard of these attacks will have (known before any training)."""
    readouts = [*CORE_READOUTS[:3], *(POISON_READOUTS if poisoning else ()), *CORE_READOUTS[3:-2],
                *(f"mia_{a}_{m}" for a in attacks for m in ATTACK_METRICS), *CORE_READOUTS[-2:],
                *(CHALLENGE_READOUTS if challenge else ())]
    checks = [*CORE_CHECKS, *(f"{c}:{a}" for a in attacks for c in ATTACK_CHECKS)]
    note = f" (attacks run: {', '.join(attacks)}"
    note += "" if challenge else "; challenge readouts need --challenge-models"
    return Vocabulary(tuple(readouts), tuple(checks), gold_models, note + ")")


def card_vocabulary(card: Any) -> Vocabulary:
    """The names of one scorecard."""
    attacks = [a.name for a in card.attacks]
    return Vocabulary(tuple(r.name for r in card.readouts), tuple(v.check for v in card.verdicts),
                      int(card.provenance.get("gold_models") or len(card.provenance["seeds"]["gold"])),
                      f" (attacks run: {', '.join(attacks)})")


def _is_known_pattern(name: str) -> bool:
    if name in CORE_READOUTS + POISON_READOUTS + CHALLENGE_READOUTS:
        return True
    return name.startswith("mia_") and any(name.endswith(f"_{m}") and len(name) > len(m) + 5
                                           for m in ATTACK_METRICS)


def _attack_hint(name: str) -> str:
    for metric in ATTACK_METRICS:
        if name.startswith("mia_") and name.endswith(f"_{metric}") and len(name) > len(metric) + 5:
            return f" (attack {name[4:-len(metric) - 1]!r} was not run: add it to the audit's attacks)"
    return ""


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _subtraction_hint(name: str, choices: Sequence[str]) -> str:
    head = name.split("-")[0]
    if "-" in name and head.partition(".")[0] in choices:
        return " (names may contain '-': write a subtraction with spaces, 'a - b')"
    return ""


# -------------------------------------------------------------------------------------------- values
def gold_band(card: Any, name: str) -> tuple[float, float] | None:
    """Readout ``name``'s gold band, as in the verdicts: the gold models' range widened by ``SPREAD_FACTOR`` x
    that range on each side. Exact where the scorecard keeps every gold model's value (forget error and entropy,
    attack metrics); a distance to gold uses (0, spreads...); other readouts keep only ``|gold_j - gold_0|``, so
    their band is the reference gold +- (1 + ``SPREAD_FACTOR``) x the largest spread (the verdict band for two
    gold models, whatever the sign). ``None`` with a single gold model."""
    from muaudit.verdicts import SPREAD_FACTOR, GoldReference  # numpy and scipy: only once there is a scorecard

    readout = card.readout(name)
    if not readout.gold_spread:
        return None
    if readout.kind == "distance":
        return GoldReference((0.0, *readout.gold_spread)).band
    exact = _gold_values(card, name)
    if exact is not None and len(exact) >= 2:
        return GoldReference(exact).band
    if readout.gold is None:
        return None
    reach = (1 + SPREAD_FACTOR) * (readout.spread_max or 0.0)
    return readout.gold - reach, readout.gold + reach


def _gold_values(card: Any, name: str) -> tuple[float, ...] | None:
    checks = {v.check: v for v in card.verdicts}
    if name == "forget_error" and checks.get("forget_accuracy") and checks["forget_accuracy"].golds:
        return tuple(100 * (1 - g) for g in checks["forget_accuracy"].golds)
    if name == "forget_entropy_mean" and checks.get("forget_entropy") and checks["forget_entropy"].golds:
        return tuple(checks["forget_entropy"].golds)
    for report in card.attacks:
        metric = name.removeprefix(f"mia_{report.name}_")
        if name.startswith(f"mia_{report.name}_") and report.golds:
            values = [g.get(metric) for g in report.golds]
            if all(isinstance(v, (int, float)) for v in values):
                return tuple(float(v) for v in values)
    return None


def _readout_value(card: Any, ref: Ref) -> float:
    readout = card.readout(ref.name)
    interval = card.interval(ref.name)
    band = gold_band(card, ref.name) if ref.attr.startswith("band_") else None
    value = {"unlearned": readout.unlearned, "original": readout.original, "gold": readout.gold,
             "gap": readout.gap, "gold_spread": readout.spread_max,
             "lower": interval[0] if interval else None, "upper": interval[1] if interval else None,
             "band_lower": band[0] if band else None, "band_upper": band[1] if band else None}[ref.attr]
    if value is None:
        why = {"gold": " (a distance to gold has no gold value)", "gap": " (a distance to gold has no gap)",
               "lower": " (it has no interval)", "upper": " (it has no interval)"}.get(ref.attr, "")
        raise GateError(f"{ref.text}: no value in this audit{why or ' (the audit recorded none)'}")
    return float(value)


class _Context:
    """Evaluates nodes on one scorecard and records what each comparison saw."""

    def __init__(self, card: Any) -> None:
        self.card = card
        self.seen: list[str] = []

    def value(self, node: Node) -> Any:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Word):
            return node.value
        if isinstance(node, Ref):
            return self.ref(node)
        if isinstance(node, Arith):
            return self.arith(node)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Within):
            return self.within(node)
        if node.op == "not":
            return not self.value(node.args[0])
        results = [bool(self.value(a)) for a in node.args]  # evaluate all: every value is reported
        return all(results) if node.op == "and" else any(results)

    def ref(self, ref: Ref) -> Any:
        if ref.kind == "verdict":
            if ref.name is None:
                return self.card.verdict_summary
            return next(v.verdict for v in self.card.verdicts if v.check == ref.name)
        if ref.kind == "timing":
            value = (self.card.timings or {}).get(ref.name)
            if value is None:
                raise GateError(f"{ref.text}: no value in this audit")
            return float(value)
        return _readout_value(self.card, ref)

    def arith(self, node: Arith) -> float:
        args = [self.value(a) for a in node.args]
        if node.op == "neg":
            return -args[0]
        if node.op == "abs":
            return abs(args[0])
        if node.op == "/" and args[1] == 0:
            raise GateError(f"{node.text}: division by zero")
        return {"+": args[0] + args[1], "-": args[0] - args[1], "*": args[0] * args[1],
                "/": args[0] / args[1] if args[1] else math.nan}[node.op]

    def compare(self, node: Compare) -> bool:
        left, right = self.value(node.left), self.value(node.right)
        result = {"<": lambda: left < right, "<=": lambda: left <= right, ">": lambda: left > right,
                  ">=": lambda: left >= right, "==": lambda: left == right, "!=": lambda: left != right}[node.op]()
        self.seen.append(f"{_shown(node.left, left)} {node.op} {_shown(node.right, right)}")
        return bool(result)

    def within(self, node: Within) -> bool:
        name = node.readout.name or ""
        readout = self.card.readout(name)
        value = _readout_value(self.card, node.readout)
        low, high = self.card.interval(name) or (value, value)
        if node.tolerance is None:
            region = gold_band(self.card, name)
            if region is None:
                raise GateError(f"{node.text}: {name} has no gold band (it needs at least 2 gold models)")
            what = "gold band"
        else:
            tol = float(self.value(node.tolerance))
            centre = 0.0 if readout.kind == "distance" else readout.gold
            if centre is None:
                raise GateError(f"{node.text}: {name} has no gold value")
            region = (centre - tol, centre + tol)
            what = f"gold +- {_text(node.tolerance)} = +-{_fmt(tol)}"
        inside = low <= region[1] and high >= region[0]
        shown = _fmt(value) if (low, high) == (value, value) else f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"
        self.seen.append(f"{name} = {shown} {'overlaps' if inside else 'lies outside'} {what} "
                         f"[{_fmt(region[0])}, {_fmt(region[1])}]")
        return inside != node.negate


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _shown(node: Node, value: Any) -> str:
    return _fmt(value) if isinstance(node, (Num, Word)) else f"{node.text} = {_fmt(value)}"


def _readout_context(card: Any, name: str) -> str:
    """One readout's value, interval, gold, spread and band, for a gate's message."""
    readout = card.readout(name)
    interval = card.interval(name)
    parts = [f"unlearned {_fmt(readout.unlearned) if readout.unlearned is not None else '-'}"
             + (f" [95% interval {_fmt(interval[0])}, {_fmt(interval[1])}]" if interval else " (no interval)")]
    if readout.gold is not None:
        parts.append(f"gold {_fmt(readout.gold)}")
    if readout.spread_max is not None:
        parts.append(f"gold spread {_fmt(readout.spread_max)}")
    band = gold_band(card, name)
    if band is not None:
        parts.append(f"gold band [{_fmt(band[0])}, {_fmt(band[1])}]")
    return f"{name}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class GateResult:
    """One gate on one scorecard: whether it was violated, and the one-line detail."""

    gate: Gate
    method: str
    violated: bool
    detail: str

    def line(self) -> str:
        word = "fail-on" if self.gate.mode == FAIL_ON else "require"
        state = "FAILED" if self.violated else "passed"
        return f"gate {state} [{self.method}] ({word}) {self.gate.text}: {self.detail}"


def evaluate(card: Any, gates: Sequence[Gate]) -> list[GateResult]:
    """Every gate on one scorecard (names checked first: :class:`GateError` for a name it lacks)."""
    card_vocabulary(card).check(gates)
    out = []
    for gate in gates:
        context = _Context(card)
        try:
            holds = bool(context.value(gate.node))
        except GateError as exc:
            raise GateError(f"gate {gate.text!r} on {card.method['name']}: {exc}") from None
        names = sorted({r.name for r in gate.refs() if r.kind == "readout" and r.name})
        detail = "; ".join(context.seen + [_readout_context(card, n) for n in names])
        out.append(GateResult(gate, card.method["name"], holds if gate.mode == FAIL_ON else not holds, detail))
    return out


def _as_gates(exprs: Iterable[str | Gate], mode: str) -> list[Gate]:
    return [e if isinstance(e, Gate) else parse(e, mode) for e in exprs]


def check(result: Any, *require: str | Gate, fail_on: Sequence[str | Gate] = ()) -> list[GateResult]:
    """Assert gates on a scorecard or a comparison (each of its scorecards), for tests.

    Each of ``require`` must hold (like ``assert``); each of ``fail_on`` must not. Raises :class:`GateFailure`
    (an ``AssertionError``) listing every violated gate with the value, the bound, the interval and the gold band;
    :class:`GateError` for a malformed gate or a name the scorecard lacks. Returns the results.
    """
    gates = _as_gates(require, REQUIRE) + _as_gates(fail_on, FAIL_ON)
    if not gates:
        raise GateError("check() needs at least one gate")
    cards = getattr(result, "scorecards", None) or (result,)
    results = [r for card in cards for r in evaluate(card, gates)]
    violated = [r for r in results if r.violated]
    if violated:
        raise GateFailure(f"{len(violated)} of {len(results)} gate(s) failed:\n"
                          + "\n".join(r.line() for r in violated))
    return results


def gate_list(fail_on: Sequence[str] = (), require: Sequence[str] = (),
              files: Sequence[str] = ()) -> list[Gate]:
    """The gates of the command line: ``--fail-on``, ``--require`` and ``--gates`` files."""
    gates = [parse(t, FAIL_ON) for t in fail_on] + [parse(t, REQUIRE) for t in require]
    for path in files:
        gates += load_gates(path)
    return gates


def summary_line(results: Sequence[GateResult]) -> str:
    failed = sum(r.violated for r in results)
    return f"gates: {len(results) - failed} passed, {failed} failed"


def as_mapping(results: Sequence[GateResult]) -> list[Mapping[str, Any]]:
    """The results as JSON-ready dicts."""
    return [{"gate": r.gate.text, "mode": r.gate.mode, "method": r.method, "violated": r.violated,
             "detail": r.detail} for r in results]


# ------------------------------------------------------------------------------------------- baselines
#: The format of an approved-scorecard baseline (:func:`baseline_of`); a baseline of another format is an error.
BASELINE_FORMAT = 1
#: Below the noise floor, values are compared to this relative precision (platform rounding, not regressions).
BASELINE_RTOL = 1e-6


class BaselineError(MuauditError):
    """A baseline that cannot be compared with this scorecard: another task, method, format or schema version."""


def baseline_of(card: Any) -> dict[str, Any]:
    """A small approved-scorecard record: identity, readouts (value, gold, largest gold spread) and verdicts."""
    return {"muaudit_baseline": BASELINE_FORMAT, "schema_version": card.schema_version,
            "task": {"name": card.task["name"], "hash": card.task["hash"]},
            "method": {"name": card.method["name"], "params": json.loads(json.dumps(card.method["params"],
                                                                                     default=str))},
            "gold_models": card_vocabulary(card).gold_models,
            "readouts": {r.name: {"unlearned": r.unlearned, "gold": r.gold, "gold_spread": r.spread_max}
                         for r in card.readouts},
            "verdicts": {v.check: v.verdict for v in card.verdicts}, "verdict_summary": card.verdict_summary}


def _check_identity(baseline: Mapping[str, Any], card: Any, source: str) -> None:
    from muaudit.results import SCHEMA_VERSION

    if not isinstance(baseline, Mapping) or baseline.get("muaudit_baseline") != BASELINE_FORMAT:
        raise BaselineError(f"{source} is not a muaudit baseline of format {BASELINE_FORMAT}")
    if baseline.get("schema_version") != card.schema_version or card.schema_version != SCHEMA_VERSION:
        raise BaselineError(f"{source} was approved for scorecard schema {baseline.get('schema_version')}, this "
                            f"scorecard has schema {card.schema_version}: review it and regenerate it "
                            f"(--muaudit-regen); it is not compared")
    task = baseline.get("task") or {}
    if task.get("hash") != card.task["hash"]:
        raise BaselineError(f"{source} is a baseline of task {task.get('name')} [{str(task.get('hash'))[:12]}], "
                            f"this audit's task is {card.task['name']} [{card.task['hash'][:12]}]: not compared")
    method = baseline.get("method") or {}
    params = json.loads(json.dumps(card.method["params"], default=str))
    if method.get("name") != card.method["name"] or method.get("params") != params:
        raise BaselineError(f"{source} is a baseline of {method.get('name')}({method.get('params')}), this audit "
                            f"ran {card.method['name']}({card.method['params']}): regenerate it (--muaudit-regen)")


def compare_baseline(baseline: Mapping[str, Any], card: Any, source: str = "the baseline") -> list[str]:
    """The differences of ``card`` from an approved baseline beyond the noise floor, one line each (empty: none).

    A readout differs when ``|value - approved| > SPREAD_FACTOR x`` its largest gold-vs-gold spread (the larger of
    the baseline's and this audit's, the same reach as the verdicts' band); a verdict differs when it changed.
    :class:`BaselineError` when the baseline is of another task, method, format or schema version."""
    from muaudit.verdicts import SPREAD_FACTOR

    _check_identity(baseline, card, source)
    names = {r.name for r in card.readouts}
    diffs = []
    for name, old in baseline["readouts"].items():
        if name not in names:
            diffs.append(f"{name}: approved {_fmt_opt(old['unlearned'])}, absent from this scorecard")
            continue
        new = card.readout(name)
        if old["unlearned"] is None or new.unlearned is None:
            if old["unlearned"] != new.unlearned:
                diffs.append(f"{name}: {_fmt_opt(new.unlearned)}, approved {_fmt_opt(old['unlearned'])}")
            continue
        floor = max([s for s in (old["gold_spread"], new.spread_max) if s is not None], default=0.0)
        tolerance = SPREAD_FACTOR * floor + BASELINE_RTOL * max(1.0, abs(old["unlearned"]))
        change = new.unlearned - old["unlearned"]
        if abs(change) > tolerance:
            diffs.append(f"{name}: {_fmt(new.unlearned)}, approved {_fmt(old['unlearned'])} (change {_fmt(change)}, "
                         f"beyond {SPREAD_FACTOR:g} x gold spread {_fmt(floor)} = {_fmt(tolerance)})")
    verdicts = {v.check: v.verdict for v in card.verdicts}
    for check_name, old in {**baseline["verdicts"], "summary": baseline["verdict_summary"]}.items():
        new_verdict = card.verdict_summary if check_name == "summary" else verdicts.get(check_name, "absent")
        if new_verdict != old:
            diffs.append(f"verdict {check_name}: {new_verdict}, approved {old}")
    return diffs


def _fmt_opt(value: float | None) -> str:
    return "None" if value is None else _fmt(value)
