"""pst.data datasets on small fake trees in the real Cityscapes / GTA5 / SYNTHIA layouts."""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from pst.data import GTA5, Cityscapes, Synthia, build_dataset, check_dataset
from pst.labels import CITYSCAPES19, IGNORE, SYNTHIA16, SYNTHIA_ID_TO_NAME

H, W = 12, 20


# ----------------------------------------------------------------------------- fake trees

def _save_rgb(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _cityscapes_gt(rng):
    """labelIds (uint8) and instanceIds (uint16) with stuff, things, a crowd region, void and caravan."""
    lab = np.full((H, W), 7, np.uint8)  # road
    inst = lab.astype(np.uint16)
    lab[:3] = 23  # sky
    lab[3:5, :5] = 0  # unlabeled
    lab[5:9, 2:7] = 26  # car 1
    lab[5:9, 7:10] = 26  # car 2, touching car 1
    lab[2:10, 12:14] = 24  # person
    lab[9:12, 15:19] = 29  # caravan: a thing, ignored in the 19 classes
    lab[0:2, 16:20] = 26  # crowd of cars: no instance id
    inst = lab.astype(np.uint16)
    inst[5:9, 2:7] = 26001
    inst[5:9, 7:10] = 26002
    inst[2:10, 12:14] = 24001
    inst[9:12, 15:19] = 29001
    return lab, inst


def make_cityscapes(root, split="train", files=(("aachen", 2), ("bochum", 1)), seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for city, n in files:
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            img = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            _save_rgb(img, rng)
            lab, inst = _cityscapes_gt(rng)
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab).save(gt / f"{stem}_gtFine_labelIds.png")
            cv2.imwrite(str(gt / f"{stem}_gtFine_instanceIds.png"), inst)
            paths.append((img, gt / f"{stem}_gtFine_labelIds.png", gt / f"{stem}_gtFine_instanceIds.png"))
    return paths


def make_gta5(root, n=3, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n):
        _save_rgb(root / "images" / f"{k + 1:05d}.png", rng)
        lab = rng.choice(np.array([0, 7, 8, 11, 21, 23, 24, 26, 33], np.uint8), (H, W))
        im = Image.fromarray(lab, mode="P")
        im.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))  # colours must not matter
        (root / "labels").mkdir(parents=True, exist_ok=True)
        im.save(root / "labels" / f"{k + 1:05d}.png")


def _synthia_gt(rng):
    cls = rng.choice(np.array([0, 1, 2, 3, 4, 6, 13, 16, 18]), (H, W)).astype(np.uint16)
    ins = np.zeros((H, W), np.uint16)
    cls[4:8, 2:6], ins[4:8, 2:6] = 8, 3  # car 3
    cls[4:8, 6:9], ins[4:8, 6:9] = 8, 5  # car 5, touching
    cls[1:9, 10:12], ins[1:9, 10:12] = 10, 3  # person with the same G value as a car
    cls[9:12, 14:18], ins[9:12, 14:18] = 18, 1  # truck: not in SYNTHIA16
    cls[0:2, 15:19] = 8  # car pixels without an instance
    return cls, ins


def make_synthia(root, n=2, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        _save_rgb(root / "RGB" / f"{k:07d}.png", rng)
        cls, ins = _synthia_gt(rng)
        bgr = np.stack([np.zeros_like(cls), ins, cls], axis=-1).astype(dtype)  # OpenCV writes BGR: R = class
        cv2.imwrite(str(root / "GT" / "LABELS" / f"{k:07d}.png"), bgr)


def _corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- references

def _ref_cityscapes(lab, inst, space):
    """Slow reference: official cityscapesscripts label table, pixel by pixel."""
    sem = np.full(lab.shape, IGNORE, np.int64)
    ins = np.zeros(lab.shape, np.int64)
    ids = {}
    for (i, j), v in np.ndenumerate(lab):
        name = id2label[int(v)].name
        if name in space.classes:
            sem[i, j] = space.classes.index(name)
        iv = int(inst[i, j])
        if iv >= 1000 and name in space.things:
            ins[i, j] = ids.setdefault(iv, len(ids) + 1)
    return sem, ins


def _same_partition(a, b):
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


# ----------------------------------------------------------------------------- Cityscapes

@pytest.mark.parametrize("space", [CITYSCAPES19, SYNTHIA16], ids=["cs19", "syn16"])
def test_cityscapes_loads_and_matches_official_labels(tmp_path, space):
    paths = make_cityscapes(tmp_path)
    ds = Cityscapes(tmp_path, "train", label_space=space)
    assert len(ds) == 3
    assert [ds[i]["name"] for i in range(3)] == ["aachen_000000_000019", "aachen_000001_000019",
                                                 "bochum_000000_000019"]
    for i, (img_path, lab_path, inst_path) in enumerate(paths):
        s = ds[i]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, H, W)
        expected_img = np.asarray(Image.open(img_path).convert("RGB")).transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(s["image"].numpy(), expected_img, atol=1e-6)
        lab = np.asarray(Image.open(lab_path))
        inst = cv2.imread(str(inst_path), cv2.IMREAD_UNCHANGED)
        ref_sem, ref_ins = _ref_cityscapes(lab, inst, space)
        assert s["semantic"].dtype == torch.int64 and s["instances"].dtype == torch.int64
        np.testing.assert_array_equal(s["semantic"].numpy(), ref_sem)
        assert _same_partition(s["instances"].numpy(), ref_ins)
        ids = np.unique(s["instances"].numpy())
        np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 0, 1..K consecutive
    assert int(ds[0]["instances"].max()) == 3  # two touching cars and a person; caravan and crowd excluded


def test_cityscapes_without_labels_and_transform(tmp_path):
    make_cityscapes(tmp_path)
    ds = Cityscapes(tmp_path, with_labels=False, transform=lambda s: {**s, "flag": 1})
    s = ds[0]
    assert (s["semantic"] == IGNORE).all() and (s["instances"] == 0).all() and s["flag"] == 1
    # images only: the gtFine folder is not needed
    import shutil
    shutil.rmtree(tmp_path / "gtFine")
    assert len(Cityscapes(tmp_path, with_labels=False)) == 3
    with pytest.raises(FileNotFoundError, match=r"gtFine[/\\]train: missing folder"):
        Cityscapes(tmp_path)


def test_cityscapes_dataloader_collates(tmp_path):
    make_cityscapes(tmp_path)
    batch = next(iter(torch.utils.data.DataLoader(Cityscapes(tmp_path), batch_size=2)))
    assert batch["image"].shape == (2, 3, H, W) and batch["semantic"].shape == (2, H, W)
    assert len(batch["name"]) == 2


def test_cityscapes_missing_tree_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="root folder does not exist"):
        Cityscapes(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit[/\\]train: missing folder"):
        Cityscapes(tmp_path)
    paths = make_cityscapes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit[/\\]val: missing folder"):
        Cityscapes(tmp_path, "val")
    paths[1][2].unlink()
    with pytest.raises(FileNotFoundError, match=r"aachen_000001_000019_gtFine_instanceIds\.png: missing"):
        Cityscapes(tmp_path)
    ds = Cityscapes(tmp_path, strict=False)  # keep the complete samples
    assert len(ds) == 2 and len(ds.scan.errors) == 1


def test_cityscapes_empty_split(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images found"):
        Cityscapes(tmp_path)


def test_cityscapes_malformed_files(tmp_path):
    paths = make_cityscapes(tmp_path, files=(("aachen", 6),))
    _corrupt(paths[0][0])
    Image.fromarray(np.full((H, W), 40, np.uint8)).save(paths[1][1])  # id 40 is not a Cityscapes id
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(paths[2][1])  # colour label
    lab, inst = _cityscapes_gt(np.random.default_rng(0))
    inst[0, 0] = 24001  # says person where labelIds says sky
    cv2.imwrite(str(paths[3][2]), inst)
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(paths[4][1])  # wrong size
    paths[5][0].write_bytes(b"this is not a png")
    ds = Cityscapes(tmp_path)
    cases = [
        (ValueError, r"aachen_000000_000019_leftImg8bit\.png: not a readable image"),
        (ValueError, r"labelIds\.png: label ids \[40\] are not Cityscapes label ids"),
        (ValueError, r"labelIds\.png: expected a single-channel label image"),
        (ValueError, r"instanceIds\.png: disagrees with .*labelIds\.png at 1 pixels"),
        (ValueError, r"labelIds\.png: size 20x13 \(WxH\) differs from its image"),
        (ValueError, r"aachen_000005_000019_leftImg8bit\.png: not a readable image"),
    ]
    for i, (exc, msg) in enumerate(cases):
        with pytest.raises(exc, match=msg):
            ds[i]


# ----------------------------------------------------------------------------- GTA5

def test_gta5_reads_palette_indices_as_label_ids(tmp_path):
    make_gta5(tmp_path)
    ds = GTA5(tmp_path)
    assert len(ds) == 3 and ds[0]["name"] == "00001"
    lut = {lab.id: lab.trainId for lab in id2label.values()}
    for i in range(3):
        s = ds[i]
        raw = np.asarray(Image.open(tmp_path / "labels" / f"{i + 1:05d}.png"))  # indices of a P image
        ref = np.vectorize(lambda v: lut[int(v)] if lut[int(v)] not in (-1, 255) else IGNORE)(raw)
        np.testing.assert_array_equal(s["semantic"].numpy(), ref)
        assert (s["instances"] == 0).all()
    assert GTA5(tmp_path, "train").items == ds.items


def test_gta5_split_list_and_errors(tmp_path):
    make_gta5(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"val\.txt: missing split list"):
        GTA5(tmp_path, "val")
    (tmp_path / "val.txt").write_text("00002\n00003.png\n00009\n")
    with pytest.raises(FileNotFoundError, match=r"00009\.png: missing \(listed in val\.txt\)"):
        GTA5(tmp_path, "val")
    (tmp_path / "val.txt").write_text("00002\n00003.png\n")
    assert [s["name"] for s in GTA5(tmp_path, "val")] == ["00002", "00003"]
    (tmp_path / "labels" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels[/\\]00001\.png: missing"):
        GTA5(tmp_path)
    Image.fromarray(np.full((H, W), 34, np.uint8)).save(tmp_path / "labels" / "00001.png")
    with pytest.raises(ValueError, match=r"00001\.png: label ids \[34\] are not Cityscapes label ids"):
        GTA5(tmp_path)[0]


def test_gta5_size_mismatch_is_resized_with_warning(tmp_path, caplog):
    make_gta5(tmp_path, n=1)
    lab = np.zeros((H * 2, W * 2), np.uint8)
    lab[: H, :] = 7  # top half road
    Image.fromarray(lab).save(tmp_path / "labels" / "00001.png")
    with caplog.at_level("WARNING"):
        s = GTA5(tmp_path)[0]
    assert "differs from its image" in caplog.text
    assert s["semantic"].shape == (H, W)
    assert (s["semantic"][: H // 2] == 0).all() and (s["semantic"][H // 2:] == IGNORE).all()


# ----------------------------------------------------------------------------- SYNTHIA

@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_synthia_class_from_red_instance_from_green(tmp_path, dtype):
    make_synthia(tmp_path, dtype=dtype)
    ds = Synthia(tmp_path)
    assert len(ds) == 2 and ds.label_space is SYNTHIA16
    rng = np.random.default_rng(0)
    for i in range(2):
        rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # the image: same draws as make_synthia
        cls, ins = _synthia_gt(rng)
        s = ds[i]
        ref = np.full((H, W), IGNORE, np.int64)
        ref_ins = np.zeros((H, W), np.int64)
        ids = {}
        for (a, b), c in np.ndenumerate(cls):
            name = SYNTHIA_ID_TO_NAME.get(int(c))
            if name in SYNTHIA16.classes:
                ref[a, b] = SYNTHIA16.classes.index(name)
                if name in SYNTHIA16.things and ins[a, b] > 0:
                    ref_ins[a, b] = ids.setdefault((int(c), int(ins[a, b])), len(ids) + 1)
        np.testing.assert_array_equal(s["semantic"].numpy(), ref)
        assert _same_partition(s["instances"].numpy(), ref_ins)
        assert int(s["instances"].max()) == 3  # two cars and a person (same G as a car); truck dropped
    ds19 = Synthia(tmp_path, label_space=CITYSCAPES19)  # same classes, 19-class train ids
    s19, s16 = ds19[0]["semantic"], ds[0]["semantic"]
    names19 = np.array(CITYSCAPES19.classes + ("ignore",))[torch.where(s19 == IGNORE, 19, s19).numpy()]
    names16 = np.array(SYNTHIA16.classes + ("ignore",))[torch.where(s16 == IGNORE, 16, s16).numpy()]
    np.testing.assert_array_equal(names19, names16)


def test_synthia_malformed(tmp_path):
    make_synthia(tmp_path, n=4)
    labels = tmp_path / "GT" / "LABELS"
    cv2.imwrite(str(labels / "0000000.png"), np.zeros((H, W), np.uint16))
    bad = np.zeros((H, W, 3), np.uint16)
    bad[..., 2] = 30
    cv2.imwrite(str(labels / "0000001.png"), bad)
    _corrupt(labels / "0000002.png")
    (tmp_path / "RGB" / "0000003.png").write_bytes(b"")
    ds = Synthia(tmp_path)
    with pytest.raises(ValueError, match=r"0000000\.png: expected a 3-channel label PNG"):
        ds[0]
    with pytest.raises(ValueError, match=r"0000001\.png: label ids \[30\] are not SYNTHIA class ids"):
        ds[1]
    with pytest.raises(ValueError, match=r"LABELS[/\\]0000002\.png: not a readable PNG"):
        ds[2]
    with pytest.raises(ValueError, match=r"RGB[/\\]0000003\.png: not a readable image"):
        ds[3]
    (labels / "0000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"LABELS[/\\]0000000\.png: missing"):
        Synthia(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"GT[/\\]LABELS: missing folder"):
        Synthia(tmp_path / "RGB")


# ----------------------------------------------------------------------------- check

def test_check_dataset_lists_every_problem(tmp_path):
    paths = make_cityscapes(tmp_path, files=(("aachen", 4),))
    report = check_dataset("cityscapes", tmp_path)
    assert report.ok and report.n_samples == 4 and report.n_decoded == 4 and not report.warnings
    paths[0][1].unlink()
    _corrupt(paths[1][0])
    Image.fromarray(np.full((H, W), 99, np.uint8)).save(paths[2][1])
    (tmp_path / "leftImg8bit" / "train" / "aachen" / "notes.txt").write_text("x")
    report = check_dataset("cityscapes", tmp_path)
    assert not report.ok and report.n_samples == 3
    assert len(report.errors) == 3, report.errors
    assert "aachen_000000_000019_gtFine_labelIds.png: missing" in report.errors[0]
    assert "aachen_000001_000019_leftImg8bit.png: not a readable image" in report.errors[1]
    assert "label ids [99]" in report.errors[2]
    assert any("notes.txt: ignored" in w for w in report.warnings)
    assert "FAILED" in report.format()
    # only what loaded counts as decoded: the corrupt image and the bad label ids do not
    assert report.n_decoded == 1 and report.failed == report.errors[1:]
    # the first sample left is the corrupt image (before issue 17 this counted it as decoded)
    first = check_dataset("cityscapes", tmp_path, limit=1)
    assert first.n_decoded == 0 and len(first.failed) == 1 and "aachen_000001" in first.failed[0]
    assert check_dataset("cityscapes", tmp_path, limit=2).n_decoded == 0


def test_check_dataset_gta5_synthia_and_bad_args(tmp_path):
    make_gta5(tmp_path / "gta")
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(tmp_path / "gta" / "labels" / "00002.png")
    report = check_dataset("gta5", tmp_path / "gta")
    assert report.ok and len(report.warnings) == 1 and "00002.png: size" in report.warnings[0]
    make_synthia(tmp_path / "syn")
    assert check_dataset("synthia", tmp_path / "syn").ok
    report = check_dataset("synthia", tmp_path / "missing")
    assert not report.ok and "root folder does not exist" in report.errors[0]
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        check_dataset("kitti", tmp_path)
    with pytest.raises(ValueError, match="limit should be an int >= 0"):
        check_dataset("gta5", tmp_path / "gta", limit=-1)


def _cli(argv):
    from pst.commands import data as data_cmd

    parser = argparse.ArgumentParser(prog="pst")
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_data_check(tmp_path, capsys):
    paths = make_cityscapes(tmp_path / "cs")
    assert _cli(["data", "check", "--dataset", "cityscapes", "--root", str(tmp_path / "cs"), "--no-progress",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "3 samples found, 3 decoded; 0 errors" in out and out.strip().endswith("OK")
    import json
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    paths[2][2].unlink()
    assert _cli(["data", "check", "--dataset", "cityscapes", "--root", str(tmp_path / "cs"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "bochum_000000_000019_gtFine_instanceIds.png: missing" in out and "FAILED" in out


def test_build_dataset(tmp_path):
    make_gta5(tmp_path)
    assert len(build_dataset("gta5", root=tmp_path)) == 3
    assert len(build_dataset("toy", n=5)) == 5
    with pytest.raises(ValueError, match="needs a root folder"):
        build_dataset("cityscapes")
    with pytest.raises(ValueError, match="unknown dataset 'foo'"):
        build_dataset("foo")
