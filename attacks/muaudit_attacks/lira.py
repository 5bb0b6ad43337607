"""``lira`` and ``ulira``: per-example likelihood-ratio attacks over shadow models trained on random halves.

Sources: Carlini et al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022) for LiRA; Hayes et
al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy" (2024) for U-LiRA
(attacks reference, section 3.5). The numerical core is :mod:`muaudit_attacks.likelihood`.

Evaluation set (both attacks): a balanced set of candidates, ``n`` forget examples (members of the original
training set) and ``n`` held-out test examples, matched class by class (per class, as many of each as both
sets have; capped at ``max_eval`` forget examples, seeded). Chance (AUC 0.5 on it) means that D_f looks like
data never trained on.

Shadows: ``n_shadows`` models (even; a balanced keep matrix makes every candidate IN for exactly half of them),
each trained with the task's recipe on D_r plus its IN half of the candidates, from the audit's shadow bank.
[DECISION] D_r is always in: the target also trained on all of D_r, so the shadows differ from it only in the
candidates. When ``max_eval`` caps the forget examples, the forget examples left out of the evaluation are in no
shadow.

- ``lira`` scores the audited model's logit-scaled confidence phi with Gaussians fitted to the shadows that
  trained on each candidate (IN) and those that did not (OUT): online = log-likelihood ratio, offline = one-sided
  test against OUT only. On an unlearned model this asks "does D_f still look trained on?".
- ``ulira`` applies the method under audit to every shadow, which forgets the candidates it trained on (its IN
  half; so its forget set has as many examples as the target's evaluated D_f); IN' = those unlearned shadows on
  the candidates they trained on and then forgot, OUT = the shadows that never trained on the candidate.
  The audited model is then scored as in LiRA. A perfect unlearner makes IN' and OUT identical: chance.
  Exact retraining is at chance by construction; a method that does nothing is as exposed as the original.

Decision rule (the member rate and balanced accuracy): online, a likelihood ratio above 1 (score > 0); offline,
phi above the 95th percentile of the OUT Gaussian (a one-sided test at level 5%: score >= log 0.95). [DECISION]
Carlini et al. report only threshold-free ROC curves; a fixed, interpretable rule keeps the member rate comparable
across models, where a threshold tuned per model was measured to swing the gold models' member rate by 0.6.

Variance: ``variance="auto"`` uses a global (pooled) variance below 64 shadows per side (attacks reference);
``per-example`` and ``global`` force one. Settings recorded in every result: shadow count, IN/OUT per example,
online/offline, variance mode, signal, evaluation-set sizes, and the recipe (the task's, the same as the target's).
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

from muaudit.errors import ParameterError
from muaudit.base import AttackContext, AttackScores, MembershipAttack, ModelOutputs
from muaudit.params import Choice, Interval, Param
from muaudit.training import derive_seed
from muaudit_attacks.likelihood import fit_gaussians, lira_offline, lira_online, logit_scaled_confidence

SIGNAL = "logit-scaled confidence z_y - logsumexp_{j!=y} z_j (float64)"


def matched_candidates(forget_labels: np.ndarray, test_labels: np.ndarray, max_eval: int | None,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in D_f and in the test split of a class-matched, equal-size evaluation set (seeded)."""
    rng = np.random.default_rng(seed)
    forget_pos, test_pos = [], []
    for cls in np.unique(forget_labels):
        f = rng.permutation(np.flatnonzero(forget_labels == cls))
        t = rng.permutation(np.flatnonzero(test_labels == cls))
        k = min(len(f), len(t))
        forget_pos.append(f[:k])
        test_pos.append(t[:k])
    forget_pos, test_pos = np.concatenate(forget_pos), np.concatenate(test_pos)
    if max_eval is not None and len(forget_pos) > max_eval:
        keep = np.sort(rng.choice(len(forget_pos), size=max_eval, replace=False))
        forget_pos, test_pos = forget_pos[keep], test_pos[keep]
    if len(forget_pos) == 0:
        raise ValueError("no held-out test example shares a class with the forget set: LiRA cannot be balanced")
    return np.sort(forget_pos), np.sort(test_pos)


class _ShadowHalves:
    """The candidate set, the keep matrix and the shadow requests of one audit (shared by lira and ulira)."""

    def __init__(self, ctx: AttackContext, n_shadows: int, max_eval: int | None) -> None:
        from muaudit.shadows import ModelRequest, ShadowBank

        bank = ctx.bank
        forget = np.asarray(ctx.forget_indices, dtype=np.int64)
        seed = derive_seed(ctx.task.seed, "lira", n_shadows, max_eval)
        forget_labels = bank.pool.y[forget].numpy()
        test_labels = bank.pool.y[bank.test_index(np.arange(len(bank.pool) - bank.n_train))].numpy()
        self.forget_pos, self.test_pos = matched_candidates(forget_labels, test_labels, max_eval, seed)
        self.candidates = np.concatenate([forget[self.forget_pos], bank.test_index(self.test_pos)])
        retain = np.setdiff1d(np.arange(bank.n_train), forget)
        self.keep = ShadowBank.keep_matrix(n_shadows, len(self.candidates), derive_seed(seed, "keep"))
        self.requests = [ModelRequest("lira-half", np.union1d(retain, self.candidates[self.keep[m]]),
                                      derive_seed(seed, "shadow", m)) for m in range(n_shadows)]
        self.bank = bank

    def target_phi(self, outputs: ModelOutputs) -> np.ndarray:
        """The audited model's signal on the candidates (forget part first, then held-out)."""
        forget = logit_scaled_confidence(outputs.forget_logits[self.forget_pos], outputs.forget_labels[self.forget_pos])
        test = logit_scaled_confidence(outputs.test_logits[self.test_pos], outputs.test_labels[self.test_pos])
        return np.concatenate([forget, test])

    def labels(self) -> torch.Tensor:
        return self.bank.pool.y[self.candidates]

    def settings(self) -> dict[str, Any]:
        return {"n_shadows": len(self.requests), "in_per_example": int(self.keep.sum(0)[0]),
                "out_per_example": int((~self.keep).sum(0)[0]), "n_eval_forget": len(self.forget_pos),
                "n_eval_heldout": len(self.test_pos), "signal": SIGNAL,
                "member_positions": self.forget_pos.tolist(),
                "shadow_training": "D_r + the shadow's IN half of the candidates, the task's recipe (= target's)",
                "evaluation": "class-matched D_f examples (members) vs held-out test examples (non-members)"}


class _LiRABase(MembershipAttack):
    params = (
        Param("n_shadows", int, 16, "shadow models (even; each candidate IN for half of them)", Interval(2, None)),
        Param("mode", str, "online", "online (IN and OUT Gaussians) or offline (OUT only, one-sided)",
              Choice({"online", "offline"})),
        Param("variance", str, "auto", "per-example, global (pooled), or auto (global below 64 per side)",
              Choice({"auto", "global", "per-example"})),
        Param("max_eval", int, None, "cap on the evaluated forget examples (none = all that can be matched)",
              Interval(1, None), nullable=True),
    )
    needs = frozenset({"shadows"})

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.hparams["n_shadows"] % 2:
            raise ParameterError(f"The 'n_shadows' parameter of {self.display_name()} must be even (balanced keep matrix), "
                             f"Got {self.hparams['n_shadows']} instead.")
        self._memo: dict[str, Any] = {}

    def _halves(self, ctx: AttackContext) -> _ShadowHalves:
        key = ctx.bank.task_hash  # ctx.bank raises unless the shadow bank was declared and provided
        if key not in self._memo:
            self._memo[key] = _ShadowHalves(ctx, self.hparams["n_shadows"], self.hparams["max_eval"])
        return self._memo[key]

    def _scores(self, halves: _ShadowHalves, shadow_phi: np.ndarray, outputs: ModelOutputs,
                extra: dict[str, Any]) -> AttackScores:
        fit = fit_gaussians(shadow_phi, halves.keep, variance=self.hparams["variance"])
        phi = halves.target_phi(outputs)
        score = (lira_online if self.hparams["mode"] == "online" else lira_offline)(phi, fit)
        n = len(halves.forget_pos)
        settings = {**halves.settings(), "mode": self.hparams["mode"], "variance": self.hparams["variance"],
                    "gaussians": fit.settings, **extra}
        threshold = 0.0 if self.hparams["mode"] == "online" else math.log(0.95)
        settings["threshold_rule"] = ("likelihood ratio > 1" if self.hparams["mode"] == "online"
                                      else "phi above the OUT 95th percentile (one-sided 5% test)")
        return AttackScores(score[:n], score[n:], threshold, settings)


class LiRAAttack(_LiRABase):
    """LiRA on the audited model: D_f vs class-matched held-out examples, shadows trained on random halves."""

    name = "lira"
    summary = "Likelihood-ratio attack (Carlini et al.) with shadows on random halves; online or offline."
    paper = "Carlini, Chien, Nasr, Song, Terzis, Tramer: Membership Inference Attacks From First Principles (S&P 2022)"

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        halves = self._halves(ctx)
        logits = halves.bank.logits(halves.requests, halves.candidates)  # (M, N, K)
        phi = logit_scaled_confidence(logits, halves.labels().expand(logits.shape[0], -1))
        return self._scores(halves, phi, outputs, {"shadows": "trained (not unlearned)"})


class ULiRAAttack(_LiRABase):
    """U-LiRA: shadows trained on random halves, then unlearned by the method under audit (IN' vs OUT)."""

    name = "ulira"
    summary = "U-LiRA (Hayes et al.): shadows trained on random halves then unlearned by the audited method."
    paper = ("Hayes, Shumailov, Triantafillou, Khalifa, Papernot: Inexact Unlearning Needs More Careful "
             "Evaluations to Avoid a False Sense of Privacy (2024)")
    needs = frozenset({"shadows", "method"})

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        halves = self._halves(ctx)
        unlearner = ctx.unlearner
        key = (ctx.bank.task_hash, repr(sorted(unlearner.label.items())))
        if key not in self._memo:
            self._memo[key] = self._unlearned_phi(halves, unlearner)
        extra = {"shadows": "trained, then unlearned by the audited method (IN' = forgot the candidate)",
                 "method": unlearner.label}
        return self._scores(halves, self._memo[key], outputs, extra)

    @staticmethod
    def _unlearned_phi(halves: _ShadowHalves, unlearner: Any) -> np.ndarray:
        """Each shadow unlearned by the audited method (its IN candidates as its forget set), all missing ones
        together through the bank's executor, and their phi on the candidates."""
        bank, items = halves.bank, []
        bank.models(halves.requests)  # train every missing shadow at once (vectorised where possible)
        for m, request in enumerate(halves.requests):
            forget_idx = halves.candidates[halves.keep[m]]
            label = {"unlearned_by": unlearner.label, "forget_count": len(forget_idx),
                     "forget_sha256": hashlib.sha256(np.asarray(forget_idx, np.int64).tobytes()).hexdigest()}
            items.append((request, label, (request.indices, forget_idx, request.seed)))
        logits = bank.derived_logits(unlearner, items, halves.candidates)
        return np.stack([logit_scaled_confidence(row, halves.labels()) for row in logits])
