"""Cross-domain class mixing (pst.train.mixing) against a per-pixel loop."""

import pytest
import torch

from pst.labels import IGNORE
from pst.train.mixing import choose_mix_classes, cross_domain_mix


def _batch(b=3, h=9, w=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    s_sem = torch.randint(0, 6, (b, h, w), generator=g)
    s_sem[0, 0, :3] = IGNORE
    s_inst = torch.where(s_sem >= 4, torch.randint(1, 4, (b, h, w), generator=g), torch.zeros_like(s_sem))
    t_sem = torch.randint(0, 6, (b, h, w), generator=g)
    t_sem[:, 1] = IGNORE
    t_conf = torch.rand(b, h, w, generator=g)
    t_inst = {"base": torch.where(t_sem >= 4, torch.randint(1, 6, (b, h, w), generator=g), torch.zeros_like(t_sem))}
    s_img, t_img = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)
    return s_img, s_sem, s_inst, t_img, t_sem, t_conf, t_inst


def _reference(s_img, s_sem, s_inst, t_img, t_sem, t_conf, t_inst, chosen):
    b, h, w = s_sem.shape
    img, sem, conf = t_img.clone(), t_sem.clone(), t_conf.clone()
    inst = t_inst.clone()
    for i in range(b):
        offset = max(0, int(t_inst[i].max()))
        for y in range(h):
            for x in range(w):
                if int(s_sem[i, y, x]) in chosen[i]:
                    img[i, :, y, x] = s_img[i, :, y, x]
                    sem[i, y, x] = s_sem[i, y, x]
                    conf[i, y, x] = 1.0
                    k = int(s_inst[i, y, x])
                    inst[i, y, x] = k + offset if k > 0 else 0
    return img, sem, conf, inst


@pytest.mark.parametrize("policy", ["half", "things"])
def test_mix_matches_pixel_loop(policy):
    batch = _batch()
    things = [4, 5]
    # the same generator draws, image by image, as inside cross_domain_mix
    g = torch.Generator().manual_seed(7)
    chosen = [choose_mix_classes(batch[1][i], policy, things, g) for i in range(batch[1].shape[0])]
    m = cross_domain_mix(*batch, policy=policy, thing_ids=things, generator=torch.Generator().manual_seed(7))
    img, sem, conf, inst = _reference(*batch[:6], batch[6]["base"], chosen)
    assert torch.equal(m.image, img) and torch.equal(m.semantic, sem) and torch.equal(m.confidence, conf)
    assert torch.equal(m.instances["base"], inst)
    assert torch.equal(m.pasted, torch.stack([torch.isin(batch[1][i], torch.tensor(c, dtype=torch.long))
                                              for i, c in enumerate(chosen)]))
    if policy == "things":
        assert all(set(c) <= set(things) for c in chosen)
    # pasted instances never share an id with a kept target instance
    for i in range(batch[1].shape[0]):
        kept = set(m.instances["base"][i][~m.pasted[i]].unique().tolist()) - {0}
        new = set(m.instances["base"][i][m.pasted[i]].unique().tolist()) - {0}
        assert not kept & new


def test_half_takes_half_of_present_classes_rounded_up():
    sem = torch.tensor([[0, 1, 2], [3, 4, IGNORE]])
    for s in range(5):
        chosen = choose_mix_classes(sem, "half", [], torch.Generator().manual_seed(s))
        assert len(chosen) == 3 and set(chosen) <= {0, 1, 2, 3, 4}
    assert choose_mix_classes(torch.full((2, 2), IGNORE), "half", []) == []


def test_mix_errors():
    batch = list(_batch())
    with pytest.raises(ValueError, match="policy should be one of"):
        cross_domain_mix(*batch, policy="all")
    bad = list(batch)
    bad[3] = bad[3][:, :, :4]
    with pytest.raises(ValueError, match=r"\[B,3,H,W\] of one shape"):
        cross_domain_mix(*bad)
    bad = list(batch)
    bad[5] = bad[5][:2]
    with pytest.raises(ValueError, match="target_confidence should be"):
        cross_domain_mix(*bad)


def test_mix_config_checked():
    from pst.config import load_config

    with pytest.raises(ValueError, match="selftrain.mix should be one of"):
        load_config("toy", ["selftrain.mix=everything"])
