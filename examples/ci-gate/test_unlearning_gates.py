"""Gate an unlearning method in CI with muaudit's pytest plugin (fixtures ``muaudit_audit``, ``muaudit_baseline``).

Run: ``pytest examples/ci-gate --muaudit-device=cpu``. The first run trains the original and gold models into
muaudit's cache (``--muaudit-cache-dir``); later runs reuse them, and the scorecards too.
"""
from muaudit.gates import check

#: The audit every test shares: the digits task, one cheap attack, two gold models (a gold band needs two).
AUDIT = dict(task="digits", attacks="loss", gold_seeds=2)


def test_retrain_forgets_like_the_gold_models(muaudit_audit):
    card = muaudit_audit("retrain", **AUDIT)
    # Noise-aware tolerances: the band is the gold models' own spread, widened as in the verdicts.
    check(card, "forget_error within gold band", "mia_loss_auc within gold band",
          fail_on=["verdict == under-forgetting", "verdict == over-forgetting"])


def test_one_epoch_of_finetuning_does_not_forget(muaudit_audit):
    # A known weakness, pinned: if finetune starts to forget (or the audit stops seeing it), this test says so.
    card = muaudit_audit("finetune", epochs=1, **AUDIT)
    check(card, "verdict.forget_accuracy == under-forgetting", "forget_error < forget_error.gold")


def test_retrain_matches_the_approved_scorecard(muaudit_audit, muaudit_baseline):
    # Compared with test_unlearning_gates/<this test>.json within the noise floor; --muaudit-regen rewrites it.
    muaudit_baseline(muaudit_audit("retrain", **AUDIT))
