"""Measuring the thing half (issue 10): the connected-component baseline, per-class tables,
AP's minimum region, pseudo-label quality against hidden labels, instance overlays and
the demo over seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from pst.labels import CITYSCAPES19, IGNORE, SYNTHIA16, TOY
from pst.metrics.instance import InstanceAP
from pst.train.data import gt_panoptic
from pst.train.evaluate import connected_instances
from pst.train.pseudo_quality import PseudoLabelQuality, mode_instance_maps
from pst.train.report import colorize_panoptic, instance_colors
from tests.test_train import tiny_config

PERSON, CAR = TOY.index("person"), TOY.index("car")
ROAD, SKY = TOY.index("road"), TOY.index("sky")

# --------------------------------------------------------------------------- connected components


def test_connected_instances_match_scipy_per_class():
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(0, TOY.num_classes, (2, 24, 40), generator=g)
    sem[0, :8] = ROAD  # some large stuff area
    conf = torch.rand(2, 24, 40, generator=g)
    inst, scores = connected_instances(sem, conf, TOY.thing_ids)
    assert inst.dtype == torch.int64 and inst.shape == sem.shape
    for b in range(2):
        k = int(inst[b].max())
        assert sorted(inst[b].unique().tolist()) == list(range(k + 1))  # 1..K without gaps
        n_ref = 0
        for c in TOY.thing_ids:
            lab, n = ndi.label((sem[b] == c).numpy(), structure=np.ones((3, 3)))
            n_ref += n
            for j in range(1, n + 1):  # every component of class c is exactly one instance
                ids = inst[b][torch.from_numpy(lab == j)].unique()
                assert len(ids) == 1 and int(ids) > 0
                assert abs(float(scores[b, int(ids) - 1]) - float(conf[b][torch.from_numpy(lab == j)].mean())) < 1e-6
        assert k == n_ref
        assert (inst[b][~torch.isin(sem[b], torch.tensor(TOY.thing_ids))] == 0).all()


def test_two_touching_cars_are_one_cc_instance():
    sem = torch.full((1, 10, 20), ROAD)
    sem[0, 2:8, 2:10] = CAR
    sem[0, 2:8, 10:18] = CAR  # a second car touching the first: CC cannot split them
    sem[0, 0, 0] = PERSON
    inst, _ = connected_instances(sem, torch.ones(1, 10, 20), TOY.thing_ids)
    assert inst[0, 2:8, 2:18].unique().tolist() == [int(inst[0, 3, 3])] and int(inst[0, 0, 0]) > 0
    assert int(inst.max()) == 2


def test_connected_instances_min_size_and_id_limit():
    sem = torch.full((1, 64, 64), ROAD)
    sem[0, ::2, ::2] = CAR  # 1024 isolated one-pixel cars: more than panoptic ids can number
    sem[0, 1, :] = PERSON  # one 64-pixel person row (touches the cars only diagonally: other class anyway)
    inst, scores = connected_instances(sem, torch.ones(1, 64, 64), TOY.thing_ids)
    assert int(inst.max()) == 999 and scores.shape == (1, 999)
    assert len(inst[0, 1].unique()) == 1 and int(inst[0, 1, 0]) > 0  # the largest (the person) is kept
    inst, _ = connected_instances(sem, torch.ones(1, 64, 64), TOY.thing_ids, min_size=2)
    assert inst.unique().tolist() == [0, 1] and (inst[0, 1] == 1).all()


def test_predict_and_evaluate_with_cc_instances():
    from pst.train.data import build_dataset
    from pst.train.evaluate import evaluate_net, predict
    from pst.train.model import build_panoptic_net

    cfg = tiny_config("data.target_val.n=2", "eval.thing_area=0")
    torch.manual_seed(0)
    net = build_panoptic_net(cfg)
    ds = build_dataset(cfg.data.target_val, cfg.space, cfg.data.size)
    images = torch.stack([ds[i]["image"] for i in range(2)])
    p = predict(net, images, cfg, instances="cc")
    ref, _ = connected_instances(p.semantic, p.confidence, TOY.thing_ids)
    thing = torch.isin(p.semantic, torch.tensor(TOY.thing_ids))
    assert torch.equal(p.instances, ref)
    assert torch.equal(p.panoptic[thing] % 1000, ref[thing])  # thing_area 0: every component is a segment
    with pytest.raises(ValueError, match="instances should be one of"):
        predict(net, images, cfg, instances="boxes")
    r = evaluate_net(net, ds, cfg, device=torch.device("cpu"), instances="cc")
    assert r["instances"] == "cc" and r["ap_min_region_size"] == 16
    assert set(r["per_class"]) == set(TOY.things)
    for row in r["per_class"].values():
        assert set(row) == {"PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU", "AP", "AP50"}
        assert all(isinstance(row[k], int) for k in ("TP", "FP", "FN"))
        assert all(row[k] is None or 0.0 <= row[k] <= 1.0 for k in ("PQ", "SQ", "RQ", "IoU", "AP"))


class _LabelNet(torch.nn.Module):
    """Logits that make a given semantic map the prediction, with a random confidence per pixel."""

    def __init__(self, semantic: torch.Tensor, num_classes: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        onehot = torch.nn.functional.one_hot(semantic.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
        self.logits = onehot.float() * (0.5 + 4 * torch.rand(semantic.shape, generator=g)[:, None])

    def forward(self, images, keys=()):
        return {"logits": self.logits}


def test_predict_drops_instances_below_eval_min_score():
    """eval.min_score: the panoptic map is the fusion with the instances scored below it dropped."""
    from pst.panoptic import fuse
    from pst.train.data import build_dataset
    from pst.train.evaluate import predict

    cfg = tiny_config("data.target_val.n=2", "eval.thing_area=0")
    ds = build_dataset(cfg.data.target_val, cfg.space, cfg.data.size)
    images = torch.stack([ds[i]["image"] for i in range(2)])
    net = _LabelNet(torch.stack([ds[i]["semantic"] for i in range(2)]), TOY.num_classes)
    p = predict(net, images, cfg, instances="cc")
    cut = float(p.scores[p.scores > 0].median())
    q = predict(net, images, tiny_config("data.target_val.n=2", "eval.thing_area=0", f"eval.min_score={cut}"),
                instances="cc")
    assert torch.equal(q.instances, p.instances)
    kept = [sorted(int(v) % 1000 for v in q.panoptic[b].unique() if v >= 0 and v % 1000) for b in range(2)]
    expect = [sorted(k + 1 for k in range(p.scores.shape[1]) if float(p.scores[b, k]) >= cut
                     and bool((p.instances[b] == k + 1).any())) for b in range(2)]
    assert kept == expect and 0 < sum(map(len, kept)) < sum(len(p.instances[b].unique()) - 1 for b in range(2))
    ref = fuse(p.semantic, p.instances, thing_ids=TOY.thing_ids, num_classes=TOY.num_classes, thing_area=0,
               stuff_area=cfg.eval.stuff_area, scores=p.scores, min_score=cut)
    assert torch.equal(q.panoptic, ref)
    with pytest.raises(ValueError, match="eval.min_score"):
        tiny_config("eval.min_score=1.5")


# --------------------------------------------------------------------------- AP minimum region


def test_ap_min_region_scales_for_toy_only():
    assert TOY.ap_min_region((1024, 2048)) == 100
    assert TOY.ap_min_region((2048, 4096)) == 400
    assert TOY.ap_min_region((128, 256)) == 16  # 100 / 64 = 1.6 px -> the floor
    assert TOY.ap_min_region((512, 1024)) == 25
    assert TOY.ap_min_region() == 100
    for space in (CITYSCAPES19, SYNTHIA16):
        assert space.ap_min_region((128, 256)) == 100 and space.ap_min_region((1024, 2048)) == 100


def test_ap_counts_small_objects_with_the_scaled_minimum():
    gt = torch.full((32, 32), ROAD * 1000)
    gt[2:7, 2:7] = CAR * 1000 + 1  # 25 px object
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 2:7, 2:7] = True
    res = {}
    for size in (100, TOY.ap_min_region((128, 256))):
        ap = InstanceAP(TOY, min_region_size=size)
        ap.update(mask, torch.tensor([CAR]), torch.tensor([0.9]), gt)
        res[size] = ap.compute()["per_class"][CAR]["AP"]
    assert np.isnan(res[100])  # the only object is too small to count: no AP for the class
    assert res[16] == pytest.approx(1.0)


# --------------------------------------------------------------------------- pseudo-label quality


def _scene():
    sem = torch.full((1, 16, 24), ROAD)
    sem[0, :4] = SKY
    inst = torch.zeros(1, 16, 24, dtype=torch.long)
    sem[0, 6:12, 2:8] = CAR
    inst[0, 6:12, 2:8] = 1
    sem[0, 6:12, 8:14] = CAR  # touching the first car
    inst[0, 6:12, 8:14] = 2
    sem[0, 5:13, 18:21] = PERSON
    inst[0, 5:13, 18:21] = 3
    return sem, inst


def test_pseudo_quality_perfect_then_degraded():
    sem, inst = _scene()
    q = PseudoLabelQuality(TOY, ["base"])
    q.update(sem, {"base": inst}, sem, inst)
    (r,) = q.compute()
    assert r["mode"] == "base" and r["images"] == 1 and r["batches"] == 1
    for k in ("mIoU", "kept", "PQ_things", "precision", "recall"):
        assert r[k] == pytest.approx(1.0), k
    assert r["FP_share"] == pytest.approx(0.0) and (r["TP"], r["FP"], r["FN"]) == (3, 0, 0)

    q.reset()
    pl = sem.clone()
    pl[0, 12:] = IGNORE  # under threshold: left out of mIoU, counted in "kept"
    bad = inst.clone()
    bad[0, 6:12, 2:14] = 1  # the two cars merged into one pseudo-instance
    bad[0, 0:2, 0:3] = 4  # a spurious instance ...
    pl[0, 0:2, 0:3] = CAR  # ... on a car pseudo-label over sky
    q.update(pl, {"base": bad}, sem, inst)
    (r,) = q.compute()
    assert r["kept"] == pytest.approx(1 - 4 * 24 / (16 * 24))
    assert 0.5 < r["mIoU"] < 1.0  # the spurious car costs car and sky IoU
    assert (r["TP"], r["FP"], r["FN"]) == (1, 2, 2)  # person matched; merged cars and the spurious one are not
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)
    assert r["FP_share"] == pytest.approx(2 / 3)
    q.reset()
    assert q.batches == 0 and q.compute()[0]["precision"] is None
    with pytest.raises(ValueError, match="no instance pseudo-labels for category modes"):
        q.update(sem, {}, sem, inst)


def test_mode_instance_maps_merges_groups_per_mode():
    sem, inst = _scene()
    groups = {"base__all": ("base", TOY.thing_ids), "ccm__auto": ("ccm", (CAR,)), "ccm__human": ("ccm", (PERSON,))}
    cars = torch.where(sem == CAR, inst, torch.zeros_like(inst))
    people = torch.where(sem == PERSON, (inst > 0).long(), torch.zeros_like(inst))
    maps = {"base__all": inst, "ccm__auto": cars, "ccm__human": people}
    obj = {k: torch.ones(1, 16, 24) for k in maps}
    out = mode_instance_maps(groups, maps, obj, torch.ones(1, 16, 24), ["base", "ccm"])
    assert torch.equal(out["base"], inst)
    assert out["ccm"].max() == 3 and torch.equal(out["ccm"] > 0, inst > 0)
    q = PseudoLabelQuality(TOY, ["base", "ccm"])
    q.update(sem, out, sem, inst)
    assert [r["PQ_things"] for r in q.compute()] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_selftrain_scores_pseudo_labels_without_training_on_the_labels(tmp_path, monkeypatch):
    """Scrambled target labels change the pseudo-label scores and nothing else."""
    import pst.train.selftrain as st_mod
    from pst.train.checkpoint import load_checkpoint
    from pst.train.source import train_supervised

    cfg = tiny_config("source.steps=1", "selftrain.steps=3", "selftrain.eval_every=2", "selftrain.n_views=1",
                      "selftrain.bn_recalibrate=0", "data.target_val.has_labels=false", "categories=[base,ccm]",
                      "selftrain.threshold_min=0.0", "selftrain.threshold_scale=0.0")  # keep every pixel
    src = train_supervised(cfg, tmp_path / "src", progress=False)
    a = load_checkpoint(st_mod.self_train(cfg, tmp_path / "a", init=src, progress=False))
    real = st_mod.load_batch

    def scrambled(dataset, indices, **kw):
        batch = real(dataset, indices, **kw)
        if "semantic" in batch and not kw.get("colour", True):  # the target batch
            batch["semantic"] = torch.full_like(batch["semantic"], SKY)
            batch["instances"] = torch.zeros_like(batch["instances"])
        return batch

    monkeypatch.setattr(st_mod, "load_batch", scrambled)
    b = load_checkpoint(st_mod.self_train(cfg, tmp_path / "b", init=src, progress=False))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    qa, qb = a["extra"]["pseudo_quality"], b["extra"]["pseudo_quality"]
    assert [(r["step"], r["mode"]) for r in qa] == [(2, "base"), (2, "ccm"), (3, "base"), (3, "ccm")]
    assert [r["images"] for r in qa] == [4, 4, 2, 2]  # accumulated since the last evaluation step
    assert all(r["kept"] == 1.0 and 0.0 <= r["mIoU"] <= 1.0 for r in qa)
    assert [r["kept"] for r in qa] == [r["kept"] for r in qb]
    assert all(r["TP"] == 0 and r["FN"] == 0 for r in qb)  # no object in the scrambled labels
    assert [r["mIoU"] for r in qa] != [r["mIoU"] for r in qb]
    monkeypatch.setattr(st_mod, "load_batch", real)
    c = load_checkpoint(st_mod.self_train(tiny_config("selftrain.steps=1", "selftrain.eval_every=1",
                                                      "data.target.has_labels=false", "selftrain.n_views=1",
                                                      "data.target_val.has_labels=false",
                                                      "selftrain.bn_recalibrate=0", "categories=[base,ccm]"),
                                          tmp_path / "c", init=src, progress=False))
    assert c["extra"]["pseudo_quality"] == []  # an unlabelled target: nothing to score


# --------------------------------------------------------------------------- overlays


def test_instance_colors_are_distinct():
    c = instance_colors(40)
    assert c.shape == (40, 3) and float(c.min()) >= 0 and float(c.max()) <= 255
    d = torch.cdist(c, c) + torch.eye(40) * 1e9
    assert float(d.min()) > 10  # no two of 40 alike
    assert float(torch.linalg.norm(c[1:] - c[:-1], dim=1).min()) > 60  # consecutive ids far apart


def test_colorize_tells_touching_instances_apart():
    sem, inst = _scene()
    pan = gt_panoptic(sem[0], inst[0], TOY.thing_ids)
    rgb = colorize_panoptic(pan, TOY)
    a, b, person = rgb[8, 4], rgb[8, 11], rgb[8, 19]
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 60  # two cars of one class, two colours
    assert tuple(a) != TOY.colors[CAR] and tuple(b) != TOY.colors[CAR]
    assert len({tuple(a), tuple(b), tuple(person)}) == 3
    assert (rgb[8, 7] == 20).all() and (rgb[8, 8] == 20).all()  # outlines on both sides of the touching border
    assert (rgb[6, 4] == 20).all() and (rgb[11, 4] == 20).all()  # and around each instance
    assert tuple(rgb[14, 0]) == TOY.colors[ROAD] and tuple(rgb[0, 0]) == TOY.colors[SKY]  # stuff: class colours


# --------------------------------------------------------------------------- the demo over seeds

SEED_RUN = [
    "data.source.n=4", "data.target.n=4", "data.target_val.n=2", "data.size=[64,128]", "data.batch_size=2",
    "model.width=8", "source.steps=2", "source.warmup=1", "source.log_every=1", "selftrain.steps=2",
    "selftrain.eval_every=2", "selftrain.log_every=1", "selftrain.ema_every=1", "selftrain.n_views=1",
    "selftrain.bn_recalibrate=0", "eval.n_overlays=1", "eval.stuff_area=16", "device=cpu",
]


def test_bench_demo_over_seeds_ccm(tmp_path, monkeypatch):
    from pst.bench import demo as bench
    from pst.train.demo import METRIC_KEYS, ROWS

    out = tmp_path / "seeds"
    assert bench.main(["--seeds", "0", "1", *SEED_RUN[:3], "--config", "toy_ccm", "--out", str(out),
                       *SEED_RUN[3:]]) == 0
    s = json.loads((out / "demo_seeds.json").read_text())
    assert s["seeds"] == [0, 1] and s["config"] == "toy_ccm" and s["categories"] == ["ccm"]
    assert "data.target_val.seed" in s["seed_varies"]
    assert set(s["metrics"]["ccm"]) == set(ROWS)
    for row, metrics in s["metrics"]["ccm"].items():
        assert set(metrics) == set(METRIC_KEYS)
        for k, st in metrics.items():
            vals = [s["per_seed"][seed]["rows"]["ccm"][row][k] for seed in ("0", "1")]
            if st["n"] == 2:
                assert st["min"] == min(vals) and st["max"] == max(vals)
                assert st["mean"] == pytest.approx(sum(vals) / 2)
    assert set(s["gap_closed"]["ccm"]) == {"PQ", "PQ_things", "mIoU", "AP"}
    assert set(s["cc_gain"]["ccm"]) == {"source_only", "self_trained", "oracle"}
    assert s["pseudo_quality_last"]["ccm"]["FP_share"]["n"] in (0, 1, 2)
    seeds_m = [json.loads((out / f"seed_{i}" / "metrics.json").read_text()) for i in (0, 1)]
    assert [m["seed"] for m in seeds_m] == [0, 1]
    from pst.train.checkpoint import load_checkpoint

    w = [load_checkpoint(out / f"seed_{i}" / "source.pt")["model"] for i in (0, 1)]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0] if w[0][k].is_floating_point())  # seed: weights ...
    assert s["per_seed"]["0"]["n_val_images"] == s["per_seed"]["1"]["n_val_images"] == 2  # ... the val set is fixed
    env = s["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] >= 1 and "commit" in env and env["cpu"]
    assert set(s["wall_seconds"]["per_seed"]) == {"0", "1"} and s["wall_seconds"]["resumed"] == {}
    md = (out / "demo_seeds.md").read_text()
    assert s["wall_seconds"]["n"] == 2 and "on average over 2 whole run(s)" in md
    assert "self_trained_cc" in md and "gap closed, PQ_things" in md and "Per seed" in md

    # resumable: finished seeds are read back, not run again; a new seed runs
    import pst.train.demo as demo_mod

    monkeypatch.setattr(demo_mod, "run_demo", lambda *a, **k: pytest.fail("a finished seed ran again"))
    again = bench.run_seeds("toy_ccm", [0, 1], out, overrides=SEED_RUN)
    assert again["metrics"] == s["metrics"]
    with pytest.raises(ValueError, match="not as a seed=N override"):
        bench.run_seeds("toy_ccm", [0], out, overrides=["seed=3"])
    with pytest.raises(KeyError, match="source.stepz"):
        bench.run_seeds("toy_ccm", [5], out, overrides=["source.stepz=1"])

    # a seed re-evaluated from its finished checkpoints (its metrics.json removed, an eval.*
    # key changed) is timed as what it is: evaluation only, left out of the mean wall time
    monkeypatch.undo()
    (out / "seed_1" / "metrics.json").unlink()
    redo = bench.run_seeds("toy_ccm", [0, 1], out, overrides=[*SEED_RUN, "eval.min_score=0.05"])
    assert redo["wall_seconds"]["resumed"] == {"1": {"reused": ["source", "oracle", "selftrain"], "continued": []}}
    assert redo["wall_seconds"]["n"] == 1 and redo["wall_seconds"]["mean"] == s["wall_seconds"]["per_seed"]["0"]
    md = (out / "demo_seeds.md").read_text()
    assert "over 1 whole run(s)" in md and "seed 1: " in md and "finished by an earlier run" in md
