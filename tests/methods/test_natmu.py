"""NatMU: gradual-MixUp masks, partner selection and balancing, mixing, and its natural forgetting on digits."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import muaudit_methods.natmu as natmu
from muaudit.audit import method_context, run_method
from muaudit.base import MethodData
from muaudit.data import Split
from muaudit.errors import DataError, ParameterError, TaskError
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method


def reference_masks(size: int, delta: float) -> np.ndarray:
    """``generate_mask_cifar`` of the reference (square images, a = 2, b = size // 2), literally."""
    pattern = np.zeros((4, 3, size, size), dtype=np.float32)
    a = 2
    b = size // a
    for i in range(a):
        for j in range(b):
            if i % 2 == 0:
                pattern[0, :, i * b + j, :] = j / b
                pattern[1, :, :, i * b + j] = j / b
                pattern[2, :, i * b + j, :] = (b - 1) / b - j / b
                pattern[3, :, :, i * b + j] = (b - 1) / b - j / b
            else:
                pattern[0, :, i * b + j, :] = (b - 1) / b - j / b
                pattern[1, :, :, i * b + j] = (b - 1) / b - j / b
                pattern[2, :, i * b + j, :] = j / b
                pattern[3, :, :, i * b + j] = j / b
    return np.clip(pattern + delta, 0, 1)


# ------------------------------------------------------------------------------------------------ masks
def test_masks_32x32_match_reference_exactly():
    m = natmu.gradual_masks(32, 32)
    assert m.shape == (4, 32, 32) and m.dtype == torch.float32
    assert np.array_equal(m.numpy(), reference_masks(32, 0.0)[:, 0])
    m1, m2, m3, m4 = m
    assert m1[15, 0] == m1[16, 7] == 15 / 16 and m1[0].eq(0).all() and m1[31].eq(0).all()
    assert m1[1, 3] == 1 / 16 and m1[30, 3] == 1 / 16
    assert (m1 == m1[:, :1]).all()  # constant along columns
    assert torch.equal(m2, m1.T) and torch.equal(m4, m3.T)
    assert m3[0, 5] == m3[31, 5] == 15 / 16 and m3[15].eq(0).all() and m3[16].eq(0).all()
    for delta in (-0.19, -0.03, 0.045, -0.053):
        forget, retain = natmu.scaled_masks(32, 32, delta)
        assert forget.shape == (4, 1, 32, 32)
        np.testing.assert_allclose(forget[:, 0].numpy(), reference_masks(32, delta)[:, 0], rtol=0, atol=1e-7)
        assert torch.equal(retain, 1.0 - forget)


def test_masks_64x64_match_tinyimagenet_reference():
    assert np.array_equal(natmu.gradual_masks(64, 64).numpy(), reference_masks(64, 0.0)[:, 0])


@pytest.mark.parametrize("height,width", [(8, 8), (28, 28), (7, 9), (9, 7), (1, 5), (3, 32)])
def test_masks_other_sizes_are_sensible(height, width):
    m = natmu.gradual_masks(height, width)
    assert m.shape == (4, height, width)
    assert (m >= 0).all() and (m < 1).all()
    m1, m2, m3, m4 = m
    for tent in (m1, m3):
        assert torch.equal(tent, tent.flip(0)) and (tent == tent[:, :1]).all()
    for tent in (m2, m4):
        assert torch.equal(tent, tent.flip(1)) and (tent == tent[:1, :]).all()
    d_r = np.minimum(np.arange(height), height - 1 - np.arange(height))
    d_c = np.minimum(np.arange(width), width - 1 - np.arange(width))
    np.testing.assert_allclose(m1[:, 0].numpy(), d_r / (height / 2), atol=1e-7)
    np.testing.assert_allclose(m2[0].numpy(), d_c / (width / 2), atol=1e-7)
    # the complementary pairs sum to a constant: every pixel is covered once by m1/m3 and by m2/m4
    assert torch.allclose(m1 + m3, torch.full_like(m1, float(m1.max() + m3.min())))
    assert torch.allclose(m2 + m4, torch.full_like(m2, float(m2.max() + m4.min())))
    if height % 2 == 0 and height == width:
        assert np.array_equal(m.numpy(), reference_masks(height, 0.0)[:, 0])


def test_masks_8x8_values():
    m1 = natmu.gradual_masks(8, 8)[0][:, 0].tolist()
    assert m1 == [0, 0.25, 0.5, 0.75, 0.75, 0.5, 0.25, 0]
    m3 = natmu.gradual_masks(8, 8)[2][:, 0].tolist()
    assert m3 == [0.75, 0.5, 0.25, 0, 0, 0.25, 0.5, 0.75]
    odd = natmu.gradual_masks(7, 9)
    np.testing.assert_allclose(odd[0][:, 0].numpy(), np.array([0, 1, 2, 3, 2, 1, 0]) / 3.5, atol=1e-7)
    np.testing.assert_allclose(odd[3][0].numpy(), np.array([4, 3, 2, 1, 0, 1, 2, 3, 4]) / 4.5, atol=1e-7)


def test_scaled_masks_clip_and_complement():
    forget, retain = natmu.scaled_masks(8, 8, 0.5)
    assert forget.max() == 1.0 and forget.min() == 0.5
    forget, retain = natmu.scaled_masks(8, 8, -0.3)
    assert forget.min() == 0.0 and torch.equal(retain, 1 - forget)
    expected = (natmu.gradual_masks(8, 8) - 0.3).clamp(0, 1)
    assert torch.equal(forget[:, 0], expected)


# ------------------------------------------------------------------------------------------------ mixing
def test_mix_is_the_masked_blend_and_quantize_matches_reference_uint8():
    gen = torch.Generator().manual_seed(0)
    u_f = torch.randint(0, 256, (5, 1, 3, 32, 32), generator=gen).float()
    u_r = torch.randint(0, 256, (5, 4, 3, 32, 32), generator=gen).float()
    x_f, x_r = u_f / 255.0, u_r / 255.0
    m_f, m_r = natmu.scaled_masks(32, 32, -0.19)
    out = natmu.mix(x_f, x_r, m_f, m_r)
    assert torch.equal(out, x_r * m_r + x_f * m_f)
    assert out.min() >= 0 and out.max() <= 1
    # reference: uint8 values mixed in float32, clipped and cast to uint8 (truncation), then ToTensor (/255)
    ref = np.clip(u_r.numpy() * m_r.numpy() + u_f.numpy() * m_f.numpy(), 0, 255).astype(np.uint8)
    quant = natmu.mix(x_f, x_r, m_f, m_r, quantize=True)
    assert torch.equal(quant, torch.from_numpy(ref).float() / 255.0)
    assert (quant - out).abs().max() < 1 / 255 + 1e-6


# ---------------------------------------------------------------------------------------------- ranking
def test_rank_excludes_true_class_and_unavailable_classes_even_under_underflow():
    logits = torch.tensor([[500.0, 0.0, -500.0, -900.0, -1000.0],    # softmax underflows to 0 beyond class 0
                           [0.0, 3.0, 2.0, 1.0, -1.0]])
    labels = torch.tensor([0, 1])
    top = natmu.rank_wrong_classes(logits, labels, torch.ones(5, dtype=torch.bool))
    assert top.tolist() == [[1, 2, 3, 4], [2, 3, 0, 4]]
    available = torch.tensor([True, True, False, True, True])
    top = natmu.rank_wrong_classes(logits, labels, available)
    assert top.shape == (2, 3) and top.tolist() == [[1, 3, 4], [3, 0, 4]]


def test_fewer_than_four_wrong_classes_cycle_over_the_masks():
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    top = natmu.rank_wrong_classes(logits, torch.tensor([0, 0]), torch.ones(3, dtype=torch.bool))
    assert top.tolist() == [[2, 1], [2, 1]]
    assert natmu.assign_masks(top).tolist() == [[2, 1, 2, 1], [2, 1, 2, 1]]
    binary = natmu.rank_wrong_classes(torch.zeros(3, 2), torch.tensor([0, 1, 0]), torch.ones(2, dtype=torch.bool))
    assert natmu.assign_masks(binary).tolist() == [[1] * 4, [0] * 4, [1] * 4]
    with pytest.raises(DataError):
        natmu.rank_wrong_classes(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([True, False]))


# -------------------------------------------------------------------------------------------- balancing
def _check_balanced(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> None:
    n_classes = len(counts)
    cap = np.minimum(int(0.98 * counts.sum().item() / n_classes), counts.numpy())
    demand_before = np.bincount(before.flatten().numpy(), minlength=n_classes)
    demand_after = np.bincount(after.flatten().numpy(), minlength=n_classes)
    assert after.shape == before.shape
    for row, y, old in zip(after.tolist(), labels.tolist(), before.tolist()):
        assert y not in row or y in old  # never introduces a sample's own class
        moved = [c for c, o in zip(row, old) if c != o]
        assert len(set(moved)) == len(moved) and not set(moved) & set(o for o in old if o in row)
    for c in range(n_classes):
        if demand_after[c] > demand_before[c]:  # a donor never goes over its cap
            assert demand_after[c] <= cap[c]
        if demand_before[c] <= cap[c]:  # a class under its cap is never reduced
            assert demand_after[c] >= demand_before[c]


def test_balancing_all_samples_predict_the_same_wrong_classes():
    n_f, n_classes = 300, 10
    labels = torch.zeros(n_f, dtype=torch.int64)
    classes = torch.tensor([[1, 2, 3, 4]] * n_f)
    counts = torch.full((n_classes,), 100)  # cap = 98 per class, threshold 40
    after = natmu.balance_partner_classes(classes, labels, counts, torch.Generator().manual_seed(0))
    _check_balanced(classes, after, labels, counts)
    demand = np.bincount(after.flatten().numpy(), minlength=n_classes)
    assert demand[0] == 0  # the forget samples' own class is never a partner
    # 1200 requests, 9 usable classes of cap 98 = 882 slots: everything at cap, the rest stays (reused later)
    assert (demand[5:] == 98).all() and demand[1:5].sum() == 1200 - 5 * 98
    assert all(len(set(row)) == 4 for row in after.tolist())


def test_balancing_class_without_retain_images_and_empty_record():
    gen = torch.Generator().manual_seed(1)
    counts = torch.tensor([40] * 7 + [0])  # class 7 has no retain image: its cap is 0 (n_r = 35, cap 34)
    labels = torch.zeros(30, dtype=torch.int64)
    classes = torch.tensor([[7, 1, 2, 3]] * 30)
    after = natmu.balance_partner_classes(classes, labels, counts, gen)
    _check_balanced(classes, after, labels, counts)
    assert not (after == 7).any() and not (after == 0).any()
    classes = torch.tensor([[1, 2, 3, 4]] * 100)  # only classes 5 and 6 can take the excess; 7 never does
    after = natmu.balance_partner_classes(classes, torch.zeros(100, dtype=torch.int64), counts, gen)
    _check_balanced(classes, after, torch.zeros(100, dtype=torch.int64), counts)
    demand = np.bincount(after.flatten().numpy(), minlength=8)
    assert demand[7] == 0 and demand[0] == 0 and demand[5] == demand[6] == 34
    # every class heavily demanded: no class is under the 0.4 threshold, the reference would pop([])
    classes = torch.tensor([[1, 2, 3, 4]] * 50 + [[0, 2, 3, 4]] * 50)
    labels = torch.tensor([0] * 50 + [1] * 50)
    counts = torch.tensor([20, 20, 20, 20, 20])
    after = natmu.balance_partner_classes(classes, labels, counts, gen)
    assert torch.equal(after, classes)


def test_balancing_terminates_on_random_adversarial_inputs():
    gen = torch.Generator().manual_seed(3)
    for trial in range(60):
        n_classes = int(torch.randint(2, 12, (1,), generator=gen))
        n_f = int(torch.randint(0, 80, (1,), generator=gen))
        counts = torch.randint(0, 30, (n_classes,), generator=gen)
        counts[int(torch.randint(0, n_classes, (1,), generator=gen))] = 0
        if (counts > 0).sum() < 2:
            counts[:2] = 5
        labels = torch.randint(0, n_classes, (n_f,), generator=gen)
        skew = torch.randn(n_classes, generator=gen) * 5  # concentrated predictions
        logits = torch.randn(n_f, n_classes, generator=gen) + skew
        try:
            top = natmu.rank_wrong_classes(logits, labels, counts > 0)
        except DataError:
            continue
        classes = natmu.assign_masks(top)
        after = natmu.balance_partner_classes(classes, labels, counts, gen)
        _check_balanced(classes, after, labels, counts)
        assert not (after == labels[:, None]).any()
        partners = natmu.draw_partner_indices(after, torch.repeat_interleave(torch.arange(n_classes), counts), gen)
        assert partners.shape == (4 * n_f,)


# ---------------------------------------------------------------------------------------------- drawing
def test_draw_partners_without_replacement_then_reuse_evenly():
    retain_labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 5)
    classes = torch.tensor([[0, 1, 2, 0]] * 2 + [[1, 1, 1, 1]] * 2)  # class 1 requested 10 times, has 3
    gen = torch.Generator().manual_seed(0)
    idx = natmu.draw_partner_indices(classes, retain_labels, gen)
    assert torch.equal(retain_labels[idx], classes.flatten())
    for c, n_req in ((0, 4), (2, 2)):
        chosen = idx[classes.flatten() == c]
        assert len(set(chosen.tolist())) == n_req  # enough images: each used once
    uses = np.bincount(idx[classes.flatten() == 1].numpy(), minlength=13)[10:13]
    assert uses.sum() == 10 and uses.max() - uses.min() <= 1  # reused as evenly as possible
    with pytest.raises(DataError):
        natmu.draw_partner_indices(torch.tensor([[3, 0, 0, 0]]), retain_labels, gen)


# ---------------------------------------------------------------------------------- settings and helpers
def test_presets_and_overrides():
    s = natmu.resolve_settings(natmu.NatMU(preset="cifar100-class").hparams.as_dict())
    assert (s.lr, s.weight_decay, s.delta, s.variant, s.reinit_linear, s.epochs, s.batch_size) == (
        2.8e-4, 0.0, -0.053, "class-wise", "all", 5, 128)
    s = natmu.resolve_settings(natmu.NatMU(preset="cifar10").hparams.as_dict())
    assert (s.lr, s.weight_decay, s.delta, s.variant) == (1e-3, 2e-3, -0.19, "sample-wise")
    s = natmu.resolve_settings(natmu.NatMU(preset="cifar20-subclass", delta=0.1, lr=1e-2).hparams.as_dict())
    assert (s.lr, s.weight_decay, s.delta, s.variant, s.reinit_linear) == (1e-2, 3.7e-4, 0.1, "class-wise", "none")
    assert natmu.resolve_settings(natmu.NatMU(preset="cifar100").hparams.as_dict()).delta == -0.03
    with pytest.raises(ParameterError):
        natmu.NatMU(preset="imagenet")


def test_cosine_schedule_matches_reference_lambda():
    total = 10
    factors = [natmu.cosine_factor(k, total) for k in range(total)]
    assert factors[0] == pytest.approx(0.5 * (1 + np.cos(np.pi / total)))
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(factors, factors[1:]))


def test_reinit_linear_weights_only():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    before = copy.deepcopy(net.state_dict())
    natmu.reinit_linear(net, "head", torch.Generator().manual_seed(0))
    after = net.state_dict()
    assert torch.equal(after["1.weight"], before["1.weight"]) and torch.equal(after["3.bias"], before["3.bias"])
    assert not torch.equal(after["3.weight"], before["3.weight"])
    natmu.reinit_linear(net, "all", torch.Generator().manual_seed(0))
    w = net[1].weight
    assert not torch.equal(w, before["1.weight"]) and torch.equal(net[1].bias, before["1.bias"])
    expected_std = nn.init.calculate_gain("relu") * np.sqrt(2.0 / (64 + 128))
    assert abs(float(w.detach().std()) - expected_std) < 0.1 * expected_std


# -------------------------------------------------------------------------------------- on the digits
def _unlearn_directly(setup, params, seed=0):
    """Run the method outside run_method to inspect its diagnostics."""
    method = natmu.NatMU(**params)
    ctx = method_context(setup, seed, None)
    data = MethodData("natmu", setup.forget, retain=setup.retain)
    model = method.unlearn(copy.deepcopy(setup.original), data, ctx)
    return method, model


def test_partners_and_mixed_instances_on_digits(digits_setup):
    setup = digits_setup
    method, _ = _unlearn_directly(setup, {"preset": "digits", "lr": 1e-2, "delta": 0.0, "epochs": 1})
    forget, retain = setup.forget, setup.retain
    top, classes, partners = method.last_top_classes, method.last_partner_classes, method.last_partner_indices
    # the ranking is the original model's top-4 wrong classes
    logits = setup.outputs(setup.original).forget_logits
    probs = torch.softmax(logits, 1).scatter(1, forget.y[:, None], 0.0)
    assert torch.equal(top, torch.topk(probs, 4, dim=1).indices)
    assert not (classes == forget.y[:, None]).any()
    assert all(len(set(row)) == 4 for row in classes.tolist())
    # unless re-balanced, mask j gets the j-th ranked class; re-balancing only moves requests of over-cap classes
    n_r = len(retain) / 10
    demand = np.bincount(top.flatten().numpy(), minlength=10)
    changed = classes != top
    for c in top[changed].unique().tolist():
        assert demand[c] > min(int(0.98 * n_r), int((retain.y == c).sum()))
    assert changed.float().mean() < 0.2
    # partners are retain images of the requested classes, each used at most once
    assert torch.equal(retain.y[partners], classes.flatten())
    assert len(set(partners.tolist())) == len(partners)
    # mixed image = x_r * M_r + x_f * M_f, label = the retain partner's label
    m_f, m_r = natmu.scaled_masks(8, 8, 0.0)
    mixed = method.last_mixed
    assert len(mixed) == 4 * len(forget)
    for j in (0, 7, len(forget) - 1):
        for i in range(4):
            p = int(partners[4 * j + i])
            assert torch.equal(mixed.x[4 * j + i], retain.x[p] * m_r[i] + forget.x[j] * m_f[i])
            assert mixed.y[4 * j + i] == retain.y[p] != forget.y[j]


def test_class_wise_variant_keeps_the_ranked_classes(digits_class_setup):
    method, _ = _unlearn_directly(digits_class_setup, {"preset": "digits", "variant": "class-wise", "epochs": 1})
    assert torch.equal(method.last_partner_classes, method.last_top_classes)
    assert not (method.last_partner_classes == 3).any()


def test_forget_accuracy_stays_near_gold_instead_of_collapsing(digits_setup):
    """The paper's claim (Fig. 1): NatMU converges to the retrained model's forget accuracy, while random labels
    over-forget. Same optimiser budget (lr 1e-2, 20 epochs) for both."""
    setup = digits_setup
    f = setup.forget
    gold = float(np.mean([accuracy(setup.outputs(g.model).forget_logits, f.y) for g in setup.golds]))
    assert gold > 0.85
    nat = run_method(setup, load_method("natmu"), {"preset": "digits", "epochs": 20}, seed=0).model
    rl = run_method(setup, load_method("random-label"), {"lr": 1e-2, "epochs": 20}, seed=0).model
    nat_out, rl_out = setup.outputs(nat), setup.outputs(rl)
    nat_gap = abs(accuracy(nat_out.forget_logits, f.y) - gold)
    rl_gap = abs(accuracy(rl_out.forget_logits, f.y) - gold)
    assert accuracy(setup.outputs(setup.original).forget_logits, f.y) > gold  # the original remembers D_f
    assert nat_gap <= 0.05
    assert rl_gap >= 0.3 and rl_gap > 5 * nat_gap
    gold_test = np.mean([accuracy(setup.outputs(g.model).test_logits, setup.data.test.y) for g in setup.golds])
    assert accuracy(nat_out.test_logits, setup.data.test.y) >= gold_test - 0.02


def test_full_class_variant_forgets_the_class(digits_class_setup):
    setup = digits_class_setup
    f, test = setup.forget, setup.data.test
    assert accuracy(setup.outputs(setup.original).forget_logits, f.y) > 0.95
    model = run_method(setup, load_method("natmu"),
                       {"preset": "digits", "variant": "class-wise", "reinit_linear": "all"}, seed=0).model
    out = setup.outputs(model)
    assert accuracy(out.forget_logits, f.y) <= 0.05
    keep = test.y != 3
    assert accuracy(out.test_logits[keep], test.y[keep]) >= 0.9
    gold_test = np.mean([accuracy(setup.outputs(g.model).test_logits, test.y) for g in setup.golds])
    assert accuracy(out.test_logits, test.y) >= gold_test - 0.03


def test_vector_inputs_are_refused(digits_setup):
    setup = digits_setup
    flat = lambda s: Split(s.x.reshape(len(s), -1), s.y)  # noqa: E731
    data = MethodData("natmu", flat(setup.forget), retain=flat(setup.retain))
    with pytest.raises(TaskError, match="image inputs"):
        natmu.NatMU(preset="digits").unlearn(copy.deepcopy(setup.original), data, method_context(setup, 0, None))


def test_generic_checks(digits_setup, digits_class_setup):
    plugin = load_method("natmu")
    assert plugin.cls.needs == frozenset({"retain"})
    check_method(digits_setup, plugin, {"preset": "digits", "epochs": 1})
    check_method(digits_class_setup, plugin, {"preset": "digits", "epochs": 1, "variant": "class-wise",
                                              "reinit_linear": "all"})
