"""Backbones, heads and the SimCLR method: shapes and one training step on fake data."""

import math
import types

import pytest
import torch
from torch import nn

from imageclust.models import BACKBONES, build_backbone, cluster_head, projection_head
from imageclust.pretrain import METHODS
from imageclust.pretrain.simclr import SimCLR

SIZES = [(c, s) for c in (1, 3) for s in (8, 32)]


def images(n, c, s, seed=0):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def cases():
    for name in sorted(BACKBONES):
        for c, s in SIZES:
            if name == "resnet18" and s != 32:
                continue  # keep the suite fast: resnet18 only at CIFAR size
            yield name, c, s


@pytest.mark.parametrize("name, channels, size", list(cases()))
def test_backbone_output_shape(name, channels, size):
    torch.manual_seed(0)
    model = build_backbone(name, channels)
    assert isinstance(model.output_dim, int) and model.output_dim > 0
    out = model(images(2, channels, size))
    assert out.shape == (2, model.output_dim)
    assert torch.isfinite(out).all()
    if name != "resnet18":  # (one forward of resnet18 is enough on CPU)
        model.eval()
        with torch.no_grad():
            assert model(images(2, channels, size)).shape == (2, model.output_dim)


def test_backbone_registry_and_dims():
    assert set(BACKBONES) >= {"small_cnn", "resnet18"}
    assert build_backbone("small_cnn", 1).output_dim == 128
    assert build_backbone("resnet18", 3).output_dim == 512


def test_small_cnn_handles_odd_sizes():
    model = build_backbone("small_cnn", 1)
    assert model(images(2, 1, 7)).shape == (2, 128)  # ceil-mode pooling keeps tiny inputs alive


def test_backbone_normalises_inputs():
    # A constant 0.5 image is mapped to zeros before the first convolution, which has no bias.
    model = build_backbone("small_cnn", 1)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = {}
    first_conv.register_forward_pre_hook(lambda mod, inp: seen.update(x=inp[0].detach().clone()))
    model(torch.full((2, 1, 8, 8), 0.5))
    assert torch.equal(seen["x"], torch.zeros(2, 1, 8, 8))


def test_backbone_outputs_depend_on_input():
    torch.manual_seed(0)
    model = build_backbone("small_cnn", 3).eval()
    with torch.no_grad():
        a, b = model(images(2, 3, 8, seed=1)), model(images(2, 3, 8, seed=2))
    assert not torch.allclose(a, b)


def test_projection_head_shape_and_structure():
    head = projection_head(16, 32, 8)
    out = head(torch.randn(4, 16))
    assert out.shape == (4, 8)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 8)]


@pytest.mark.parametrize("hidden", [0, 12])
def test_cluster_head_shape(hidden):
    head = cluster_head(16, hidden, 5)
    assert head(torch.randn(4, 16)).shape == (4, 5)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if hidden == 0:
        assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (16, 5)
    else:
        assert [(m.in_features, m.out_features) for m in linears] == [(16, 12), (12, 5)]


def test_pretrain_registry():
    assert METHODS["simclr"] is SimCLR


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_one_optimizer_step(channels):
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", channels)
    model = SimCLR(backbone, types.SimpleNamespace(temperature=0.5, projection_dim=8))
    assert model.backbone is backbone
    assert model.projector(torch.randn(3, backbone.output_dim)).shape == (3, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    v1, v2 = images(4, channels, 8, seed=1), images(4, channels, 8, seed=2)
    before = [p.detach().clone() for p in backbone.parameters()]

    loss = model(v1, v2)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # NT-Xent over 2n = 8 views, t = 0.5: every logit lies in [-2, 2], so the loss is bounded by
    # -log(e^-2 / (e^-2 + 6 e^2)) = log(1 + 6 e^4) and is positive.
    assert 0.0 < loss.item() < math.log(1 + 6 * math.exp(4))
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is not None for p in model.projector.parameters())
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, backbone.parameters()))
    assert torch.isfinite(model(v1, v2))


def test_simclr_identical_views_score_lower_than_unrelated_views():
    torch.manual_seed(0)
    model = SimCLR(build_backbone("small_cnn", 1), types.SimpleNamespace(temperature=0.5, projection_dim=8))
    model.eval()
    x = images(6, 1, 8, seed=3)
    with torch.no_grad():
        same = model(x, x.clone()).item()
        other = model(x, images(6, 1, 8, seed=4)).item()
    assert same < other
