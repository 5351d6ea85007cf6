"""pst.metrics against slow, obviously-correct references (the official scripts' rules written
as plain dict loops, sklearn's confusion matrix). The comparison with the official
cityscapesScripts themselves, on files, is in test_formats.py."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from pst.labels import CITYSCAPES19, IGNORE, TOY
from pst.metrics import InstanceAP, PanopticQuality, SemanticIoU, cityscapes_average_precision

C = 6
THINGS = (4, 5)
DIV = 1000


def random_panoptic(rng, H=20, W=24, gt=True):
    """Blocks of random classes; thing blocks get instance ids (0 = crowd in gt); some void."""
    pan = np.zeros((H, W), dtype=np.int64)
    for _ in range(10):
        y, x = rng.integers(0, H - 2), rng.integers(0, W - 2)
        c = int(rng.integers(0, C))
        k = int(rng.integers(0 if gt else 1, 4)) if c in THINGS else int(rng.integers(0, 2) if not gt else 0)
        pan[y:y + rng.integers(2, 10), x:x + rng.integers(2, 12)] = c * DIV + k
    pan[rng.random((H, W)) < 0.05] = -1
    return pan


def ref_pq(pairs):
    """Dict-loop version of cityscapesScripts' pq_compute_single_core (pst conventions)."""
    stat = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0, "d_iou": 0.0, "d_n": 0})
    for pred, gt in pairs:
        gt = np.where((gt >= 0) & ~np.isin(gt // DIV, THINGS), gt // DIV * DIV, gt)  # stuff: one segment
        g_ids, g_area = np.unique(gt, return_counts=True)
        p_ids, p_area = np.unique(pred, return_counts=True)
        g_seg = {int(i): int(a) for i, a in zip(g_ids, g_area) if i >= 0}
        p_seg = {int(i): int(a) for i, a in zip(p_ids, p_area) if i >= 0}
        inter = defaultdict(int)
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            inter[(g, p)] += 1
        crowd = lambda g: g // DIV in THINGS and g % DIV == 0  # noqa: E731
        gm, pm = set(), set()
        for (g, p), n in inter.items():
            if g < 0 or p < 0 or crowd(g) or g // DIV != p // DIV:
                continue
            union = p_seg[p] + g_seg[g] - n - inter.get((-1, p), 0)
            iou = n / union
            if g // DIV not in THINGS:
                stat[g // DIV]["d_iou"] += iou
            if iou > 0.5:
                stat[g // DIV]["tp"] += 1
                stat[g // DIV]["iou"] += iou
                gm.add(g)
                pm.add(p)
        for g in g_seg:
            if g // DIV not in THINGS:
                stat[g // DIV]["d_n"] += 1
            if g not in gm and not crowd(g):
                stat[g // DIV]["fn"] += 1
        for p, a in p_seg.items():
            if p in pm:
                continue
            ign = inter.get((-1, p), 0) + inter.get((p // DIV * DIV, p), 0) * (p // DIV in THINGS)
            if ign / a <= 0.5:
                stat[p // DIV]["fp"] += 1
    return stat


@pytest.mark.parametrize("seed", range(5))
def test_pq_matches_reference(seed, device):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(4):
        gt = random_panoptic(rng)
        pred = gt.copy()
        noise = random_panoptic(rng, gt=False)
        take = rng.random(gt.shape) < 0.3
        pred[take] = noise[take]
        pred = np.roll(pred, int(rng.integers(-2, 3)), axis=1)
        pairs.append((pred, gt))
    metric = PanopticQuality(num_classes=C, thing_ids=THINGS)
    for pred, gt in pairs:
        metric.update(torch.from_numpy(pred).to(device), torch.from_numpy(gt).to(device))
    res = metric.compute()
    ref = ref_pq(pairs)
    per = {k: [] for k in ("PQ", "SQ", "RQ", "D")}
    kinds = {"PQ_things": [], "PQ_stuff": []}
    for c in range(C):
        s, row = ref[c], res["per_class"][c]
        assert (row["TP"], row["FP"], row["FN"]) == (s["tp"], s["fp"], s["fn"])
        if s["tp"] + s["fp"] + s["fn"]:
            d = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
            pq = s["iou"] / d
            assert row["PQ"] == pytest.approx(pq, abs=1e-12)
            assert row["RQ"] == pytest.approx(s["tp"] / d, abs=1e-12)
            per["PQ"].append(pq)
            (kinds["PQ_things"] if c in THINGS else kinds["PQ_stuff"]).append(pq)
            if c in THINGS:
                per["D"].append(pq)
        if c not in THINGS and s["d_n"]:
            dag = s["d_iou"] / s["d_n"]
            assert row["PQ_dagger"] == pytest.approx(dag, abs=1e-12)
            per["D"].append(dag)
    assert res["PQ"] == pytest.approx(np.mean(per["PQ"]), abs=1e-12)
    for k, v in kinds.items():
        assert res[k] == pytest.approx(np.mean(v), abs=1e-12)
    assert res["PQ_dagger"] == pytest.approx(np.mean(per["D"]), abs=1e-12)


def test_pq_streaming_and_perfect():
    rng = np.random.default_rng(0)
    gts = np.stack([random_panoptic(rng) for _ in range(3)])
    preds = np.stack([random_panoptic(rng, gt=False) for _ in range(3)])
    a = PanopticQuality(num_classes=C, thing_ids=THINGS)
    a.update(preds, gts)  # numpy, batched
    b = PanopticQuality(num_classes=C, thing_ids=THINGS)
    for p, g in zip(preds, gts):
        b.update(torch.from_numpy(p), torch.from_numpy(g))
    ra, rb = a.compute(), b.compute()
    assert ra["PQ"] == rb["PQ"] and ra["per_class"] == rb["per_class"]
    b.reset()
    assert b.num_images == 0 and math.isnan(b.compute()["PQ"])
    perfect = PanopticQuality(TOY)
    gt = torch.tensor([[0, 0, 5001, 5001], [1000, 1000, 5002, 5002]])  # no crowd -> all matched
    perfect.update(gt, gt)
    r = perfect.compute()
    assert r["PQ"] == r["SQ"] == r["RQ"] == r["PQ_dagger"] == 1.0
    assert r["n"] == 3 and r["n_things"] == 1


def test_pq_errors():
    m = PanopticQuality(num_classes=C, thing_ids=THINGS)
    with pytest.raises(ValueError, match=r"pred and gt should have the same shape, got \(2, 2\) and \(2, 3\)"):
        m.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="pred should be an integer tensor, got dtype torch.float32"):
        m.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pred holds panoptic ids \[9000\] whose class"):
        m.update(torch.full((2, 2), 9000), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="pass thing_ids"):
        PanopticQuality(num_classes=3)
    with pytest.raises(ValueError, match=r"thing_ids should be distinct ids in \[0, 3\)"):
        PanopticQuality(num_classes=3, thing_ids=(3,))
    with pytest.raises(TypeError, match="label_space should be a pst.labels.LabelSpace"):
        PanopticQuality("cityscapes19")
    with pytest.raises(ValueError, match="ignore_index=2 is a class id"):
        PanopticQuality(num_classes=3, thing_ids=(1,), ignore_index=2)


# --------------------------------------------------------------------------- mIoU
def test_semantic_iou_matches_sklearn(device):
    rng = np.random.default_rng(1)
    gt = rng.integers(0, C, size=(3, 16, 16))
    gt[rng.random(gt.shape) < 0.1] = IGNORE
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, C, size=gt.shape))
    pred[rng.random(gt.shape) < 0.05] = IGNORE  # "no class": a false negative of the gt class
    m = SemanticIoU(num_classes=C)
    for p, g in zip(pred, gt):
        m.update(torch.from_numpy(p).to(device), torch.from_numpy(g).to(device))
    assert m.confusion.device.type == torch.device(device).type
    v = gt != IGNORE
    cm = confusion_matrix(gt[v], pred[v], labels=list(range(C)) + [IGNORE])[:C]
    tp = np.diag(cm[:, :C])
    iou = tp / (cm.sum(1) + cm[:, :C].sum(0) - tp)
    res = m.compute()
    np.testing.assert_allclose(res["IoU"], iou, atol=1e-12)
    assert res["mIoU"] == pytest.approx(iou.mean(), abs=1e-12)


def test_semantic_iou_absent_class_and_errors():
    m = SemanticIoU(CITYSCAPES19)
    m.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    r = m.compute()
    assert r["IoU"][0] == 0.5 and r["IoU"][1] == 0.0 and math.isnan(r["IoU"][2])
    assert r["mIoU"] == 0.25 and r["per_class"]["road"] == 0.5
    with pytest.raises(ValueError, match=r"gt holds class ids \[19\] outside \[0, 19\)"):
        m.update(torch.tensor([[0]]), torch.tensor([[19]]))
    with pytest.raises(ValueError, match=r"pred holds class ids \[-3\] outside"):
        m.update(torch.tensor([[-3]]), torch.tensor([[0]]))
    assert math.isnan(SemanticIoU(num_classes=2).compute()["mIoU"])
    empty = SemanticIoU(num_classes=2)
    empty.update(torch.zeros(0, 3, 4, dtype=torch.long), torch.zeros(0, 3, 4, dtype=torch.long))
    assert math.isnan(empty.compute()["mIoU"])


# --------------------------------------------------------------------------- AP
def ref_ap(scores, is_true, hard_fn):
    """The official loop, written out."""
    order = np.argsort(scores, kind="stable")
    s, t = np.asarray(scores)[order], np.asarray(is_true, float)[order]
    thresholds = sorted(set(s.tolist()))
    prec, rec = [], []
    for th in thresholds:
        above = s >= th
        tp = t[above].sum()
        fp = above.sum() - tp
        fn = t[~above].sum() + hard_fn
        prec.append(tp / (tp + fp))
        rec.append(tp / (tp + fn))
    prec.append(1.0)
    rec.append(0.0)
    area = 0.0
    r = [rec[0]] + rec + [0.0]
    for i in range(len(prec)):
        area += prec[i] * 0.5 * (r[i] - r[i + 2])
    return area


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    scores = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size=n) if seed % 2 else rng.random(n)
    is_true = rng.random(n) < 0.5
    hard = int(rng.integers(0, 5))
    assert cityscapes_average_precision(scores, is_true, hard) == pytest.approx(ref_ap(scores, is_true, hard), abs=1e-12)
    assert cityscapes_average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def _gt_two_cars():
    car = CITYSCAPES19.index("car")
    gt = torch.full((40, 40), 0)
    gt[0:15, 0:15] = car * 1000 + 1
    gt[20:35, 20:35] = car * 1000 + 2
    gt[0:8, 30:40] = car * 1000  # crowd
    return gt, car


def test_instance_ap_simple_cases():
    gt, car = _gt_two_cars()
    perfect = torch.stack([gt == car * 1000 + 1, gt == car * 1000 + 2])
    m = InstanceAP(CITYSCAPES19)
    m.update(perfect, torch.tensor([car, car]), torch.tensor([0.9, 0.8]), gt)
    r = m.compute()
    assert r["AP"] == 1.0 and r["AP50"] == 1.0
    assert math.isnan(r["per_class"][CITYSCAPES19.index("person")]["AP"])  # no person anywhere
    # a prediction on the crowd region is ignored; one on nothing is a false positive
    crowd = (gt == car * 1000)[None]
    m2 = InstanceAP(CITYSCAPES19)
    m2.update(torch.cat([perfect, crowd]), torch.tensor([car, car, car]), torch.tensor([0.9, 0.8, 0.95]), gt)
    assert m2.compute()["AP"] == 1.0
    stray = torch.zeros(1, 40, 40, dtype=torch.bool)
    stray[0, 36:40, 0:20] = True
    m3 = InstanceAP(CITYSCAPES19)
    m3.update(torch.cat([perfect, stray]), torch.tensor([car, car, car]), torch.tensor([0.9, 0.8, 0.95]), gt)
    assert m3.compute()["AP50"] == pytest.approx(ref_ap([0.9, 0.8, 0.95], [1, 1, 0], 0))
    # no predictions at all: AP 0 for a class with objects
    m4 = InstanceAP(CITYSCAPES19)
    m4.update(torch.zeros(0, 40, 40, dtype=torch.bool), torch.zeros(0, dtype=torch.long), torch.zeros(0), gt)
    assert m4.compute()["AP"] == 0.0


def test_instance_ap_errors():
    gt, car = _gt_two_cars()
    m = InstanceAP(CITYSCAPES19)
    masks = torch.ones(1, 40, 40, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"masks should have shape \[N, 40, 40\] to match gt, got \(1, 40, 39\)"):
        m.update(masks[:, :, :39], torch.tensor([car]), torch.tensor([0.5]), gt)
    with pytest.raises(ValueError, match=r"labels should be thing ids"):
        m.update(masks, torch.tensor([0]), torch.tensor([0.5]), gt)
    with pytest.raises(ValueError, match="scores should not be NaN"):
        m.update(masks, torch.tensor([car]), torch.tensor([float("nan")]), gt)
    with pytest.raises(ValueError, match=r"one entry per mask \(1\), got 2 and 1"):
        m.update(masks, torch.tensor([car, car]), torch.tensor([0.5]), gt)
    with pytest.raises(ValueError, match="needs at least one thing class"):
        InstanceAP(num_classes=3, thing_ids=())
