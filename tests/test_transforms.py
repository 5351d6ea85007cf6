"""pst.data.transforms: paired geometric / photometric augmentations and the teacher's views."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pst.data.toy import render_scene
from pst.data.transforms import (Blur, ColorJitter, Compose, Greyscale, RandomFlip, RandomScaleCrop, Resize,
                                 multi_view, warp_back)
from pst.labels import IGNORE, TOY


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _sample(h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 5, (h, w), generator=g)
    sem[0, 0] = IGNORE
    ins = torch.randint(0, 4, (h, w), generator=g)
    img = torch.rand(3, h, w, generator=g)
    return {"image": img, "semantic": sem, "instances": ins, "name": "x"}


def _smooth(B=2, H=32, W=48):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    img = torch.stack([0.5 + 0.4 * torch.sin(3 * xx + yy), 0.5 + 0.4 * torch.cos(2 * yy), xx * yy])
    return img.expand(B, 3, H, W).contiguous()


def _ref_nearest(label, theta, h, w):
    """Pixel loop: output pixel centre -> normalised -> theta -> input pixel (round); None at ties."""
    H, W = label.shape
    out = np.full((h, w), -1, np.int64)
    for i in range(h):
        for j in range(w):
            qx, qy = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
            px = theta[0, 0] * qx + theta[0, 1] * qy + theta[0, 2]
            py = theta[1, 0] * qx + theta[1, 1] * qy + theta[1, 2]
            x, y = ((px + 1) * W - 1) / 2, ((py + 1) * H - 1) / 2
            if abs(x - math.floor(x) - 0.5) < 1e-3 or abs(y - math.floor(y) - 0.5) < 1e-3:
                continue  # rounding tie: either neighbour is right
            xi, yi = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            out[i, j] = label[yi, xi] if 0 <= yi < H and 0 <= xi < W else -2
    return out


@pytest.mark.parametrize("zoom,size", [((0.4, 0.9), None), ((0.5, 1.0), (10, 16)), ((1.2, 1.5), (24, 40))])
def test_scale_crop_labels_match_pixel_loop(zoom, size):
    s = _sample()
    for seed in range(3):
        out = RandomScaleCrop(size=size, zoom=zoom)(s, generator=_gen(seed))
        h, w = size or (24, 40)
        assert out["image"].shape == (3, h, w) and out["semantic"].shape == (h, w)
        assert out["semantic"].dtype == torch.int64 and out["instances"].dtype == torch.int64
        theta = out["theta"].double().numpy()
        for key, fill in (("semantic", IGNORE), ("instances", 0)):
            ref = _ref_nearest(s[key].numpy(), theta, h, w)
            got = out[key].numpy()
            known = ref != -1
            ref = np.where(ref == -2, fill, ref)
            assert known.mean() > 0.8
            np.testing.assert_array_equal(got[known], ref[known])
        if zoom[1] > 1:
            assert (out["semantic"] == IGNORE).sum() > 10  # padding (checked against the loop above)


def test_scale_crop_image_is_bilinear_at_the_label_positions():
    # an image that is a linear ramp: bilinear sampling reproduces the ramp exactly at any position
    H, W = 20, 30
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    img = torch.stack([xx / W, yy / H, (xx + yy) / (H + W)])
    s = {"image": img, "semantic": torch.zeros(H, W, dtype=torch.int64)}
    out = RandomScaleCrop(size=(8, 12), zoom=(0.5, 0.8))(s, generator=_gen(1))
    theta = out["theta"].double()
    jj, ii = np.meshgrid(np.arange(12), np.arange(8))
    qx, qy = (2 * jj + 1) / 12 - 1, (2 * ii + 1) / 8 - 1
    px = theta[0, 0].item() * qx + theta[0, 2].item()
    py = theta[1, 1].item() * qy + theta[1, 2].item()
    x, y = ((px + 1) * W - 1) / 2, ((py + 1) * H - 1) / 2
    np.testing.assert_allclose(out["image"][0].numpy(), x / W, atol=1e-4)
    np.testing.assert_allclose(out["image"][1].numpy(), y / H, atol=1e-4)


def test_geometric_transforms_keep_image_and_labels_aligned():
    s = render_scene(3, 1, "source", (64, 128))
    pal = torch.from_numpy(TOY.palette()[:TOY.num_classes].astype(np.float32) / 255)
    s["image"] = pal[s["semantic"]].permute(2, 0, 1).contiguous()  # colour = class colour
    t = Compose([RandomScaleCrop(size=(48, 80), zoom=(0.5, 1.0)), RandomFlip(0.5)])
    for seed in range(4):
        out = t(s, generator=_gen(seed))
        sem = out["semantic"]
        # pixels whose 3x3 neighbourhood has one label: the image there is exactly that class colour
        pad = torch.nn.functional.pad(sem[None, None].float(), (1, 1, 1, 1), mode="replicate")
        patches = torch.nn.functional.unfold(pad, 3).view(9, *sem.shape)
        uniform = (patches == sem.float()).all(0)
        assert uniform.float().mean() > 0.5
        # (a 1-pixel line between two output samples can still tint the bilinear image: allow 0.5 %)
        match = (out["image"].permute(1, 2, 0)[uniform] - pal[sem[uniform]]).abs().amax(1) < 1e-4
        assert match.float().mean() > 0.995
        # instances only on thing classes, as in the input
        assert not out["instances"][torch.isin(sem, torch.tensor(TOY.stuff_ids))].any()


def test_identity_crop_and_flip():
    s = _sample()
    out = RandomScaleCrop(zoom=(1.0, 1.0))(s)
    assert torch.equal(out["semantic"], s["semantic"]) and torch.equal(out["instances"], s["instances"])
    torch.testing.assert_close(out["image"], s["image"], atol=1e-5, rtol=0)
    out = RandomFlip(p=1.0)(s)
    assert torch.equal(out["semantic"], s["semantic"].flip(-1))
    assert torch.equal(out["image"], s["image"].flip(-1))
    assert out["theta"][0, 0] == -1 and out["theta"][1, 1] == 1
    out = RandomFlip(p=0.0)(s)
    assert torch.equal(out["image"], s["image"]) and s["image"] is not None
    assert "theta" not in s  # the input dict is not modified


def test_batched_samples_draw_their_own_parameters():
    s = [_sample(seed=k) for k in range(4)]
    batch = {k: torch.stack([x[k] for x in s]) for k in ("image", "semantic", "instances")}
    t = Compose([RandomScaleCrop(zoom=(0.5, 1.0)), RandomFlip()])
    out = t(batch, generator=_gen(0))
    assert out["theta"].shape == (4, 2, 3)
    assert len({tuple(th.flatten().tolist()) for th in out["theta"]}) == 4
    for b in range(4):  # each item equals the single-sample crop with its own theta
        ref = _ref_nearest(batch["semantic"][b].numpy(), out["theta"][b].double().numpy(), 24, 40)
        known = ref >= 0
        np.testing.assert_array_equal(out["semantic"][b].numpy()[known], ref[known])


def test_deterministic_with_generator():
    s = _sample()
    t = Compose([RandomScaleCrop(), RandomFlip(), ColorJitter(), Blur(p=0.5), Greyscale(p=0.5)])
    a, b = t(s, generator=_gen(7)), t(s, generator=_gen(7))
    for k in ("image", "semantic", "instances", "theta", "clean"):
        assert torch.equal(a[k], b[k])
    c = t(s, generator=_gen(8))
    assert not torch.equal(a["theta"], c["theta"])


def test_clean_view_is_the_geometric_only_image():
    s = _sample()
    geo = Compose([RandomScaleCrop(zoom=(0.5, 1.0)), RandomFlip()])
    full = Compose([*geo.transforms, ColorJitter(), Blur(p=1.0), Greyscale(p=1.0)])
    a, b = geo(s, generator=_gen(3)), full(s, generator=_gen(3))
    torch.testing.assert_close(b["clean"], a["image"])
    assert not torch.allclose(b["image"], a["image"])
    # a geometric transform after a photometric one transforms the clean view too
    c = Compose([Greyscale(p=1.0), RandomFlip(p=1.0)])(s)
    torch.testing.assert_close(c["clean"], s["image"].flip(-1))


def test_greyscale_matches_opencv():
    s = _sample()
    out = Greyscale(p=1.0)(s)
    ref = cv2.cvtColor(s["image"].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)
    for c in range(3):
        np.testing.assert_allclose(out["image"][c].numpy(), ref, atol=1e-5)
    assert torch.equal(Greyscale(p=0.0)(s)["image"], s["image"])


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.7])
def test_blur_matches_opencv(sigma):
    s = _sample(20, 30)
    out = Blur(p=1.0, sigma=(sigma, sigma))(s)
    r = int(math.ceil(3 * sigma))
    img = s["image"].permute(1, 2, 0).numpy()
    ref = cv2.GaussianBlur(img, (2 * r + 1, 2 * r + 1), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_color_jitter():
    s = _sample()
    s["image"] = 0.25 + 0.5 * s["image"]  # away from the clamp
    out = ColorJitter(0, 0, 0, 0)(s)
    torch.testing.assert_close(out["image"], s["image"])
    # a hue rotation turns colours about the grey axis: channel mean and distance to grey are kept
    out = ColorJitter(0, 0, 0, hue=0.2)(s, generator=_gen(1))
    x, y = s["image"], out["image"]
    torch.testing.assert_close(y.mean(0), x.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close((y - y.mean(0)).norm(dim=0), (x - x.mean(0)).norm(dim=0), atol=1e-5, rtol=0)
    assert not torch.allclose(y, x)
    # brightness only: a scalar factor in [0.6, 1.4]
    out = ColorJitter(0.4, 0, 0, 0)(s, generator=_gen(2))
    ratio = out["image"] / s["image"]
    assert 0.6 <= ratio.mean() <= 1.4 and ratio.std() < 1e-4
    # saturation 0 of a grey image stays grey; values stay in [0, 1]
    g = {"image": torch.rand(2, 3, 8, 8)}
    out = ColorJitter(0.4, 0.4, 0.4, 0.1)(g, generator=_gen(3))
    assert out["image"].min() >= 0 and out["image"].max() <= 1


def test_resize():
    s = _sample(24, 40)
    out = Resize((12, 20))(s)
    assert out["image"].shape == (3, 12, 20) and out["semantic"].shape == (12, 20)
    np.testing.assert_array_equal(out["semantic"].numpy(), s["semantic"].numpy()[1::2, 1::2])
    # antialiased bilinear = PIL's triangle filter (float "F" images, per channel)
    from PIL import Image
    for c in range(3):
        ref = np.asarray(Image.fromarray(s["image"][c].numpy(), mode="F").resize((20, 12), Image.BILINEAR))
        np.testing.assert_allclose(out["image"][c].numpy(), ref, atol=1e-5)
    up = Resize((48, 80))(s)
    ref = cv2.resize(s["image"].permute(1, 2, 0).numpy(), (80, 48), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(up["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    np.testing.assert_array_equal(up["semantic"].numpy(), s["semantic"].numpy().repeat(2, 0).repeat(2, 1))


def test_multi_view_round_trip():
    x = _smooth()
    views, params = multi_view(x, 4, generator=_gen(0))
    assert len(views) == len(params) == 4 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    back, weight = warp_back(views, params, x.shape[-2:], return_weight=True)
    assert (weight >= 1 - 1e-5).all()
    assert (back - x).abs().max() < 0.02
    # without the identity view: exact-ish where a view covers the pixel fully
    views, params = multi_view(x, 3, zoom=(0.5, 0.8), include_identity=False, generator=_gen(1))
    back, weight = warp_back(views, params, x.shape[-2:], return_weight=True)
    inside = weight > 0.999
    assert inside.float().mean() > 0.3 and (weight == 0).any()
    assert ((back - x).abs().amax(1)[inside]).max() < 0.03
    assert (back.abs().amax(1)[weight == 0] == 0).all()
    # flips only: exact
    views, params = multi_view(x, 3, zoom=(1.0, 1.0), include_identity=False, generator=_gen(2))
    torch.testing.assert_close(warp_back(views, params, x.shape[-2:]), x, atol=1e-5, rtol=0)
    # views of another size
    views, params = multi_view(x, 2, size=(16, 24), generator=_gen(3))
    assert views[1].shape == (2, 3, 16, 24)
    assert (warp_back(views, params, x.shape[-2:]) - x).abs().max() < 0.05


def test_warp_back_of_training_crop_restores_labels():
    s = render_scene(0, 2, "source", (64, 128))
    out = RandomScaleCrop(zoom=(0.6, 0.6))(RandomFlip(p=1.0)(s), generator=_gen(0))
    onehot = torch.nn.functional.one_hot(out["semantic"], TOY.num_classes).permute(2, 0, 1)[None].float()
    back, weight = warp_back([onehot], [out["theta"][None]], (64, 128), return_weight=True)
    covered = weight[0] > 0.999
    agree = (back[0].argmax(0) == s["semantic"])[covered].float().mean()
    assert covered.float().mean() > 0.3 and agree > 0.95


def test_bad_input():
    s = _sample()
    with pytest.raises(TypeError, match="a transform expects a sample dict"):
        RandomFlip()(s["image"])
    with pytest.raises(ValueError, match="needs an 'image' entry"):
        RandomFlip()({"semantic": s["semantic"]})
    with pytest.raises(TypeError, match=r"sample\['image'\] should be a float tensor"):
        RandomFlip()({**s, "image": (s["image"] * 255).to(torch.uint8)})
    with pytest.raises(ValueError, match=r"should be \[3, H, W\] or \[B, 3, H, W\], got \[4, 24, 40\]"):
        RandomFlip()({**s, "image": torch.rand(4, 24, 40)})
    with pytest.raises(TypeError, match=r"sample\['semantic'\] should be an integer tensor"):
        RandomFlip()({**s, "semantic": s["semantic"].float()})
    with pytest.raises(ValueError, match=r"sample\['instances'\] should be \[24, 40\] to match the image"):
        RandomFlip()({**s, "instances": s["instances"][:3]})
    with pytest.raises(ValueError, match=r"zoom should be \(lo, hi\) with 0.0 < lo <= hi"):
        RandomScaleCrop(zoom=(0.9, 0.5))
    with pytest.raises(ValueError, match="zoom should be a"):
        RandomScaleCrop(zoom=0.5)
    with pytest.raises(ValueError, match=r"p should be a probability in \[0, 1\], got 1.5"):
        Greyscale(p=1.5)
    with pytest.raises(ValueError, match=r"hue should be in \[0, 0.5\]"):
        ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match=r"sample\['semantic'\] values should be in \[0, 2\^24\)"):
        RandomScaleCrop()({**s, "semantic": s["semantic"] - 5})
    with pytest.raises(ValueError, match="n_views should be an int >= 1"):
        multi_view(_smooth(), 0)
    with pytest.raises(ValueError, match=r"images should be a float tensor \[B, C, H, W\]"):
        multi_view(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="equal length"):
        warp_back([torch.rand(1, 2, 4, 4)], [], (4, 4))
    with pytest.raises(ValueError, match=r"params\[0\] should be \[1, 2, 3\]"):
        warp_back([torch.rand(1, 2, 4, 4)], [torch.zeros(2, 3)], (4, 4))
    with pytest.raises(ValueError, match="theta should be invertible"):
        warp_back([torch.rand(1, 2, 4, 4)], [torch.zeros(1, 2, 3)], (4, 4))
    with pytest.raises(ValueError, match="theta should be finite"):
        warp_back([torch.rand(1, 2, 4, 4)], [torch.full((1, 2, 3), float("nan"))], (4, 4))
