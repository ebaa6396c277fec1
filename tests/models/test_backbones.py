"""Backbones, heads and the pretraining methods: shapes and one training step on fake data."""

import math

import pytest
import torch
from torch import nn

from imageclust.models.backbones import BACKBONES, build_backbone
from imageclust.models.heads import cluster_head, projection_head
from imageclust.pretrain.moco import MoCo
from imageclust.pretrain.params import PretrainParams
from imageclust.pretrain.registry import METHODS
from imageclust.pretrain.simclr import SimCLR

SIZES = [(c, s) for c in (1, 3) for s in (8, 32)]


def images(n, c, s, seed=0):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


HEAVY = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "alexnet"}


def cases():
    for name in sorted(BACKBONES):
        for c, s in SIZES:
            if name in HEAVY and (s, c) != (32, 3):
                continue  # keep the suite fast: the big networks once, at CIFAR size
            yield name, c, s


@pytest.mark.parametrize("name, channels, size", list(cases()))
def test_backbone_output_shape(name, channels, size):
    torch.manual_seed(0)
    model = build_backbone(name, channels, size)
    assert isinstance(model.output_dim, int) and model.output_dim > 0
    out = model(images(2, channels, size))
    assert out.shape == (2, model.output_dim)
    assert torch.isfinite(out).all()
    if name not in HEAVY:  # (one forward of the big ones is enough on CPU)
        model.eval()
        with torch.no_grad():
            assert model(images(2, channels, size)).shape == (2, model.output_dim)


@pytest.mark.parametrize(
    "name, size, dim", [("resnet18", 64, 512), ("resnet50", 64, 2048), ("vgg16", 16, 512), ("alexnet", 64, 256)]
)
def test_imagenet_stem_and_small_inputs(name, size, dim):
    model = build_backbone(name, 3, size, stem="imagenet")
    assert model(images(2, 3, size)).shape == (2, dim) and model.output_dim == dim
    if name.startswith("resnet"):
        assert model.net.conv1.kernel_size == (7, 7) and isinstance(model.net.maxpool, nn.MaxPool2d)


def test_sobel_front_sees_only_gradients():
    model = build_backbone("small_cnn", 3, 16, sobel=True)
    first_conv = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 2
    seen = {}
    first_conv.register_forward_pre_hook(lambda mod, inp: seen.update(x=inp[0].detach().clone()))
    model(torch.full((2, 3, 16, 16), 0.7))  # a flat image has no gradient away from the border
    assert seen["x"][:, :, 1:-1, 1:-1].abs().max() < 1e-6
    ramp = torch.linspace(0, 1, 16).repeat(2, 3, 16, 1)  # brightness rising to the right
    model(ramp)
    assert seen["x"][:, 0, 1:-1, 1:-1].abs().min() > 0 and seen["x"][:, 1, 1:-1, 1:-1].abs().max() < 1e-6
    assert not any(p.requires_grad for p in model.front.buffers())


def test_frozen_batch_norm_keeps_statistics_and_weights():
    model = build_backbone("small_cnn", 1, 8, freeze_bn=True).train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(images(4, 1, 8))
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert not bn.weight.requires_grad and any(p.requires_grad for p in model.parameters())


def test_mlp_on_flattened_pixels():
    model = build_backbone("mlp", 1, 8)
    assert isinstance(model.net[1], nn.Linear) and model.net[1].in_features == 64 and model.output_dim == 512


def test_widths_set_the_small_cnn_stages_and_the_mlp_layers():
    narrow = build_backbone("small_cnn", 1, 28, widths=[8, 16, 24, 32])
    convs = [m for m in narrow.net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 24, 24, 32, 32] and narrow.output_dim == 32
    assert narrow(images(2, 1, 28)).shape == (2, 32)
    assert narrow.options["widths"] == [8, 16, 24, 32]  # saved with the encoder, so extraction rebuilds it
    assert build_backbone("mlp", 1, 8, widths=[64]).output_dim == 64
    with pytest.raises(ValueError, match="fixed widths"):
        build_backbone("resnet18", 3, widths=[8])
    wide = build_backbone("resnet32", 1, 16, widths=[32, 64, 128])  # the ablation's larger model
    assert wide.output_dim == 128 and wide(images(2, 1, 16)).shape == (2, 128)
    assert sum(p.numel() for p in wide.parameters()) > 3.5 * sum(
        p.numel() for p in build_backbone("resnet32", 1, 16).parameters()
    )
    with pytest.raises(ValueError, match="three stages"):
        build_backbone("resnet32", 1, widths=[16, 32])


def test_backbone_registry_and_dims():
    assert set(BACKBONES) >= {"small_cnn", "mlp", "resnet18", "resnet152", "resnet32", "vgg16", "alexnet"}
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


@pytest.mark.parametrize(
    "dims, shapes", [([32, 8], [(16, 32), (32, 8)]), ([8], [(16, 8)]), ([64, 32, 8], [(16, 64), (64, 32), (32, 8)])]
)
def test_projection_head_shape_and_structure(dims, shapes):
    head = projection_head(16, dims)
    out = head(torch.randn(4, 16))
    assert out.shape == (4, dims[-1])
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == shapes
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == len(dims) - 1


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
    assert METHODS["simclr"].build is SimCLR and METHODS["moco"].build is MoCo


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_one_optimizer_step(channels):
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", channels)
    model = SimCLR(backbone, PretrainParams(projection_dims=[16, 8]))
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
    model = SimCLR(build_backbone("small_cnn", 1), PretrainParams(projection_dims=[16, 8]))
    model.eval()
    x = images(6, 1, 8, seed=3)
    with torch.no_grad():
        same = model(x, x.clone()).item()
        other = model(x, images(6, 1, 8, seed=4)).item()
    assert same < other


# ---------------------------------------------------------------- MoCo


def moco(queue_size=16, momentum=0.9, **more):
    torch.manual_seed(0)
    return MoCo(
        build_backbone("small_cnn", 1),
        PretrainParams(
            method="moco", projection_dims=[16, 8], moco={"queue_size": queue_size, "momentum": momentum, **more}
        ),
    )


def test_moco_one_optimizer_step_moves_the_query_encoder_and_drags_the_key_encoder():
    model = moco()
    assert model.queue.shape == (16, 8) and torch.allclose(model.queue.norm(dim=1), torch.ones(16))
    assert all(not p.requires_grad for p in model.key_backbone.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    query_before = [p.detach().clone() for p in model.backbone.parameters()]
    key_before = [p.detach().clone() for p in model.key_backbone.parameters()]
    loss = model(images(4, 1, 8, seed=1), images(4, 1, 8, seed=2))
    # InfoNCE over 1 + 16 candidates with logits in [-1/t, 1/t]: bounded by log(1 + 16 e^{2/t})
    assert 0.0 < loss.item() < math.log(1 + 16 * math.exp(2 / 0.2))
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in model.key_backbone.parameters())
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(query_before, model.backbone.parameters()))
    # the key encoder started as a copy, so the first momentum update leaves it equal to the query's
    # weights before the step; the next forward moves it 10% of the way to the stepped query
    for b, p in zip(key_before, model.key_backbone.parameters()):
        torch.testing.assert_close(p, b)
    key_before = [p.detach().clone() for p in model.key_backbone.parameters()]
    model.momentum_update()
    for kb, q, k in zip(key_before, model.backbone.parameters(), model.key_backbone.parameters()):
        torch.testing.assert_close(k, 0.9 * kb + 0.1 * q)


def test_moco_queue_takes_the_newest_keys_and_wraps_around():
    model = moco(queue_size=5)
    keys = torch.eye(8)[:3]
    model.enqueue(keys)
    assert model.queue_pointer.item() == 3 and torch.equal(model.queue[:3], keys)
    old = model.queue[3:].clone()
    model.enqueue(torch.eye(8)[3:7])  # four more: two fill the end, two overwrite the oldest
    assert model.queue_pointer.item() == 2
    assert torch.equal(model.queue[3:], torch.eye(8)[3:5]) and torch.equal(model.queue[:2], torch.eye(8)[5:7])
    assert torch.equal(model.queue[2], keys[2]) and not torch.equal(model.queue[3:], old)
    model.enqueue(torch.eye(8)[:7])  # more keys than slots: the newest five stay
    assert sorted(model.queue.argmax(1).tolist()) == [2, 3, 4, 5, 6]
    # the forward pass enqueues its batch's keys
    before = model.queue_pointer.item()
    model(images(3, 1, 8, seed=1), images(3, 1, 8, seed=2))
    assert model.queue_pointer.item() == (before + 3) % 5


def test_moco_temperature_anneals_along_a_half_cosine():
    from imageclust.pretrain.moco import annealed

    assert annealed(0.2, None, 0.7) == 0.2
    assert annealed(0.2, 0.05, 0.0) == pytest.approx(0.2)
    assert annealed(0.2, 0.05, 0.5) == pytest.approx(0.125)
    assert annealed(0.2, 0.05, 1.0) == pytest.approx(0.05)
    model = moco(temperature=0.3, temperature_final=0.1)
    model.set_progress(0.5)
    assert model.temperature == pytest.approx(0.2)
