"""Losses against values worked out by hand on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from imageclust.losses.clustering import (
    confident_self_label_loss,
    entropy_of_mean,
    ranked_prior,
    scan_loss,
    size_penalty,
    temi_loss,
)
from imageclust.losses.contrastive import info_nce, nt_xent
from imageclust.losses.turtle import turtle_outer_loss

# ---------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matched_orthogonal_pairs(t):
    # z1 = [e1, e2], z2 = [e1, e2]. Every view's positive has cosine 1; its two other candidates
    # (the other sample's two views) have cosine 0: loss = -log(e^{1/t} / (e^{1/t} + 2)).
    e = torch.eye(2, dtype=torch.float64)  # float64: at t = 0.1 the loss is only ~9e-5
    loss = nt_xent(e.clone(), e.clone(), t)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_nt_xent_swapped_pairs(t):
    # z1 = [e1, e2], z2 = [e2, e1]: each positive is orthogonal (cosine 0) while a negative is
    # identical (cosine 1): loss = -log(e^0 / (e^0 + e^0 + e^{1/t})) = log(2 + e^{1/t}).
    e = torch.eye(2)
    loss = nt_xent(e.clone(), e.flip(0).clone(), t)
    assert loss.item() == pytest.approx(math.log(2 + math.exp(1 / t)), rel=1e-5)


def test_nt_xent_single_pair_has_only_its_positive():
    # n = 1: each view's only candidate is its partner, so the softmax is 1 and the loss 0,
    # whatever the angle between them.
    loss = nt_xent(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]]), 0.5)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_general_case_by_hand():
    # Three unit vectors in the plane at angles 0, 90 and 45 degrees, t = 1.
    # z1 = [a, b], z2 = [c, a] with a=(1,0), b=(0,1), c=(s,s), s = 1/sqrt(2).
    s = 1 / math.sqrt(2)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[s, s], [1.0, 0.0]])
    # views: 0=a, 1=b, 2=c, 3=a; positives 0<->2, 1<->3. Cosines:
    # view 0 (a): b 0, c s (pos), a 1       -> -log(e^s / (e^0 + e^s + e^1))
    # view 1 (b): a 0, c s, a 0 (pos)       -> -log(e^0 / (e^0 + e^s + e^0))
    # view 2 (c): a s (pos), b s, a s       -> -log(e^s / (3 e^s)) = log 3
    # view 3 (a): a 1, b 0 (pos), c s       -> -log(e^0 / (e^1 + e^0 + e^s))
    es, e1 = math.exp(s), math.e
    per_view = [
        -math.log(es / (1 + es + e1)),
        -math.log(1 / (2 + es)),
        math.log(3),
        -math.log(1 / (e1 + 1 + es)),
    ]
    assert nt_xent(z1, z2, 1.0).item() == pytest.approx(sum(per_view) / 4, rel=1e-5)


def test_nt_xent_split_across_processes_averages_to_the_whole_batch():
    # each "process" holds 2 of the 6 samples and sees every process's projections as negatives:
    # the mean of their losses is the loss of the whole batch, and so are the gradients
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    whole = nt_xent(z1, z2, 0.5)
    parts = [nt_xent(z1[i : i + 2], z2[i : i + 2], 0.5, z1, z2, offset=i) for i in (0, 2, 4)]
    split = sum(parts) / 3
    assert split.item() == pytest.approx(whole.item(), rel=1e-12)
    grad_whole = torch.autograd.grad(whole, [z1, z2])
    grad_split = torch.autograd.grad(split, [z1, z2])
    for a, b in zip(grad_whole, grad_split):
        torch.testing.assert_close(a, b)


def test_info_nce_by_hand():
    # q = e1, its key at 60 degrees (cosine 1/2), a queue of e1 (cosine 1) and e2 (cosine 0); t = 0.5:
    # logits (1, 2, 0): loss = -log(e^1 / (e^1 + e^2 + e^0))
    q = torch.tensor([[2.0, 0.0]])  # norms do not matter
    k = torch.tensor([[0.5, math.sqrt(3) / 2]])
    queue = torch.eye(2)
    expected = -math.log(math.e / (math.e + math.e**2 + 1))
    assert info_nce(q, k, queue, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # two queries, one each: the mean
    q2 = torch.tensor([[0.0, 1.0]])  # key e2 (cosine 1), queue cosines 0 and 1: -log(e^2 / (e^2 + 1 + e^2))
    both = info_nce(torch.cat([q, q2]), torch.cat([k, q2]), queue, 0.5).item()
    assert both == pytest.approx((expected - math.log(math.e**2 / (2 * math.e**2 + 1))) / 2, rel=1e-6)


def test_nt_xent_ignores_vector_norms():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    scale1 = torch.rand(5, 1, generator=g) * 10 + 0.1
    scale2 = torch.rand(5, 1, generator=g) * 10 + 0.1
    base = nt_xent(z1, z2, 0.5)
    assert nt_xent(z1 * scale1, z2 * scale2, 0.5).item() == pytest.approx(base.item(), rel=1e-5)
    assert nt_xent(z1 * 100, z2 * 100, 0.5).item() == pytest.approx(base.item(), rel=1e-5)


def test_nt_xent_temperature_matters_and_positives_lower_the_loss():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g)
    noise = torch.randn(6, 4, generator=g)
    aligned = nt_xent(z, z + 0.01 * noise, 0.5).item()
    shuffled = nt_xent(z, (z + 0.01 * noise).roll(1, dims=0), 0.5).item()
    assert aligned < shuffled
    assert nt_xent(z, z + 0.01 * noise, 0.1).item() != pytest.approx(aligned, rel=1e-3)


def test_nt_xent_gradient_flows_to_both_views():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(4, 3, generator=g, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, requires_grad=True)
    loss = nt_xent(z1, z2, 0.5)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for z in (z1, z2):
        assert z.grad is not None and torch.isfinite(z.grad).all()
        assert z.grad.abs().sum() > 0


# ---------------------------------------------------------------- SCAN


def test_entropy_of_uniform_mean_is_log_k():
    for k in (2, 3, 10):
        # One-hot rows that use every cluster equally: the mean is uniform.
        assert entropy_of_mean(torch.eye(k)).item() == pytest.approx(math.log(k), rel=1e-6)
        assert entropy_of_mean(torch.full((5, k), 1.0 / k)).item() == pytest.approx(math.log(k), rel=1e-6)


def test_entropy_of_collapsed_mean_is_zero():
    probs = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    assert entropy_of_mean(probs).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_of_mean_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])  # mean (0.6, 0.4)
    expected = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert entropy_of_mean(probs).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("weight", [0.0, 1.0, 5.0])
def test_scan_loss_by_hand_on_2x2_logits(weight):
    log3 = math.log(3)
    # softmax rows: anchors (1/2, 1/2) and (3/4, 1/4); neighbours (3/4, 1/4) and (1/4, 3/4).
    anchor = torch.tensor([[0.0, 0.0], [log3, 0.0]])
    neighbor = torch.tensor([[log3, 0.0], [0.0, log3]])
    # <p_a, p_n>: row 0 = 1/2*3/4 + 1/2*1/4 = 1/2; row 1 = 3/4*1/4 + 1/4*3/4 = 3/8.
    consistency = -(math.log(1 / 2) + math.log(3 / 8)) / 2
    # mean anchor prediction (5/8, 3/8)
    entropy = -(5 / 8 * math.log(5 / 8) + 3 / 8 * math.log(3 / 8))
    total, cons, ent = scan_loss(anchor, neighbor, weight)
    assert cons.item() == pytest.approx(consistency, rel=1e-5)
    assert ent.item() == pytest.approx(entropy, rel=1e-5)
    assert total.item() == pytest.approx(consistency - weight * entropy, rel=1e-5)


def test_scan_loss_entropy_uses_anchors_only():
    anchor = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # balanced, confident
    neighbor = torch.tensor([[5.0, -5.0], [5.0, -5.0]])  # collapsed
    _, _, entropy = scan_loss(anchor, neighbor, 1.0)
    assert entropy.item() == pytest.approx(math.log(2), rel=1e-4)


def test_scan_loss_agreeing_confident_pairs_have_near_zero_consistency():
    logits = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    _, consistency, _ = scan_loss(logits, logits.clone(), 5.0)
    assert consistency.item() == pytest.approx(0.0, abs=1e-6)
    _, disagree, _ = scan_loss(logits, logits.flip(0), 5.0)
    assert disagree.item() > 10  # -log(~2 e^-20) with EPS = 1e-8 floor: about 18


def test_scan_loss_gradient():
    anchor = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    neighbor = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    total, _, _ = scan_loss(anchor, neighbor, 2.0)
    total.backward()
    assert anchor.grad.abs().sum() > 0 and neighbor.grad.abs().sum() > 0


# ---------------------------------------------------------------- self-labelling


def test_self_label_no_confident_samples_gives_zero():
    clean = torch.zeros(4, 3)  # uniform: confidence 1/3
    augmented = torch.randn(4, 3, requires_grad=True)
    loss, fraction = confident_self_label_loss(clean, augmented, 0.9)
    assert loss.item() == 0.0
    assert fraction == 0.0 and isinstance(fraction, float)
    loss.backward()  # still a graph: callers can backpropagate unconditionally
    assert torch.equal(augmented.grad, torch.zeros(4, 3))


def test_self_label_threshold_is_strict():
    clean = torch.tensor([[math.log(3), 0.0]])  # confidence exactly 3/4
    loss, fraction = confident_self_label_loss(clean, torch.zeros(1, 2), 0.75 + 1e-6)
    assert fraction == 0.0 and loss.item() == 0.0
    loss, fraction = confident_self_label_loss(clean, torch.zeros(1, 2), 0.7)
    assert fraction == 1.0 and loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_self_label_class_weighting_by_hand():
    # Clean predictions: three samples confidently class 0, one confidently class 1, one unsure.
    clean = torch.tensor([[10.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 10.0], [0.0, 0.0]])
    # Augmented views: the class-0 samples get (1/2, 1/2): NLL log 2; the class-1 sample gets
    # (1/4, 3/4): NLL log(4/3); the unsure sample is ignored whatever its logits.
    augmented = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, math.log(3)], [-7.0, 7.0]], requires_grad=True)
    loss, fraction = confident_self_label_loss(clean, augmented, 0.9)
    assert fraction == pytest.approx(4 / 5)
    # counts (3, 1), 2 classes present: weight_c = 4 / (count_c * 2) = (2/3, 2).
    # Weighted mean = (3 * 2/3 * log 2 + 2 * log(4/3)) / (3 * 2/3 + 2) = (log 2 + log(4/3)) / 2,
    # i.e. each pseudo-class counts equally; the unweighted mean would be (3 log 2 + log(4/3)) / 4.
    w0, w1 = 4 / (3 * 2), 4 / (1 * 2)
    expected = (3 * w0 * math.log(2) + w1 * math.log(4 / 3)) / (3 * w0 + w1)
    assert expected == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() != pytest.approx((3 * math.log(2) + math.log(4 / 3)) / 4, rel=1e-3)
    loss.backward()
    assert torch.equal(augmented.grad[4], torch.zeros(2))  # the unsure sample has no gradient
    assert augmented.grad[:4].abs().sum() > 0


def test_self_label_does_not_backpropagate_into_clean_logits():
    clean = torch.tensor([[10.0, 0.0], [0.0, 10.0]], requires_grad=True)
    augmented = torch.zeros(2, 2, requires_grad=True)
    loss, _ = confident_self_label_loss(clean, augmented, 0.5)
    loss.backward()
    assert clean.grad is None
    assert augmented.grad is not None


def test_self_label_matches_numpy_reference_on_random_case():
    rng = np.random.default_rng(0)
    clean = rng.normal(scale=4, size=(20, 4)).astype(np.float32)
    aug = rng.normal(size=(20, 4)).astype(np.float32)
    threshold = 0.8
    # Reference: per-class mean NLL over the confident samples, then the mean over classes present.
    p = np.exp(clean - clean.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    confident = p.max(1) > threshold
    target = p.argmax(1)
    log_q = aug - aug.max(1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
    nll = -log_q[np.arange(20), target]
    classes = np.unique(target[confident])
    expected = np.mean([nll[confident & (target == c)].mean() for c in classes])
    assert confident.sum() >= 3 and len(classes) >= 2  # the case exercises the weighting
    loss, fraction = confident_self_label_loss(torch.from_numpy(clean), torch.from_numpy(aug), threshold)
    assert fraction == pytest.approx(confident.mean())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_size_penalty_is_the_negative_entropy_for_a_uniform_prior():
    probs = torch.softmax(torch.randn(32, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    expected = -entropy_of_mean(probs)
    assert torch.allclose(size_penalty(probs, None), expected)
    assert torch.allclose(size_penalty(probs, torch.full((5,), 0.2)), expected, atol=1e-6)


def test_size_penalty_by_hand_matches_the_largest_prior_to_the_largest_cluster():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # mean sizes 0.75, 0.25
    prior = torch.tensor([0.2, 0.8])  # ranked: 0.8 to cluster 0 (the larger), 0.2 to cluster 1
    by_hand = 0.75 * math.log(0.75 / 0.8) + 0.25 * math.log(0.25 / 0.2) - math.log(2)
    assert size_penalty(probs, prior).item() == pytest.approx(by_hand, abs=1e-6)
    swapped = probs[:, [1, 0]]  # which cluster is the large one does not matter
    assert size_penalty(swapped, prior).item() == pytest.approx(by_hand, abs=1e-6)
    assert torch.equal(
        ranked_prior(torch.tensor([[0.1, 0.6, 0.3]]), torch.tensor([0.5, 0.2, 0.3])), torch.tensor([[0.2, 0.5, 0.3]])
    )


def test_sizes_at_the_prior_cost_less_than_equal_sizes():
    prior = torch.tensor([0.7, 0.2, 0.1])
    at_prior = torch.eye(3)[torch.tensor([0] * 7 + [1] * 2 + [2])]  # sizes 0.7, 0.2, 0.1
    equal = torch.eye(3)[torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])]
    assert size_penalty(at_prior, prior) < size_penalty(equal, prior)
    assert size_penalty(at_prior, None) > size_penalty(equal, None)  # the entropy term prefers equal sizes


def test_losses_with_a_uniform_prior_are_the_published_ones():
    g = torch.Generator().manual_seed(1)
    anchor, neighbour = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    uniform = torch.full((4,), 0.25)
    assert torch.allclose(
        scan_loss(anchor, neighbour, 5.0, uniform)[0], scan_loss(anchor, neighbour, 5.0)[0], atol=1e-5
    )
    student, teacher = torch.randn(2, 2, 8, 4, generator=g), torch.randn(2, 2, 8, 4, generator=g)
    marginal = torch.softmax(torch.randn(2, 4, generator=g), dim=-1)
    published = temi_loss(student, teacher, marginal, 0.6, 0.1, 0.04)[0]
    assert torch.allclose(temi_loss(student, teacher, marginal, 0.6, 0.1, 0.04, uniform)[0], published, atol=1e-5)
    probs = torch.softmax(torch.randn(8, 4, generator=g), dim=1)
    inner = [torch.randn(8, 4, generator=g)]
    assert torch.allclose(
        turtle_outer_loss(inner, probs, [probs], 10.0, uniform)[0],
        turtle_outer_loss(inner, probs, [probs], 10.0)[0],
        atol=1e-4,
    )
