"""pst.models: torchvision key layout and pretrained loading, shapes at every output
stride, gradients, channels_last, bf16 autocast, short overfits, param groups, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pst.losses import discriminative_loss, focal_ce, objectness_loss
from pst.models import build_instance, build_semantic, param_groups, resnet
from pst.models.resnet import load_pretrained

HEADS = ["deeplabv2", "deeplabv3", "deeplabv3plus"]


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny networks run fastest on one thread (and much faster than on two threads of a
    loaded machine, where OpenMP barriers dominate)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# torchvision.models.resnet*: (block kind, blocks per stage) and published parameter counts
# (torchvision model docs, "num_params", including the 1000-way fc).
TV = {
    "resnet18": ("basic", (2, 2, 2, 2), 11_689_512),
    "resnet34": ("basic", (3, 4, 6, 3), 21_797_672),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 25_557_032),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 44_549_160),
}


def tv_keys(name: str) -> list[str]:
    """torchvision's state-dict keys, spelled out from its module layout (fc excluded)."""
    kind, blocks, _ = TV[name]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    n_conv = 2 if kind == "basic" else 3
    keys = ["conv1.weight"] + ["bn1." + s for s in bn]
    for stage, n in zip(range(1, 5), blocks):
        for blk in range(n):
            pre = "layer%d.%d." % (stage, blk)
            for c in range(1, n_conv + 1):
                keys += [pre + "conv%d.weight" % c] + [pre + "bn%d.%s" % (c, s) for s in bn]
            has_proj = blk == 0 and (stage > 1 or kind == "bottleneck")
            if has_proj:
                keys += [pre + "downsample.0.weight"] + [pre + "downsample.1." + s for s in bn]
    return keys


def fc_params(name: str) -> int:
    feat = 512 if TV[name][0] == "basic" else 2048
    return feat * 1000 + 1000


@pytest.mark.parametrize("name", list(TV))
def test_backbone_matches_torchvision_layout(name):
    net = resnet(name)
    sd = net.state_dict()
    assert list(sd) == tv_keys(name)
    assert sum(p.numel() for p in net.parameters()) == TV[name][2] - fc_params(name)


def _torchvision_file(tmp_path, name="resnet18", *, wrap=None, drop_counters=True, seed=0):
    torch.manual_seed(seed)
    src = resnet(name)
    with torch.no_grad():
        for t in src.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t))
    sd = {k: v.clone() for k, v in src.state_dict().items()
          if not (drop_counters and k.endswith("num_batches_tracked"))}  # old torchvision files lack them
    feat = 512 if TV[name][0] == "basic" else 2048
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, feat), torch.randn(1000)
    obj = sd if wrap is None else {wrap: {"module." + k: v for k, v in sd.items()}}
    path = tmp_path / "weights.pth"
    torch.save(obj, path)
    return path, sd


@pytest.mark.parametrize("wrap", [None, "state_dict"])
def test_pretrained_loads_torchvision_file(tmp_path, wrap):
    path, sd = _torchvision_file(tmp_path, wrap=wrap)
    for model in (build_semantic("deeplabv2", num_classes=3, backbone="resnet18", pretrained=str(path)),
                  build_instance(backbone="resnet18", pretrained=path)):
        got = model.backbone.state_dict()
        for k, v in sd.items():
            if not k.startswith("fc."):
                assert torch.equal(got[k], v), k


def test_pretrained_errors(tmp_path):
    path, sd = _torchvision_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrained weights not found: .*nope.pth"):
        build_semantic("deeplabv2", num_classes=3, backbone="resnet18", pretrained=tmp_path / "nope.pth")
    # wrong width: every conv/bn has a different shape
    with pytest.raises(ValueError, match=r"does not fit this backbone: .*shape mismatches \(e.g. conv1.weight: "
                                         r"expected \[16, 3, 7, 7\], got \[64, 3, 7, 7\]"):
        build_instance(backbone="resnet18", width=16, pretrained=path)
    # a resnet18 file into a resnet34
    with pytest.raises(ValueError, match=r"missing keys \(e.g. layer1.2.conv1.weight"):
        resnet("resnet34", pretrained=path)
    bad = dict(sd)
    del bad["layer2.0.downsample.0.weight"]
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \(e.g. layer2.0.downsample.0.weight\); "
                                         r"1 unexpected keys \(e.g. extra.weight\)"):
        resnet("resnet18", pretrained=tmp_path / "bad.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        resnet("resnet18", pretrained=tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read a state dict"):
        load_pretrained(resnet("resnet18"), tmp_path / "junk.pth")


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_backbone_strides(os_):
    net = resnet("resnet18", width=8, output_stride=os_)
    feats = net(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(net.channels)
    assert [(64 // s, 96 // s) for s in net.strides] == [tuple(f.shape[-2:]) for f in feats]
    assert net.strides[-1] == os_


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("os_", [8, 16])
def test_semantic_shapes_and_gradients(name, os_):
    torch.manual_seed(0)
    model = build_semantic(name, num_classes=5, backbone="resnet18", width=8, output_stride=os_)
    x = torch.rand(2, 3, 45, 61)  # not a multiple of the stride
    out = model(x)
    assert out.shape == (2, 5, 45, 61) and out.dtype == torch.float32
    focal_ce(out, torch.randint(0, 5, (2, 45, 61))).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    # Residual branches start as the identity (zero-initialised last BN), so gradient reaches
    # the stem and the head at once, and the branches' last BN scales.
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert model.backbone.layer4[-1].bn2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50"])
def test_other_backbones(backbone):
    sem = build_semantic("deeplabv3plus", num_classes=3, backbone=backbone, width=4, output_stride=16)
    assert sem(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    inst = build_instance(backbone=backbone, width=4, embed_dim=3)
    out = inst(torch.rand(1, 3, 64, 64))
    assert out["embedding"].shape == (1, 3, 64, 64) and out["objectness"].shape == (1, 64, 64)


def test_instance_shapes_and_gradients():
    torch.manual_seed(0)
    model = build_instance(backbone="resnet18", width=8, embed_dim=6)
    out = model(torch.rand(2, 3, 37, 70))
    assert set(out) == {"embedding", "objectness"}
    assert out["embedding"].shape == (2, 6, 37, 70) and out["objectness"].shape == (2, 37, 70)
    inst = torch.randint(0, 4, (2, 37, 70))
    loss = discriminative_loss(out["embedding"], inst) + objectness_loss(out["objectness"], inst > 0)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("kind", ["deeplabv3plus", "instance"])
def test_channels_last_and_bf16_autocast(kind):
    torch.manual_seed(0)
    model = (build_instance(backbone="resnet18", width=8) if kind == "instance"
             else build_semantic(kind, num_classes=4, backbone="resnet18", width=8)).eval()
    x = torch.rand(2, 3, 32, 48)

    def first(o):
        return o["embedding"] if isinstance(o, dict) else o

    with torch.no_grad():
        ref = first(model(x))
        model_cl = model.to(memory_format=torch.channels_last)
        got = first(model_cl(x.contiguous(memory_format=torch.channels_last)))
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = first(model_cl(x))
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    # training step under autocast: finite gradients, float32 parameters
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = (focal_ce(out, torch.randint(0, 4, (2, 32, 48))) if kind != "instance"
                else discriminative_loss(out["embedding"], torch.randint(0, 3, (2, 32, 48))))
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _toy_batch():
    """Two 64x128 images: three coloured rectangles (classes 1, 2, 2) on a grey ground (class 0)."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 3, 32, 64), 0.5) + 0.05 * torch.randn(2, 3, 32, 64, generator=g)
    sem = torch.zeros(2, 32, 64, dtype=torch.long)
    inst = torch.zeros(2, 32, 64, dtype=torch.long)
    boxes = [[(4, 20, 4, 24, 1, (1.0, 0.1, 0.1)), (8, 28, 30, 44, 2, (0.1, 0.1, 1.0)),
              (6, 26, 46, 60, 2, (0.1, 0.1, 1.0))],
             [(10, 30, 2, 18, 2, (0.1, 0.1, 1.0)), (2, 14, 20, 40, 1, (1.0, 0.1, 0.1)),
              (16, 30, 42, 62, 2, (0.1, 0.1, 1.0))]]
    for b, items in enumerate(boxes):
        for k, (y0, y1, x0, x1, cls, rgb) in enumerate(items, start=1):
            x[b, :, y0:y1, x0:x1] = torch.tensor(rgb)[:, None, None]
            sem[b, y0:y1, x0:x1] = cls
            inst[b, y0:y1, x0:x1] = k
    up = dict(scale_factor=2, mode="nearest")
    return (F.interpolate(x.clamp(0, 1), **up), F.interpolate(sem[:, None].float(), **up)[:, 0].long(),
            F.interpolate(inst[:, None].float(), **up)[:, 0].long())


def test_semantic_overfits_one_batch():
    torch.manual_seed(0)
    x, sem, _ = _toy_batch()
    model = build_semantic("deeplabv2", num_classes=3, backbone="resnet18", width=8, output_stride=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = focal_ce(model(x), sem)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    acc = (model(x).argmax(1) == sem).float().mean().item()
    assert losses[-1] < 0.25 * losses[0], losses
    assert acc > 0.95


def test_instance_overfits_one_batch():
    torch.manual_seed(0)
    x, _, inst = _toy_batch()
    model = build_instance(backbone="resnet18", width=8, embed_dim=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        out = model(x)
        loss = discriminative_loss(out["embedding"], inst) + objectness_loss(out["objectness"], inst > 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses
    with torch.no_grad():
        out = model(x)
    # every object pixel is nearest to its own instance's mean embedding
    emb = out["embedding"]
    for b in range(2):
        m = inst[b] > 0
        pts, ids = emb[b][:, m].T, inst[b][m]
        means = torch.stack([pts[ids == k].mean(0) for k in (1, 2, 3)])
        assert ((torch.cdist(pts, means).argmin(1) + 1) == ids).float().mean() > 0.95
    assert ((out["objectness"] > 0) == (inst > 0)).float().mean() > 0.9


def test_param_groups():
    model = build_semantic("deeplabv3plus", num_classes=3, backbone="resnet18", width=8)
    groups = param_groups(model, 0.01, head_lr_mult=10.0, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["backbone", "backbone_no_decay", "head", "head_no_decay"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for g in groups:
        is_bb = g["name"].startswith("backbone")
        assert all((id(p) in backbone_ids) == is_bb for p in g["params"])
        assert g["lr"] == pytest.approx(0.01 if is_bb else 0.1) and g["lr_mult"] == (1.0 if is_bb else 10.0)
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 1e-4)
        assert all((p.dim() > 1) == (not g["name"].endswith("no_decay")) for p in g["params"])
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as is
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert [g["name"] for g in param_groups(model, 0.01)] == ["head", "head_no_decay"]
    inst = build_instance(backbone="resnet18", width=8)
    assert sum(len(g["params"]) for g in param_groups(inst, 1.0)) == len(list(inst.parameters()))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"name should be one of \['deeplabv2', 'deeplabv3', 'deeplabv3plus'\], "
                                         r"got 'deeplabv4'"):
        build_semantic("deeplabv4", num_classes=3)
    with pytest.raises(ValueError, match=r"backbone should be one of \['resnet101', 'resnet18', 'resnet34', "
                                         r"'resnet50'\], got 'resnet152'"):
        build_instance(backbone="resnet152")
    with pytest.raises(ValueError, match="output_stride should be 8 or 16, got 32"):
        build_semantic("deeplabv2", num_classes=3, output_stride=32)
    with pytest.raises(ValueError, match="num_classes should be a positive int, got 0"):
        build_semantic("deeplabv2", num_classes=0)
    with pytest.raises(ValueError, match="width should be a positive int, got 0"):
        build_semantic("deeplabv2", num_classes=3, backbone="resnet18", width=0)
    with pytest.raises(ValueError, match="embed_dim should be a positive int, got 0"):
        build_instance(embed_dim=0)
    with pytest.raises(ValueError, match="lr should be > 0, got 0"):
        param_groups(torch.nn.Linear(2, 2), 0)
    model = build_semantic("deeplabv2", num_classes=3, backbone="resnet18", width=4)
    with pytest.raises(ValueError, match=r"x should have shape \[B, 3, H, W\], got \[3, 16, 16\]"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"x should have shape \[B, 3, H, W\], got \[1, 4, 16, 16\]"):
        model(torch.rand(1, 4, 16, 16))
    with pytest.raises(TypeError, match="x should be a floating tensor \\(RGB in \\[0, 1\\]\\), got torch.uint8"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_state_dict_roundtrip_excludes_normalisation():
    model = build_instance(backbone="resnet18", width=4)
    sd = model.state_dict()
    assert not any("normalize" in k for k in sd)
    other = build_instance(backbone="resnet18", width=4)
    other.load_state_dict(sd)
    x = torch.rand(1, 3, 32, 32)
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)["embedding"], other(x)["embedding"])
    # the input is normalised inside with ImageNet statistics
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    img = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(model.normalize(img), (img - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_decoder_stride_two_uses_the_stem():
    torch.manual_seed(0)
    model = build_semantic("deeplabv3plus", num_classes=4, backbone="resnet18", width=8, decoder_stride=2)
    x = torch.rand(2, 3, 45, 61)
    feats = model.backbone(model.normalize(x))
    seen = {}
    model.head.low.register_forward_hook(lambda m, i, o: seen.update(low=o.shape))
    out = model(x)
    assert out.shape == (2, 4, 45, 61)
    assert seen["low"][-2:] == feats[0].shape[-2:] == (23, 31)  # stride 2
    focal_ce(out, torch.randint(0, 4, (2, 45, 61))).backward()
    assert model.head.low[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="decoder_stride should be 2 or 4, got 8"):
        build_semantic("deeplabv3plus", num_classes=4, width=8, decoder_stride=8)
    with pytest.raises(ValueError, match="decoder_stride applies to deeplabv3plus only, got 2 for 'deeplabv2'"):
        build_semantic("deeplabv2", num_classes=4, width=8, decoder_stride=2)


def test_spatial_embeddings_add_pixel_coordinates():
    from pst.models.unet import add_coordinates

    emb = torch.randn(2, 5, 6, 9)
    out = add_coordinates(emb, 4.0)
    for y in range(6):
        for x in range(9):
            assert torch.allclose(out[:, 0, y, x], emb[:, 0, y, x] + (y + 0.5) / 4)
            assert torch.allclose(out[:, 1, y, x], emb[:, 1, y, x] + (x + 0.5) / 4)
    assert torch.equal(out[:, 2:], emb[:, 2:])
    torch.manual_seed(0)
    free = build_instance(backbone="resnet18", width=4, embed_dim=3)
    torch.manual_seed(0)
    spatial = build_instance(backbone="resnet18", width=4, embed_dim=3, coord_scale=8.0)
    spatial.load_state_dict(free.state_dict())  # same weights: only the coordinates differ
    x = torch.rand(1, 3, 32, 48)
    free.eval(), spatial.eval()
    a, b = free(x)["embedding"], spatial(x)["embedding"]
    assert torch.allclose(b, add_coordinates(a, 8.0), atol=1e-6)
    with pytest.raises(ValueError, match="coord_scale should be a finite number >= 0, got -1"):
        build_instance(width=4, coord_scale=-1)
    with pytest.raises(ValueError, match="coord_scale needs embed_dim >= 2"):
        build_instance(width=4, embed_dim=1, coord_scale=8.0)
