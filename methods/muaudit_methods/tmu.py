"""``tmu``: Twin Machine Unlearning (TMU), aligned data forgetting through a twin unlearning problem.

Paper: Niu, Ji, Sun, Lin, Gao, Wang and Gao, "Towards Aligned Data Forgetting via Twin Machine Unlearning", arXiv
preprint 2408.11433 (2024; a later version is arXiv 2501.08615; an ICLR 2025 submission, not accepted). Official
code: https://github.com/abc321123444/TWIN-unlearning (incomplete: ``un.py`` with ``get_feature`` and
``noise_train`` was never published).

Policy: where the code and the paper disagree the paper wins: the method's defaults (``unlearn_step="eq3"``,
``classifier="paper"``, preset ``paper``) are the paper's, and the code's behaviour is an option. A task preset
(our calibration, measured below) may select the code's unlearning step where the paper's diverges on that task,
and says so: eq. 3 ascends an unbounded loss without any D_r term, and on the digits tasks it only works in a
knife-edge window (digits: lr 0.01 x 3 epochs passes the defaults check, 0.008 does not move the forget error,
0.012 raises the test error past the ceiling; digits-class: lr 0.01 x 6 epochs passes, 8 epochs collapse the
model to 90% test error), so the digits and Fashion-MNIST presets keep the code's step.

Idea. The gold model (retrained on D_r) still classifies part of D_f correctly ("easy" samples) by
generalisation; aligned forgetting lowers the accuracy on the "hard" samples only. The generalisation label
(easy/hard) of a forget sample is unknown, so a binary classifier is trained on a *twin* problem whose gold
model is known, then transferred to D_f.

Algorithm (section numbers and equations of the paper):

1. Twin problem (Sec. 3.1, Fig. 1/2, eq. 1). D_test = held-out examples (here: the task's validation split, see
   below). Twin model ``M_t`` = the original ``M_o`` fine-tuned on ``D_r + D_f + D_test``; its forget set is
   D_test and its gold model is ``M_t^g = M_o`` (eq. 1). Generalisation labels of the twin data:
   ``easy(x) = [argmax M_o(x) == y]`` (1 = easy, 0 = hard).
2. Discriminative features (Sec. 3.2), each computed on the twin data with the twin's model ``M_t`` and on D_f
   with the original ``M_o`` (the model that was trained on the respective forget set):

   - DF (eq. 4, Sec. 3.2.1): ``g(x)`` = L2-normalised penultimate activation (the input of the last
     ``nn.Linear``, read with a forward hook); ``DF(x) = mean_{i<k} ||g(x) - g(x'_i)||_2`` over the ``k`` nearest
     neighbours ``x'_i`` among the *retained* examples of the same class (k = 5; the code's mean, not the
     paper's concatenation of the top-N distances).
   - AF (eqs. 5-6, Sec. 3.2.2): untargeted L_inf PGD ``x~ = x + r``, ``||r||_inf <= eps`` maximising
     ``CE(f(x~), y)`` (eps = 4/255 on [0, 1] inputs, 5 steps of size eps/3, sign gradient, no random start);
     ``AF(x) = H(s(x), s(x~)) = -sum_c softmax(f(x))_c log softmax(f(x~))_c``.
   - CF (Sec. 3.2.3, 4.1.1): per-sample cross-entropy of a *curriculum model* ``M_r``, the task architecture
     trained from scratch for 2 epochs (``ctx.fresh_model``).

   Each feature is winsorised at ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]`` then min-max scaled to [0, 1], separately for
   the twin set and for D_f (code: ``outline`` then min-max).
3. Binary classifier (Sec. 3.3), trained on the twin features and labels with sigmoid + BCE; a forget sample is
   *easy* when its sigmoid score is above 0.5. D_f is split into ``D_f^e`` (easy) and ``D_f^h`` (hard).
   ``classifier="paper"`` (default; Sec. 4.1.1): MLP ``n -> 64 -> 32 -> 1`` with ReLU, SGD lr 0.01, momentum 0.9,
   weight decay 5e-4, 100 epochs. ``classifier="code"`` (the released
   ``train_generalization_binary_classifier.py``): ``n -> 32 -> 16 -> 1``, Adam lr 0.01, 200 epochs, batch 128.
   ``classifier_balance="balanced"`` (default, ours) weights the BCE with ``pos_weight = n_hard / n_easy``.
4. Noise-perturbed fine-tuning of the *original* model ``M_o``, eq. 3:
   ``max_theta L_{D_f^h}(x, y; theta) - L_{D~_f^e}(x~, y; theta)``, ``D~_f^e = {x + r : x in D_f^e}``,
   ``r`` Gaussian. ``unlearn_step="eq3"`` (the paper): SGD over mini-batches of D_f minimising
   ``mean_{batch n D~_f^e} CE - mean_{batch n D_f^h} CE`` (gradient ascent on the hard samples with their true
   labels, descent on the noise-perturbed easy ones; each term present only when the batch holds such samples),
   no D_r term. ``unlearn_step="code"``: minimise the mean cross-entropy over mini-batches of ``D_f^e`` (inputs
   perturbed by fresh Gaussian noise, labels kept) ``+ D_f^h`` (each relabelled once with a uniformly random class
   != its own) ``+ D_r``. Both: SGD lr 1e-2, momentum 0.9, weight decay 5e-4, batch 64, 5 epochs (code).

Hyperparameters (``None`` = the preset's value; ``preset`` default "auto", resolved per task):

| parameter | paper | digits | digits-class | fmnist-5ep = fmnist-class | fmnist |
|---|---|---|---|---|---|
| ``twin_epochs`` / ``twin_lr`` | 10 / 1e-4 | 10 / 1e-4 | 10 / 1e-4 | 2 / 1e-4 | 2 / 1e-4 |
| ``curriculum_epochs`` / ``curriculum_lr`` | 2 / 1e-3 | 2 / 1e-3 | 2 / 1e-3 | 2 / 1e-3 | 2 / 1e-3 |
| ``noise_std`` | 0.1 | 0.6 | 0.016 | 0.1 | 0.6 |
| ``epochs`` / ``lr`` (unlearning SGD) | 5 / 1e-2 | 3 / 5e-2 | 12 / 4.92e-3 | 1 / 1e-2 | 1 / 1e-2 |
| ``unlearn_step`` | eq3 | code | code | code | code |

Sources: twin = code ``train_test_data.py`` (Adam, no weight decay, batch ``twin_batch_size`` = 64, 10 epochs,
lr 1e-4). Curriculum model = paper 4.1.1 ("two epochs", lr "one-tenth of the learning rate used during the
fine-tuning process", i.e. 1e-2 / 10; Adam and batch ``curriculum_batch_size`` = 64 from the code's
``train_loss.py``, whose own lr is Adam 1e-4). ``noise_std`` = sigma of r in [0, 1] input units: [DECISION],
the paper gives neither unit nor value. Unlearning recipe = code (SGD lr 1e-2, momentum 0.9, wd 5e-4, batch 64,
5 epochs).

Fixed-default parameters: ``curriculum_retain_fraction`` = 0.3 (paper Sec. 3.2.3/4.1.1: "a 30% random subset
of D_r"; code: all of its 75% training split), ``curriculum_twin`` = True (paper: M_r is trained on D_f and
D_test too; code: not on D_test), ``k`` = 5, ``pgd_eps`` = 4/255, ``pgd_steps`` = 5, ``pgd_step_size`` = eps/3
(code ``eval_adverarial_attack``; paper: eps = 4/255), ``features`` = "df+af+cf" (paper; "df+cf" reproduces the
code, which computes AF but feeds only ``stack(DF, CF)`` to the classifier), ``classifier`` = "paper"
(``classifier_epochs`` / ``classifier_batch_size`` none = the classifier's: 100 / 16 for the paper's, 200 / 128
for the code's), ``classifier_lr`` = 0.01 (both), ``classifier_balance`` = "balanced", ``batch_size`` = 64,
``momentum`` = 0.9, ``weight_decay`` = 5e-4 (code), ``twin_classes`` = "forget",
``absent_class_hard`` = True.

Digits and Fashion-MNIST presets: our check and calibration, not the paper's (the measured effect of each is at
the end of this docstring). The earlier check on digits (8x8, MLP, ~1.3k training examples), with the paper's
values: they run. The curriculum model with the paper's lr 1e-3
reaches ~75% test accuracy after its 2 epochs (18 steps), the "partly trained" state the feature needs, whereas
the code's Adam 1e-4 leaves it at chance (10%) with no signal in its loss; the twin recipe (Adam 1e-4 x 10
epochs) brings the twin's D_test loss from 0.11 to 0.025, the order of the original's training loss
(0.006-0.008). Fashion-MNIST (LeNet-like CNN, 60k examples, original trained for only 5 epochs): 2 twin epochs
instead of 10 and 1 unlearning epoch instead of 5, so that neither the twin nor the unlearning trains as long as
the original did (the paper's 10 and 5 epochs are 5% and 2.5% of its 200-epoch training; 5 epochs over D would
cost a full retrain here). Otherwise the unlearning recipe is the paper's. At digits scale the noise level hardly
matters (sigma 0 to 0.3 leave forget loss and accuracy unchanged: 5 epochs of fine-tuning do not undo the
original's fit of D_f^e), and with a 97%-accurate original the twin data hold only a handful of hard examples,
so the classifier predicts almost all of D_f easy (the gold model gets ~95% of a random 10% D_f right).
TMU is designed for class-subset forgetting (muaudit forget kind ``class-subset``; the paper: 100 random
images of one class). Cost: twin (``twin_epochs`` over D + D_test) + curriculum model (``curriculum_epochs``
over ~0.3 D) + one PGD pass and one forward pass per feature set + ``epochs`` over D.

Data needs: ``retain`` (D_r for the neighbours, the twin, the curriculum model and the fine-tuning) and
``validation`` (the held-out D_test of the twin problem; muaudit carves it from the test split, disjoint from
the test split used for readouts).

Diagnostics: after ``unlearn`` the instance holds ``last_report`` (a dict): ``twin_size``, ``twin_easy_fraction``
(labels), ``classifier_epochs``, ``classifier_accuracy`` and ``classifier_balanced_accuracy`` (on its own twin
training data), ``forget_easy_fraction`` (fraction of D_f predicted easy, after the absent-class rule),
``n_easy``, ``n_hard``, ``n_absent_class`` (forget samples whose class has no example in D_r),
``twin_weight_change`` (L2 norm of ``M_t - M_o``), ``feature_names``, and the tensors ``twin_features``,
``twin_labels``, ``forget_features``, ``forget_scores`` (sigmoid) and ``forget_easy`` (bool mask) so that tests can
re-evaluate the classifier on held-out parts of the twin data. The scalar entries, with the unlearning step and
the classifier variant, are also reported as the run's diagnostics (the scorecard's ``method.diagnostics``).

Decisions:

- [DECISION] Which model is fine-tuned: the *original* ``M_o`` (the paper: "we can fine-tune the original model
  M_o"), not the twin as the released code does (``noise_train(netC, ...)`` with ``netC`` = the twin). The
  twin is only used for the twin features and is never returned.
- [DECISION] Twin data D_test = the validation examples whose class occurs in D_f (``twin_classes="forget"``):
  for the paper's class-subset forgetting this is the code's "held-out examples of the target class"; for random
  forgetting (all classes in D_f) it is the whole validation split. ``twin_classes="all"`` always uses the whole
  validation split. The same D_test is used to train the twin and the classifier (as in the paper; the code
  fine-tunes on its 25% left-out split but labels CIFAR test images, an inconsistency we do not copy).
- [DECISION] The twin is fine-tuned on ``D_r + D_f + D_test`` (paper Fig. 2; the code's 75% training split is
  all the training data it has), Adam without weight decay, constant lr, no augmentation (the code trains on raw
  tensors), data order from ``ctx.generator``.
- [DECISION] DF neighbours: the retained set *of each problem*. For D_f (original problem, model M_o) that is
  D_r; for D_test (twin problem, model M_t, gold M_o) it is the twin gold's training data ``D_r + D_f``. The code
  uses D_nf (= D_r of the target class) for both sides and mixes models for D_f (M_o for x, M_t for the
  neighbours); we use one model per problem. Same-class neighbours; a class with no retained example falls back
  to the retained examples of all classes. k is capped at the number of candidates.
- [DECISION] AF: the PGD objective is the mean CE with the true labels in eval mode (per-sample independent);
  each step ``x <- clip_[0,1](clip_[x0-eps, x0+eps](x + a sign(grad)))``. The clip to [0, 1] is ours (the code
  works in normalised space without clipping; inputs here are [0, 1] images). The feature uses
  softmax(clean logits) as the soft target: the code passes raw logits as the target of ``F.cross_entropy``,
  which is not a distribution.
- [DECISION] CF: M_r = ``ctx.fresh_model`` trained for ``curriculum_epochs`` with Adam (``curriculum_lr``) on a
  ``curriculum_retain_fraction`` random subset of D_r plus D_f plus D_test (paper 4.1.1), so that both sets the
  classifier sees are training data of M_r; the loss is read in eval mode. ``curriculum_twin=False`` drops
  D_test (the code's ``train_loss.py``).
- [DECISION] Scaling: winsorise then min-max each feature separately per set (code); ``torch.quantile`` with
  linear interpolation; a constant feature scales to 0.
- [DECISION] Class-balanced BCE (``classifier_balance="balanced"``): neither the paper nor the code weights the
  BCE, but the twin labels are imbalanced (a good original classifies most held-out data correctly), and with
  plain BCE the classifier collapses to "all easy". Measured on digits (code classifier, plain BCE): 96% of the
  twin set is easy, the classifier's balanced accuracy is 0.50 and it predicts 0 of the 126 forget samples hard,
  so TMU reduces to noisy fine-tuning. With ``pos_weight = n_hard / n_easy`` (easy = positive) both classes carry
  equal total weight: the paper's classifier then reaches a balanced accuracy of 0.90 on its twin data and marks
  27 of 126 forget samples hard (the gold model gets 6 of them wrong; over 6 classifier seeds the predicted hard
  set agrees with the gold model's easy/hard split at balanced accuracy 0.89-0.92). ``"none"`` is plain BCE.
  With one class absent from the twin labels the BCE is unweighted.
- [DECISION] The paper's classifier batch size is not stated; 16 is used. The SGD classifier underfits at the
  code's 128 on a small twin set (108 digits examples: one step per epoch, 100 steps; balanced accuracy
  0.50-0.82 over 6 seeds), while 16 gives 700 steps and 0.90-0.91.
- [DECISION] Eq. 3's losses are means over their sets, estimated per mini-batch of D_f; the hard samples keep
  their true labels (literal gradient ascent). The code's relabelling of D_f^h with D_r is ``unlearn_step="code"``.
- [DECISION] Classifier: easy iff sigmoid(output) > 0.5. The code's ``trainb`` applies a sigmoid before the BCE
  but ``evalb`` compares the unsquashed output with 0.5 (``pure_model``'s source is unpublished, so whether it
  ends in a sigmoid is unknown); we threshold the probability. Its initialisation (under a forked RNG) and its
  data order come from seeds derived from ``ctx.seed``.
- [DECISION] Absent classes (``absent_class_hard=True``): a forget sample whose class has no example in D_r is
  hard whatever the classifier says, since the gold model never saw the class (full-class forgetting, where the
  twin problem, whose gold M_o did see the class, transfers wrongly). The paper targets class-subset forgetting
  and does not discuss this case; ``False`` keeps the classifier's verdict.
- [DECISION] Noise (eq. 3): ``r ~ N(0, noise_std^2 I)`` on the [0, 1] inputs of D_f^e only (eq. 3 perturbs
  D_f^e; D_f^h enters with clean inputs), drawn afresh each time a sample is in a batch, not clipped (eq. 3:
  ``x~ = x + r``). The paper's Table 4 lists "noise levels" 0, 1, 3, 5, 10 without unit or chosen value;
  ``noise_std = 0`` gives the naive eq. 2 variant (with the code's relabelling).
- [DECISION] ``unlearn_step="code"``: hard samples are relabelled once (uniform over the other classes,
  ``ctx.generator``) and trained with CE together with D_r, as the code does. In both steps the model is in train
  mode (BatchNorm statistics update) during all fine-tuning.

Task presets, measured (``preset="auto"``, the default, picks the one calibrated for the task at hand; the published
values stay ``preset=paper``; ``muaudit describe tmu`` lists every preset). Each default run on the named task, by
``reports/scripts/acceptance.py`` (3 gold seeds, errors in %):

- ``digits`` (preset ``digits``: twin_epochs=10, twin_lr=0.0001, curriculum_epochs=2, curriculum_lr=0.001,
  noise_std=0.6, epochs=3, lr=0.05, unlearn_step=code; the paper's classifier, balanced BCE): forget error 0.00 ->
  2.38 (gold 4.76); test error 3.24 (tolerated up to 4.31); 27 of 126 forget samples hard, classifier balanced
  accuracy 0.90. (Before issue 12, with the code's classifier and plain BCE: 0 hard, forget error 3.17.)
- ``digits-class`` (preset ``digits-class``: twin_epochs=10, twin_lr=0.0001, curriculum_epochs=2,
  curriculum_lr=0.001, noise_std=0.016, epochs=12, lr=0.00492, unlearn_step=code): forget error 0.00 -> 100.00
  (gold 100.00); test error 11.81 (tolerated up to 14.35); every forget sample is hard (absent class).
- ``fashion-mnist-random`` (preset ``fmnist``: twin_epochs=2, twin_lr=0.0001, curriculum_epochs=2,
  curriculum_lr=0.001, noise_std=0.6, epochs=1, lr=0.01): forget error 0.20 -> 4.70 (gold 10.37); test error 12.66
  (tolerated up to 13.68)
- ``fashion-mnist-class`` (preset ``fmnist-class``: twin_epochs=2, twin_lr=0.0001, curriculum_epochs=2,
  curriculum_lr=0.001, noise_std=0.1, epochs=1, lr=0.01): forget error 0.10 -> 100.00 (gold 100.00); test error
  18.50 (tolerated up to 20.17)
- The two Fashion-MNIST rows were measured with the code's classifier and plain BCE (before issue 12) and have not
  been re-measured with the paper's classifier and balanced BCE (which mark more samples hard on random subsets).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.errors import ParameterError
from muaudit.params import Choice, Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.task import Recipe
from muaudit.training import derive_seed, fit, progress_bar
from muaudit.zoo import last_linear_prefix


@dataclass(frozen=True)
class PresetValues:
    """The scale-dependent defaults."""

    twin_epochs: int
    twin_lr: float
    curriculum_epochs: int
    curriculum_lr: float
    noise_std: float
    epochs: int
    lr: float
    unlearn_step: str = "eq3"


#: Per-preset defaults; see the module docstring for their sources.
PRESETS: dict[str, PresetValues] = {
    "paper": PresetValues(twin_epochs=10, twin_lr=1e-4, curriculum_epochs=2, curriculum_lr=1e-3,
                          noise_std=0.1, epochs=5, lr=1e-2),
    "digits": PresetValues(twin_epochs=10, twin_lr=1e-4, curriculum_epochs=2, curriculum_lr=1e-3,
                           noise_std=0.6, epochs=3, lr=5e-2, unlearn_step="code"),
    "digits-class": PresetValues(twin_epochs=10, twin_lr=1e-4, curriculum_epochs=2, curriculum_lr=1e-3,
                                 noise_std=0.016, epochs=12, lr=4.92e-3, unlearn_step="code"),
    "fmnist-5ep": PresetValues(twin_epochs=2, twin_lr=1e-4, curriculum_epochs=2, curriculum_lr=1e-3,
                               noise_std=0.1, epochs=1, lr=1e-2, unlearn_step="code"),
}

#: The memorising Fashion-MNIST tasks: the 5-epoch tasks' values, with stronger input noise on random subsets
#: (sigma 0.6: forget error 0.2 -> 4.7 against gold 10.4, test error 12.7 against 11.7; sigma 0.1 moves it to 1.35).
PRESETS["fmnist"] = replace(PRESETS["fmnist-5ep"], noise_std=0.6)
PRESETS["fmnist-class"] = PRESETS["fmnist-5ep"]

FEATURE_SETS: dict[str, tuple[str, ...]] = {"df+af+cf": ("df", "af", "cf"), "df+cf": ("df", "cf")}
#: The entries of ``last_report`` that are also reported as diagnostics (the rest are tensors).
DIAGNOSTIC_KEYS = ("twin_size", "twin_easy_fraction", "classifier_epochs", "classifier_accuracy",
                   "classifier_balanced_accuracy", "forget_easy_fraction", "n_easy", "n_hard", "n_absent_class",
                   "twin_weight_change", "feature_names")

_FEATURE_BATCH = 512


# ------------------------------------------------------------------------------------------ features
def _last_linear(model: nn.Module) -> nn.Module:
    name = last_linear_prefix(model)[:-1]
    return dict(model.named_modules())[name]


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, device: torch.device,
                         batch_size: int = _FEATURE_BATCH) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` (flattened), in eval mode, as a CPU float tensor."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    was_training = model.training
    model.eval()
    handle = _last_linear(model).register_forward_hook(hook)
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        return torch.empty(0, 0)
    return torch.cat(captured)


def knn_mean_distance(query: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Mean L2 distance of each L2-normalised query row to its ``k`` nearest L2-normalised reference rows."""
    q = F.normalize(query.double(), p=2, dim=1)
    r = F.normalize(reference.double(), p=2, dim=1)
    k = min(k, r.shape[0])
    out = []
    for start in range(0, q.shape[0], 1024):
        d = torch.cdist(q[start:start + 1024], r)
        out.append(d.topk(k, dim=1, largest=False).values.mean(dim=1))
    return torch.cat(out).float() if out else torch.empty(0)


def distance_feature(query: torch.Tensor, query_y: torch.Tensor, reference: torch.Tensor,
                     reference_y: torch.Tensor, k: int) -> torch.Tensor:
    """DF: mean distance to the ``k`` nearest same-class references (all references if the class has none)."""
    out = torch.empty(len(query_y))
    for c in torch.unique(query_y).tolist():
        rows = query_y == c
        same = reference_y == c
        refs = reference[same] if bool(same.any()) else reference
        out[rows] = knn_mean_distance(query[rows], refs, k)
    return out


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
               step_size: float) -> torch.Tensor:
    """L_inf PGD without random start: sign-gradient ascent on CE, projected on the eps-ball and on [0, 1]."""
    x0 = x.detach()
    adv = x0.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(0.0, 1.0)
    return adv.detach()


def adversarial_feature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, eps: float,
                        steps: int, step_size: float, batch_size: int = 256) -> torch.Tensor:
    """AF: ``H(softmax(f(x)), softmax(f(x_adv)))`` per sample, with ``x_adv`` from :func:`pgd_attack` (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            adv = pgd_attack(model, xb, yb, eps, steps, step_size)
            with torch.no_grad():
                clean, dirty = model(xb), model(adv)
                out.append(-(F.softmax(clean, 1) * F.log_softmax(dirty, 1)).sum(1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                    batch_size: int = _FEATURE_BATCH) -> torch.Tensor:
    """CF: per-sample cross-entropy in eval mode."""
    was_training = model.training
    model.eval()
    out = [F.cross_entropy(model(x[s:s + batch_size].to(device)), y[s:s + batch_size].to(device),
                           reduction="none").float().cpu() for s in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, device: torch.device,
                batch_size: int = _FEATURE_BATCH) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = [model(x[s:s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def winsorize_minmax(values: torch.Tensor) -> torch.Tensor:
    """Clip to ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]`` then scale to [0, 1] (a constant column becomes 0)."""
    v = values.double()
    q1, q3 = torch.quantile(v, 0.25), torch.quantile(v, 0.75)
    iqr = q3 - q1
    v = v.clamp(float(q1 - 1.5 * iqr), float(q3 + 1.5 * iqr))
    low, high = v.min(), v.max()
    if not bool(high > low):
        return torch.zeros_like(values, dtype=torch.float32)
    return ((v - low) / (high - low)).float()


def scale_columns(features: torch.Tensor) -> torch.Tensor:
    """:func:`winsorize_minmax` applied to every column."""
    return torch.stack([winsorize_minmax(features[:, j]) for j in range(features.shape[1])], dim=1)


# ---------------------------------------------------------------------------------------- classifier
@dataclass(frozen=True)
class ClassifierRecipe:
    """The easy/hard MLP and its optimiser: hidden sizes, optimiser, epochs, batch size (lr is a parameter)."""

    hidden: tuple[int, int]
    optimizer: str  # "sgd" (momentum 0.9, weight decay 5e-4) or "adam"
    epochs: int
    batch_size: int


#: paper Sec. 4.1.1: 64/32, SGD lr 0.01 momentum 0.9 wd 5e-4, 100 epochs (batch size unstated: 16, see the module
#: docstring); code ``pure_model`` / ``trainb``: 32/16, Adam lr 0.01, 200 epochs, batch 128.
CLASSIFIERS: dict[str, ClassifierRecipe] = {"paper": ClassifierRecipe((64, 32), "sgd", 100, 16),
                                            "code": ClassifierRecipe((32, 16), "adam", 200, 128)}
#: Loss weighting of the easy/hard classifier: "balanced" = BCE with pos_weight = n_hard / n_easy; "none" = plain.
CLASSIFIER_BALANCE = ("balanced", "none")
#: The unlearning step: "eq3" = the paper's eq. 3 (no D_r); "code" = the released code's relabelled fine-tuning.
UNLEARN_STEPS = ("eq3", "code")


def make_classifier(n_features: int, seed: int, hidden: tuple[int, int] = (32, 16)) -> nn.Sequential:
    """``n -> hidden[0] -> hidden[1] -> 1`` with ReLU (initialised under ``seed``); (32, 16) is the code's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_features, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                             nn.Linear(hidden[1], 1))


def balanced_pos_weight(labels: torch.Tensor) -> torch.Tensor | None:
    """``n_negative / n_positive`` (easy = 1 = positive), so that both classes carry equal total weight in the BCE;
    ``None`` (plain BCE) when one class is absent."""
    positive = int(labels.sum())
    negative = len(labels) - positive
    return None if positive == 0 or negative == 0 else torch.tensor(negative / positive)


def train_classifier(features: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float, batch_size: int,
                     seed: int, device: torch.device, recipe: ClassifierRecipe = CLASSIFIERS["code"],
                     balance: str = "none") -> nn.Sequential:
    """Sigmoid + BCE (code: ``trainb``), ``epochs`` shuffled passes with the recipe's MLP and optimiser.

    ``balance="balanced"`` weights the BCE with :func:`balanced_pos_weight` (the classes are imbalanced: a good
    original classifies most held-out data correctly, and plain BCE then predicts "easy" for everything).
    """
    clf = make_classifier(features.shape[1], derive_seed(seed, "init"), recipe.hidden).to(device).train()
    opt: torch.optim.Optimizer = (torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
                                  if recipe.optimizer == "sgd" else torch.optim.Adam(clf.parameters(), lr=lr))
    weight = balanced_pos_weight(labels) if balance == "balanced" else None
    pos_weight = None if weight is None else weight.to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, "order"))
    data = Split(features.float(), labels.float())
    for _ in range(epochs):
        for xb, yb in data.batches(batch_size, shuffle=True, generator=gen):
            opt.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(clf(xb.to(device)).squeeze(1), yb.to(device),
                                               pos_weight=pos_weight).backward()
            opt.step()
    return clf.eval()


@torch.no_grad()
def classifier_scores(clf: nn.Module, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sigmoid scores (probability of "easy")."""
    if len(features) == 0:
        return torch.empty(0)
    return torch.sigmoid(clf(features.float().to(device)).squeeze(1)).cpu()


def balanced_accuracy(labels: torch.Tensor, predicted: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``labels`` (NaN when empty)."""
    recalls = [float((predicted[labels == c] == c).float().mean()) for c in torch.unique(labels).tolist()]
    return float(np.mean(recalls)) if recalls else math.nan


# ------------------------------------------------------------------------------------------- helpers
def concat(*splits: Split) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def signed_loss(ce: torch.Tensor, ascend: torch.Tensor) -> torch.Tensor:
    """``mean(ce[~ascend]) - mean(ce[ascend])``, each term only when present: eq. 3's ``-(L_h - L_e)`` on a batch
    (``ascend`` marks D_f^h), or the plain mean when nothing ascends."""
    terms = [ce[~ascend].mean()] if bool((~ascend).any()) else []
    if bool(ascend.any()):
        terms.append(-ce[ascend].mean())
    return torch.stack(terms).sum()


def random_other_labels(y: torch.Tensor, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """One label != y_i per sample, uniform over the other ``n_classes - 1`` classes."""
    return (y + torch.randint(1, n_classes, y.shape, generator=gen)) % n_classes


def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    total = sum(float((pa.detach().double() - pb.detach().double()).pow(2).sum())
                for pa, pb in zip(a.parameters(), b.parameters()))
    return math.sqrt(total)


# ------------------------------------------------------------------------------------------- method
class TMU(UnlearningMethod):
    """Twin Machine Unlearning: predict easy/hard forget samples from a twin problem, then noisy fine-tuning."""

    name = "tmu"
    summary = "Twin Machine Unlearning: easy/hard classifier from a twin problem + noise-perturbed fine-tuning."
    paper = ("Niu, Ji, Sun, Lin, Gao, Wang and Gao, 'Towards Aligned Data Forgetting via Twin Machine Unlearning' "
             "(TMU), arXiv preprint arXiv:2408.11433 (2024), Sec. 3, eqs. 1-6; recipes from "
             "github.com/abc321123444/TWIN-unlearning")
    needs = frozenset({"retain", "validation"})
    presets = {name: asdict(values) for name, values in PRESETS.items()}
    params = (
        preset_param(PRESETS, "scale-dependent defaults: paper (CIFAR), digits or fmnist"),
        Param("features", str, "df+af+cf", "classifier inputs: df+af+cf (paper) or df+cf (released code)",
              Choice(tuple(FEATURE_SETS))),
        Param("twin_classes", str, "forget", "validation examples forming D_test: of D_f's classes, or all",
              Choice(("forget", "all"))),
        Param("twin_epochs", int, None, "Adam epochs of the twin fine-tuning (none = preset)", Interval(1, None),
              nullable=True),
        Param("twin_lr", float, None, "Adam lr of the twin fine-tuning (none = preset)",
              Interval(0, None, closed="neither"), nullable=True),
        Param("twin_batch_size", int, 64, "twin fine-tuning batch size", Interval(1, None)),
        Param("curriculum_epochs", int, None, "epochs of the from-scratch curriculum model (none = preset)",
              Interval(1, None), nullable=True),
        Param("curriculum_lr", float, None, "Adam lr of the curriculum model (none = preset)",
              Interval(0, None, closed="neither"), nullable=True),
        Param("curriculum_batch_size", int, 64, "curriculum model batch size", Interval(1, None)),
        Param("curriculum_retain_fraction", float, 0.3, "fraction of D_r the curriculum model trains on",
              Interval(0, 1, closed="right")),
        Param("curriculum_twin", bool, True, "train the curriculum model on D_test too (paper; code: no)"),
        Param("k", int, 5, "nearest neighbours of the distance feature", Interval(1, None)),
        Param("pgd_eps", float, 4 / 255, "L_inf budget of the adversarial feature ([0,1] inputs)",
              Interval(0, None)),
        Param("pgd_steps", int, 5, "PGD steps of the adversarial feature", Interval(0, None)),
        Param("pgd_step_size", float, None, "PGD step size (none = eps/3)", Interval(0, None), nullable=True),
        Param("classifier", str, "paper", "easy/hard MLP: paper (64/32, SGD, 100 epochs) or code (32/16, Adam, "
              "200 epochs)", Choice(tuple(CLASSIFIERS))),
        Param("classifier_balance", str, "balanced", "BCE weighting: balanced (pos_weight = n_hard/n_easy; ours, "
              "against the all-easy collapse) or none (paper and code)", Choice(CLASSIFIER_BALANCE)),
        Param("classifier_epochs", int, None, "epochs of the easy/hard classifier (none = the classifier's)",
              Interval(1, None), nullable=True),
        Param("classifier_lr", float, 0.01, "lr of the easy/hard classifier (SGD or Adam; 0.01 in both)",
              Interval(0, None, closed="neither")),
        Param("classifier_batch_size", int, None, "batch size of the easy/hard classifier (none = the classifier's: "
              "16 paper, 128 code)", Interval(1, None), nullable=True),
        Param("absent_class_hard", bool, True, "forget samples of classes absent from D_r are hard"),
        Param("unlearn_step", str, None, "eq3 = the paper's: ascend CE on D_f^h, descend on noisy D_f^e, no "
              "D_r; code = CE on D_r + relabelled D_f^h + noisy D_f^e (none = the preset's)", Choice(UNLEARN_STEPS),
              nullable=True),
        Param("noise_std", float, None, "sigma of the Gaussian noise on D_f^e inputs, eq. 3 (none = preset)",
              Interval(0, None), nullable=True, search=Search(0.01, 0.5, log=True)),
        Param("epochs", int, None, "unlearning fine-tuning epochs (none = preset)", Interval(0, None),
              nullable=True, search=Search(1, 15)),
        Param("lr", float, None, "unlearning SGD lr (none = preset)", Interval(0, None, closed="neither"),
              nullable=True, search=Search(1e-3, 0.3, log=True)),
        Param("batch_size", int, 64, "unlearning batch size", Interval(1, None)),
        Param("momentum", float, 0.9, "unlearning SGD momentum", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 5e-4, "unlearning SGD weight decay", Interval(0, None)),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.last_report: dict[str, Any] = {}

    def setting(self, key: str) -> Any:
        """The explicit value of ``key`` or, when ``None``, the preset's."""
        value = self.hparams[key]
        if value is None:
            raise ParameterError(f"tmu setting {key!r} is unresolved: preset 'auto' needs the task (run it "
                                 "through muaudit, or pass a preset by name)")
        return value

    # ------------------------------------------------------------------------------------ pipeline
    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        model.to(ctx.device)
        forget, retain = data.forget, data.retain
        twin_set = self._twin_set(forget, data.validation)
        easy = self._predict_easy(model, forget, retain, twin_set, ctx)
        self.report(**{k: v for k, v in self.last_report.items() if k in DIAGNOSTIC_KEYS},
                    unlearn_step=self.setting("unlearn_step"), classifier=self.hparams["classifier"],
                    classifier_balance=self.hparams["classifier_balance"])
        if self.setting("unlearn_step") == "eq3":
            return self._finetune(model, forget.x, forget.y, easy, ~easy, ctx)
        relabelled = random_other_labels(forget.y, ctx.n_classes, ctx.generator("hard-labels"))
        keep = torch.zeros(len(retain), dtype=torch.bool)
        return self._finetune(model, torch.cat([forget.x, retain.x]),
                              torch.cat([torch.where(easy, forget.y, relabelled), retain.y]),
                              torch.cat([easy, keep]), torch.zeros(len(forget) + len(retain), dtype=torch.bool), ctx)

    def _predict_easy(self, model: nn.Module, forget: Split, retain: Split, twin_set: Split,
                      ctx: MethodContext) -> torch.Tensor:
        """Steps 1-3: twin, features, classifier; the easy mask of D_f (also fills ``last_report``)."""
        twin = self._train_twin(model, forget, retain, twin_set, ctx)
        curriculum = self._train_curriculum(forget, retain, twin_set, ctx)
        names = FEATURE_SETS[self.hparams["features"]]
        twin_features = scale_columns(self._features(twin, curriculum, twin_set, (retain, forget), names, ctx))
        forget_features = scale_columns(self._features(model, curriculum, forget, (retain,), names, ctx))
        twin_labels = (predictions(model, twin_set.x, ctx.device) == twin_set.y).long()  # gold of twin = M_o
        recipe = CLASSIFIERS[self.hparams["classifier"]]
        epochs = self.hparams["classifier_epochs"] or recipe.epochs
        clf = train_classifier(twin_features, twin_labels, epochs, self.hparams["classifier_lr"],
                               self.hparams["classifier_batch_size"] or recipe.batch_size,
                               derive_seed(ctx.seed, "classifier"), ctx.device, recipe,
                               self.hparams["classifier_balance"])
        scores = classifier_scores(clf, forget_features, ctx.device)
        absent = ~torch.isin(forget.y, torch.unique(retain.y))
        easy = scores > 0.5
        if self.hparams["absent_class_hard"]:
            easy &= ~absent
        twin_pred = (classifier_scores(clf, twin_features, ctx.device) > 0.5).long()
        self.last_report = {
            "twin_size": len(twin_set), "twin_easy_fraction": float(twin_labels.float().mean()),
            "classifier_accuracy": float((twin_pred == twin_labels).float().mean()),
            "classifier_balanced_accuracy": balanced_accuracy(twin_labels, twin_pred),
            "forget_easy_fraction": float(easy.float().mean()) if len(easy) else None,
            "n_easy": int(easy.sum()), "n_hard": int((~easy).sum()), "n_absent_class": int(absent.sum()),
            "twin_weight_change": parameter_distance(twin, model), "feature_names": names,
            "classifier_epochs": epochs,
            "twin_features": twin_features, "twin_labels": twin_labels, "forget_features": forget_features,
            "forget_scores": scores, "forget_easy": easy,
        }
        return easy

    def _twin_set(self, forget: Split, validation: Split) -> Split:
        if self.hparams["twin_classes"] == "all":
            chosen = validation
        else:
            keep = torch.isin(validation.y, torch.unique(forget.y))
            chosen = validation.subset(torch.nonzero(keep).flatten())
        if len(chosen) == 0:
            raise ParameterError("tmu: the validation split has no example of the forget set's classes "
                                 "(the twin problem needs held-out data; try twin_classes=all)")
        return Split(chosen.x, chosen.y)

    def _train_twin(self, model: nn.Module, forget: Split, retain: Split, twin_set: Split,
                    ctx: MethodContext) -> nn.Module:
        """M_t: a copy of M_o fine-tuned on D_r + D_f + D_test (Adam, constant lr)."""
        twin = copy.deepcopy(model)
        recipe = Recipe(epochs=self.setting("twin_epochs"), batch_size=self.hparams["twin_batch_size"],
                        optimizer="adam", lr=self.setting("twin_lr"), weight_decay=0.0, schedule="constant")
        return fit(twin, concat(retain, forget, twin_set), recipe, derive_seed(ctx.seed, "twin-order"),
                   ctx.device, None if ctx.progress is None else f"{ctx.progress}: twin")

    def _train_curriculum(self, forget: Split, retain: Split, twin_set: Split, ctx: MethodContext) -> nn.Module:
        """M_r: the architecture from scratch, a few epochs on part of D_r + D_f (+ D_test)."""
        n_keep = int(round(self.hparams["curriculum_retain_fraction"] * len(retain)))
        order = torch.randperm(len(retain), generator=ctx.generator("curriculum-subset"))
        parts = [retain.subset(torch.sort(order[:n_keep]).values), forget]
        if self.hparams["curriculum_twin"]:
            parts.append(twin_set)
        scratch = ctx.fresh_model(derive_seed(ctx.seed, "curriculum-init")).to(ctx.device)
        recipe = Recipe(epochs=self.setting("curriculum_epochs"), batch_size=self.hparams["curriculum_batch_size"],
                        optimizer="adam", lr=self.setting("curriculum_lr"), weight_decay=0.0,
                        schedule="constant")
        return fit(scratch, concat(*parts), recipe, derive_seed(ctx.seed, "curriculum-order"), ctx.device,
                   None if ctx.progress is None else f"{ctx.progress}: curriculum")

    def _features(self, model: nn.Module, curriculum: nn.Module, query: Split, reference: tuple[Split, ...],
                  names: tuple[str, ...], ctx: MethodContext) -> torch.Tensor:
        """Raw (unscaled) features of ``query``: ``model`` is the problem's original, ``reference`` its D_r."""
        columns = []
        for name in names:
            if name == "df":
                ref_features = torch.cat([penultimate_features(model, r.x, ctx.device) for r in reference])
                columns.append(distance_feature(
                    penultimate_features(model, query.x, ctx.device), query.y,
                    ref_features, torch.cat([r.y for r in reference]), self.hparams["k"]))
            elif name == "af":
                eps = self.hparams["pgd_eps"]
                step = eps / 3 if self.hparams["pgd_step_size"] is None else self.hparams["pgd_step_size"]
                columns.append(adversarial_feature(model, query.x, query.y, ctx.device, eps,
                                                   self.hparams["pgd_steps"], step))
            else:
                columns.append(per_sample_loss(curriculum, query.x, query.y, ctx.device))
        return torch.stack(columns, dim=1)

    def _finetune(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noisy: torch.Tensor,
                  ascend: torch.Tensor, ctx: MethodContext) -> nn.Module:
        """SGD on ``(x, y)``: Gaussian noise on the ``noisy`` inputs (fresh per batch), the loss
        :func:`signed_loss` (gradient ascent on the ``ascend`` rows). Eq. 3: ``x = D_f``, noisy = D_f^e, ascend =
        D_f^h; code: ``x = D_f + D_r`` with D_f^h relabelled, noisy = D_f^e, nothing ascends."""
        epochs, sigma, bs = self.setting("epochs"), self.setting("noise_std"), self.hparams["batch_size"]
        opt = torch.optim.SGD(model.parameters(), lr=self.setting("lr"), momentum=self.hparams["momentum"],
                              weight_decay=self.hparams["weight_decay"])
        order_gen, noise_gen = ctx.generator("finetune-order"), ctx.generator("finetune-noise")
        model.train()
        with progress_bar(epochs * math.ceil(len(y) / bs), ctx.progress) as bar:
            for _ in range(epochs):
                perm = torch.randperm(len(y), generator=order_gen)
                for start in range(0, len(y), bs):
                    idx = perm[start:start + bs]
                    xb = x[idx]
                    if sigma > 0:
                        mask = noisy[idx].view(-1, *([1] * (xb.dim() - 1))).to(xb.dtype)
                        xb = xb + sigma * torch.randn(xb.shape, generator=noise_gen) * mask
                    opt.zero_grad(set_to_none=True)
                    ce = F.cross_entropy(model(xb.to(ctx.device)), y[idx].to(ctx.device), reduction="none")
                    signed_loss(ce, ascend[idx].to(ctx.device)).backward()
                    opt.step()
                    bar.update(1)
        return model.eval()
