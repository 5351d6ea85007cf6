"""pst.formats.cityscapes and the metrics against cityscapesScripts' own evaluation scripts.

A small synthetic Cityscapes tree (2 cities, 64x128 images with stuff bands, void
patches, thing objects incl. small ones, crowd regions and caravans) and noisy
predictions are written with pst's exporters; the official panoptic, pixel-level and
instance-level scripts and :func:`evaluate_dirs` must then give the same numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pst.formats import cityscapes as cs
from pst.io import save_png
from pst.labels import CITYSCAPES19, IGNORE
from pst.panoptic import fuse, masks_to_instance_map

H, W = 64, 128
STUFF_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)  # Cityscapes label ids of evaluated stuff
THING_IDS = (24, 25, 26, 27, 28, 31, 32, 33)
VOID_IDS = (0, 1, 4, 5, 9, 10, 14)


# --------------------------------------------------------------------------- synthetic data
def _rect(rng, hmin, hmax, wmin, wmax):
    h, w = int(rng.integers(hmin, hmax + 1)), int(rng.integers(wmin, wmax + 1))
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return slice(y, y + h), slice(x, x + w)


def make_gt_image(rng):
    """(labelIds uint8 [H, W], instanceIds uint16 [H, W]) in the Cityscapes conventions."""
    lab = np.zeros((H, W), dtype=np.uint8)
    cuts = np.sort(rng.choice(np.arange(6, H - 6), size=3, replace=False))
    bands = rng.choice(STUFF_IDS, size=4, replace=False)
    start = 0
    for cut, c in zip([*cuts, H], bands):
        lab[start:cut] = c
        start = cut
    for _ in range(int(rng.integers(1, 4))):  # extra stuff blobs
        lab[_rect(rng, 4, 20, 4, 40)] = rng.choice(STUFF_IDS)
    for _ in range(int(rng.integers(1, 3))):  # void
        lab[_rect(rng, 3, 12, 3, 20)] = rng.choice(VOID_IDS)
    inst = lab.astype(np.uint16)
    counters: dict[int, int] = {}
    for _ in range(int(rng.integers(4, 8))):  # objects, some < 100 px
        c = int(rng.choice(THING_IDS[:3] + THING_IDS[6:] if rng.random() < 0.8 else THING_IDS))
        sl = _rect(rng, 6, 24, 6, 32) if rng.random() < 0.85 else _rect(rng, 3, 8, 3, 10)
        k = counters.get(c, 0)
        counters[c] = k + 1
        lab[sl] = c
        inst[sl] = c * 1000 + k
    if rng.random() < 0.7:  # crowd ("group") region of a thing class
        c = int(rng.choice((24, 26)))
        sl = _rect(rng, 6, 14, 8, 24)
        lab[sl] = c
        inst[sl] = c
    if rng.random() < 0.6:  # a caravan: thing label that is not evaluated
        sl = _rect(rng, 8, 16, 10, 24)
        lab[sl] = 29
        inst[sl] = 29000
    return lab, inst


def _shift(mask, rng, s=3):
    dy, dx = (int(v) for v in rng.integers(-s, s + 1, size=2))
    return np.roll(np.roll(mask, dy, axis=0), dx, axis=1)


def make_prediction(gt: cs.GroundTruth, raw_inst: np.ndarray, rng):
    """Noisy predictions in pst's conventions: (panoptic, semantic, masks, labels, scores)."""
    C = CITYSCAPES19.num_classes
    things = list(CITYSCAPES19.thing_ids)
    sem = gt.semantic.copy()
    sem[sem == IGNORE] = rng.integers(0, C, size=int((sem == IGNORE).sum()))
    for _ in range(int(rng.integers(1, 4))):
        sem[_rect(rng, 4, 24, 4, 48)] = rng.integers(0, C)
    sem = np.roll(sem, int(rng.integers(-2, 3)), axis=1)
    masks, labels, scores = [], [], []
    for v in np.unique(raw_inst[raw_inst >= 1000]):
        if v // 1000 == 29 or rng.random() < 0.15:  # caravans are not predicted; some misses
            continue
        m = _shift(raw_inst == v, rng)
        c = CITYSCAPES19.cityscapes_ids.index(int(v // 1000))
        if rng.random() < 0.1:
            c = int(rng.choice(things))
        for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
            masks.append(m if not masks or rng.random() < 0.5 else _shift(m, rng, 2))
            labels.append(c)
            scores.append(float(rng.choice([0.3, 0.5, 0.9])) if rng.random() < 0.3 else float(rng.random()))
    for _ in range(int(rng.integers(0, 3))):  # false positives
        m = np.zeros((H, W), dtype=bool)
        m[_rect(rng, 6, 20, 6, 30)] = True
        masks.append(m)
        labels.append(int(rng.choice(things)))
        scores.append(float(rng.random()))
    masks_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, H, W), dtype=torch.bool)
    scores_t = torch.tensor(scores, dtype=torch.float64)
    labels_t = torch.tensor(labels, dtype=torch.long)
    inst_map = masks_to_instance_map(masks_t, scores_t)
    sem_for_pan = torch.from_numpy(sem).clone()
    # the fused class comes from instance_classes; paint the thing pixels of the semantic map too
    pan = fuse(sem_for_pan, inst_map, thing_ids=things, num_classes=C, instance_classes=labels_t,
               stuff_area=int(rng.choice([0, 30, 200])),
               unassigned_things="segment" if rng.random() < 0.5 else "void")
    pan = pan.numpy()
    if rng.random() < 0.5:  # a second segment of one stuff class
        road = pan == 0
        road[:, : W // 2] = False
        pan[road] = 1
    pan_sem = sem.copy()
    pan_sem[rng.random((H, W)) < 0.01] = IGNORE
    return pan, pan_sem, np.stack(masks) if masks else np.zeros((0, H, W), bool), np.array(labels), np.array(scores)


def make_tree(root: Path, seed: int = 0, n_per_city: int = 2, cities=("aachen", "bochum"), split="val",
              with_semantic=True, with_instances=True):
    """Write gtFine/<split>/ and a prediction folder root/pred; returns (gt root, pred dir)."""
    rng = np.random.default_rng(seed)
    gt_root, pred = root / "cs", root / "pred"
    with cs.PanopticExporter(pred) as exporter:
        for city in cities:
            for i in range(n_per_city):
                image_id = f"{city}_{i:06d}_{19 + i:06d}"
                lab, inst = make_gt_image(rng)
                d = gt_root / "gtFine" / split / city
                save_png(d / f"{image_id}_gtFine_labelIds.png", lab)
                save_png(d / f"{image_id}_gtFine_instanceIds.png", inst)
                gt = cs.read_ground_truth(d / f"{image_id}_gtFine_labelIds.png",
                                          d / f"{image_id}_gtFine_instanceIds.png")
                pan, sem, masks, labels, scores = make_prediction(gt, inst, rng)
                exporter.add(image_id, pan)
                if with_semantic:
                    cs.export_semantic(pred / "semantic", image_id, sem)
                if with_instances:
                    cs.export_instances(pred / "instance", image_id, masks, labels, scores)
    return gt_root, pred


# --------------------------------------------------------------------------- official scripts
def _numpy2_compat(monkeypatch):
    """cityscapesScripts 2.3 calls np.in1d, which NumPy 2.4 removed; same semantics via np.isin."""
    if not hasattr(np, "in1d"):
        monkeypatch.setattr(np, "in1d", lambda a, b, invert=False: np.isin(a, b, invert=invert).ravel(),
                            raising=False)


def official_panoptic(gt_root: Path, pred: Path, work: Path):
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ep
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    out = work / "gtpan"
    out.mkdir()
    convert2panoptic(str(gt_root / "gtFine"), str(out), False, ["val"])
    gt_json = json.loads((out / "cityscapes_panoptic_val.json").read_text())
    pred_json = json.loads((pred / "panoptic.json").read_text())
    categories = {el["id"]: el for el in gt_json["categories"]}
    by_id = {a["image_id"]: a for a in pred_json["annotations"]}
    matched = [(a, by_id[a["image_id"]]) for a in gt_json["annotations"]]
    # the official per-image code, without its multiprocessing pool
    stat = ep.pq_compute_single_core(0, matched, str(out / "cityscapes_panoptic_val"), str(pred / "panoptic"),
                                     categories)
    return ep.average_pq(stat, categories), stat, categories


def official_pixel(gt_root: Path, sem_dir: Path, monkeypatch):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    _numpy2_compat(monkeypatch)
    for k, v in dict(predictionPath=str(sem_dir), predictionWalk=None, JSONOutput=False, quiet=True).items():
        monkeypatch.setattr(ev.args, k, v, raising=False)
    gts = sorted(str(p) for p in (gt_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    preds = [ev.getPrediction(ev.args, g) for g in gts]
    return ev.evaluateImgLists(preds, gts, ev.args)


def official_instance(gt_root: Path, inst_dir: Path, work: Path, monkeypatch):
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ei

    _numpy2_compat(monkeypatch)
    monkeypatch.chdir(work)
    # it caches gtInstances.json / dumps matches.json with json.dumps(default=o.__dict__), which fails on
    # NumPy 2 scalars; the files only cache, so skip writing them
    monkeypatch.setattr(ei, "writeDict2JSON", lambda data, path: None)
    for k, v in dict(predictionPath=None, predictionWalk=None, JSONOutput=False, quiet=True,
                     gtInstancesFile=str(work / "gtInstances.json")).items():
        monkeypatch.setattr(ei.args, k, v, raising=False)
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(inst_dir))
    gts = sorted(str(p) for p in (gt_root / "gtFine" / "val").glob("*/*_gtFine_instanceIds.png"))
    preds = [ei.getPrediction(g, ei.args) for g in gts]
    return ei.evaluateImgLists(preds, gts, ei.args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    gt_root, pred = make_tree(root, seed=0, n_per_city=3)
    return gt_root, pred, cs.evaluate_dirs(gt_root, pred)


def _close(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_panoptic_matches_official(tree, tmp_path):
    gt_root, pred, ours = tree
    off, stat, categories = official_panoptic(gt_root, pred, tmp_path)
    for key, name in (("", "All"), ("_things", "Things"), ("_stuff", "Stuff")):
        for m in ("PQ", "SQ", "RQ"):
            assert abs(ours[m + key] - off[name][m.lower()]) < 1e-6, (m + key, ours[m + key], off[name])
    assert off["All"]["n"] > 10  # the data exercise most classes
    for label_id, cat in categories.items():
        row = ours["per_class"][cat["name"]]
        s = stat[label_id]
        assert (row["TP"], row["FP"], row["FN"]) == (s.tp, s.fp, s.fn), cat["name"]
        if s.tp + s.fp + s.fn:
            for m in ("PQ", "SQ", "RQ"):
                assert abs(row[m] - off["per_class"][label_id][m.lower()]) < 1e-6
        else:
            assert math.isnan(row["PQ"])
    # crowd regions and void were exercised: some predictions were forgiven as FPs
    assert sum(r["FP"] for r in ours["per_class"].values()) > 0


def test_semantic_matches_official(tree, monkeypatch):
    gt_root, pred, ours = tree
    off = official_pixel(gt_root, pred / "semantic", monkeypatch)
    assert ours["mIoU_source"] == "semantic"
    assert abs(ours["mIoU"] - off["averageScoreClasses"]) < 1e-6
    for name, row in ours["per_class"].items():
        assert _close(row["IoU"], off["classScores"][name], 1e-6), name


def test_instance_ap_matches_official(tree, tmp_path, monkeypatch):
    gt_root, pred, ours = tree
    off = official_instance(gt_root, pred / "instance", tmp_path, monkeypatch)
    avg = off["averages"]
    assert abs(ours["AP"] - avg["allAp"]) < 1e-9
    assert abs(ours["AP50"] - avg["allAp50%"]) < 1e-9
    for name, r in avg["classes"].items():
        assert _close(ours["per_class"][name]["AP"], float(r["ap"])), name
        assert _close(ours["per_class"][name]["AP50"], float(r["ap50%"])), name
    assert 0 < ours["AP"] < 1


@pytest.mark.parametrize("seed", [1, 2])
def test_more_seeds_match_official(tmp_path, monkeypatch, seed):
    gt_root, pred = make_tree(tmp_path, seed=seed, n_per_city=2)
    ours = cs.evaluate_dirs(gt_root, pred)
    off, _, _ = official_panoptic(gt_root, pred, tmp_path)
    assert abs(ours["PQ"] - off["All"]["pq"]) < 1e-6
    assert abs(ours["SQ"] - off["All"]["sq"]) < 1e-6
    assert abs(ours["RQ"] - off["All"]["rq"]) < 1e-6
    assert abs(ours["mIoU"] - official_pixel(gt_root, pred / "semantic", monkeypatch)["averageScoreClasses"]) < 1e-6
    inst = official_instance(gt_root, pred / "instance", tmp_path, monkeypatch)["averages"]
    assert abs(ours["AP"] - inst["allAp"]) < 1e-9
    assert abs(ours["AP50"] - inst["allAp50%"]) < 1e-9


# --------------------------------------------------------------------------- round trips
def test_gt_conversion_rules():
    inst = np.array([[7, 26000, 26001, 26], [0, 29000, 24, 24998]], dtype=np.uint16)
    pan = cs.gt_panoptic_from_instance_ids(inst)
    car, person, road = (CITYSCAPES19.index(n) for n in ("car", "person", "road"))
    # objects counted from 0 in Cityscapes become 1.., crowd -> instance 0, void/caravan -> -1
    assert pan.tolist() == [[road * 1000, car * 1000 + 1, car * 1000 + 2, car * 1000],
                            [-1, -1, person * 1000, person * 1000 + 999]]
    void = cs.instance_void_mask(inst)
    assert void.tolist() == [[False, False, False, False], [True, False, False, False]]  # caravan object not void
    with pytest.raises(ValueError, match=r"gt\.png: instance number 999 does not fit label_divisor=1000"):
        cs.gt_panoptic_from_instance_ids(np.array([[24999]]), path="gt.png")
    with pytest.raises(ValueError, match=r"gt\.png: unknown Cityscapes ids \[34\]"):
        cs.gt_panoptic_from_instance_ids(np.array([[34]]), path="gt.png")
    lab = np.array([[7, 24, 0, 33]], dtype=np.uint8)
    assert cs.gt_semantic_from_label_ids(lab).tolist() == [[0, 11, IGNORE, 18]]


def test_panoptic_export_roundtrip(tmp_path, rng):
    C = CITYSCAPES19.num_classes
    pan = rng.integers(0, C, size=(H, W)) * 1000 + rng.integers(0, 4, size=(H, W))
    pan[rng.random((H, W)) < 0.1] = -1
    with cs.PanopticExporter(tmp_path) as ex:
        png = ex.add("aachen_000000_000019", torch.from_numpy(pan))
    ann = cs.read_panoptic_json(tmp_path / "panoptic.json")["aachen_000000_000019"]
    back = cs.read_panoptic_prediction(png, ann, shape=(H, W))
    # same partition into segments, same classes, same void
    assert ((back < 0) == (pan < 0)).all()
    assert ((back // 1000) == (pan // 1000))[pan >= 0].all()
    pairs = set(zip(pan.ravel().tolist(), back.ravel().tolist()))
    assert len(pairs) == len(np.unique(pan)) == len(np.unique(back))
    sem = pan // 1000
    sem[pan < 0] = IGNORE
    path = cs.export_semantic(tmp_path / "semantic", "aachen_000000_000019", sem)
    assert (cs.read_semantic_prediction(path, shape=(H, W)) == sem).all()


def test_instance_export_roundtrip(tmp_path, rng):
    masks = rng.random((4, H, W)) < 0.3
    labels = np.array(CITYSCAPES19.thing_ids[:4])
    scores = rng.random(4)
    txt = cs.export_instances(tmp_path, "bochum_000001_000020", masks, labels, scores)
    m, lab, sc = cs.read_instance_prediction(txt, shape=(H, W))
    assert (m == masks).all() and (lab == labels).all() and (sc == scores).all()  # scores written with repr


# --------------------------------------------------------------------------- malformed inputs
@pytest.fixture
def small_pred(tmp_path):
    gt_root, pred = make_tree(tmp_path, seed=3, n_per_city=1, cities=("aachen",),
                              with_semantic=False, with_instances=False)
    ann_path = pred / "panoptic.json"
    return gt_root, pred, json.loads(ann_path.read_text())


def _png(pred, data):
    return pred / "panoptic" / data["annotations"][0]["file_name"]


def test_error_png_id_missing_from_json(small_pred):
    gt_root, pred, data = small_pred
    dropped = data["annotations"][0]["segments_info"].pop()
    (pred / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"_panoptic\.png: segment ids \[{dropped['id']}\] are in the PNG but not in the JSON"):
        cs.evaluate_dirs(gt_root, pred)


def test_error_json_id_missing_from_png(small_pred):
    gt_root, pred, data = small_pred
    data["annotations"][0]["segments_info"].append({"id": 123456, "category_id": 26})
    (pred / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"_panoptic\.png: segment ids \[123456\] are in the JSON but not in the PNG"):
        cs.evaluate_dirs(gt_root, pred)


def test_error_unknown_category(small_pred):
    gt_root, pred, data = small_pred
    data["annotations"][0]["segments_info"][0]["category_id"] = 29  # caravan: not evaluated
    (pred / "panoptic.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"_panoptic\.png: segment \d+ has unknown category_id 29"):
        cs.evaluate_dirs(gt_root, pred)


def test_error_wrong_size(small_pred):
    gt_root, pred, data = small_pred
    save_png(_png(pred, data), np.zeros((H, W + 1, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=rf"_panoptic\.png: image is {H}x{W + 1} \(HxW\), but the ground truth is {H}x{W}"):
        cs.evaluate_dirs(gt_root, pred)


def test_error_unreadable_and_missing(small_pred):
    gt_root, pred, data = small_pred
    _png(pred, data).write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"_panoptic\.png: not a readable image"):
        cs.evaluate_dirs(gt_root, pred)
    _png(pred, data).unlink()
    with pytest.raises(FileNotFoundError, match=r"_panoptic\.png: no such file"):
        cs.evaluate_dirs(gt_root, pred)
    (pred / "panoptic.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"panoptic\.json: not valid JSON"):
        cs.evaluate_dirs(gt_root, pred)
    (pred / "panoptic.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=r"panoptic\.json: no prediction for image aachen_000000_000019"):
        cs.evaluate_dirs(gt_root, pred)
    with pytest.raises(FileNotFoundError, match=r"gtFine/test: no such folder"):
        cs.evaluate_dirs(gt_root, pred, split="test")


def test_error_grey_panoptic_and_bad_instance_txt(small_pred, tmp_path):
    gt_root, pred, data = small_pred
    save_png(_png(pred, data), np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"_panoptic\.png: expected an 8-bit RGB image"):
        cs.evaluate_dirs(gt_root, pred)
    txt = tmp_path / "x_pred.txt"
    txt.write_text("masks/a.png 26\n")
    with pytest.raises(ValueError, match=r"x_pred\.txt:1: expected '<relative mask path> <label id> <confidence>'"):
        cs.read_instance_prediction(txt)
    txt.write_text("masks/a.png 26 0.5\n")
    with pytest.raises(FileNotFoundError, match=r"masks/a\.png: no such file"):
        cs.read_instance_prediction(txt)


def test_exporter_rejects_bad_maps(tmp_path):
    ex = cs.PanopticExporter(tmp_path)
    with pytest.raises(ValueError, match=r"classes outside \[0, 19\)"):
        ex.add("a_0_0", np.full((4, 4), 19000))
    with pytest.raises(ValueError, match=r"panoptic should be an \[H, W\] integer map"):
        ex.add("a_0_0", np.zeros((4, 4), dtype=np.float32))
    ex.add("a_0_0", np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"image 'a_0_0' was already added"):
        ex.add("a_0_0", np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"labels should be thing train ids"):
        cs.export_instances(tmp_path, "a_0_0", np.ones((1, 4, 4), bool), np.array([0]), np.array([0.5]))
