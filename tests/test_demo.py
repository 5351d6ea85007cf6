"""The whole pipeline through the command line: a tiny smoke run (fast) and the real demo (slow)."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from pst.cli import main
from pst.labels import TOY
from tests.test_train import TINY


def _check_metrics(m: dict) -> None:
    for stage in ("source_only", "self_trained", "oracle"):
        for k in ("PQ", "mIoU", "AP"):
            v = m[stage][k]
            assert isinstance(v, float) and (math.isnan(v) or 0.0 <= v <= 1.0), (stage, k, v)


def test_tiny_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    assert main(["demo", "--out", str(out), "--no-progress", *TINY, "categories=[base,ccm]"]) == 0
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    _check_metrics(m)
    assert set(m["by_category"]) == {"base", "ccm"}
    stages = ("source_only", "self_trained", "oracle")
    for mode in ("base", "ccm"):
        res = m["by_category"][mode]
        assert set(res) >= {*stages, *(f"{s}_cc" for s in stages), "gap_closed", "cc_gain"}
        assert set(res["gap_closed"]) == {"PQ", "PQ_things", "mIoU", "AP"}
        for s in stages:
            assert res["cc_gain"][s] == pytest.approx(res[s]["PQ_things"] - res[f"{s}_cc"]["PQ_things"], nan_ok=True)
            assert set(res[s]["per_class"]) == set(TOY.things)
            assert set(res[s]["per_class"]["car"]) == {"PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU", "AP", "AP50"}
    # CC instances do not depend on the category mode (no instance model runs)
    assert m["by_category"]["base"]["oracle_cc"] == m["by_category"]["ccm"]["oracle_cc"]
    cc = m["cc_baseline"]
    assert cc["self_trained_cc"] == m["by_category"]["base"]["self_trained_cc"] and cc["target_gain"] == 0.10
    assert set(cc["meets_target"]) == set(stages) and cc["PQ_things_gain"] == m["by_category"]["base"]["cc_gain"]
    assert m["ap_min_region_size"] == 16  # toy scenes at 64x128: 100 px scaled by pixel count, floor 16
    pq = m["pseudo_quality"]
    assert [(r["step"], r["mode"]) for r in pq] == [(2, "base"), (2, "ccm"), (4, "base"), (4, "ccm")]
    assert all(r["images"] == 4 and 0 <= r["kept"] <= 1 and (r["mIoU"] is None) == (r["kept"] == 0) for r in pq)
    assert 0.0 <= m["timing"]["instance_pseudo_share"] <= 1.0
    assert m["wall_seconds"] <= wall + 1
    assert [c["step"] for c in m["curve"] if c["mode"] == "base"] == [0, 2, 4]
    for name in ("source.pt", "selftrain.pt", "oracle.pt", "report.md", "pq_curve.png", "pseudo_quality.png",
                 "overlay_00.png", "overlay_01.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "pq_curve.png" in report and "overlay_00.png" in report and "Gap closed" in report
    assert "self-trained, CC instances" in report and "PQ_things difference" in report
    assert "### Thing classes (BASE)" in report and "| motorcycle |" in report
    assert "pseudo_quality.png" in report and "false-positive share" in report
    assert "AP counts ground-truth objects of at least 16 pixels" in report

    # re-evaluate the run's checkpoints on other toy scenes (pst evaluate --checkpoint)
    from pst.train.evaluate import evaluate_checkpoint

    # by default on the run's held-out set (data.target_val): the demo's own numbers
    d = evaluate_checkpoint(out / "selftrain.pt")
    assert {k: d["_eval"][k] for k in ("name", "seed", "style", "n_scenes")} == \
        {"name": "toy", "seed": 3, "style": "target", "n_scenes": 4}
    assert d["self_trained"]["PQ"] == m["self_trained"]["PQ"] and d["self_trained"]["AP"] == m["self_trained"]["AP"]
    r = evaluate_checkpoint(out, seed=11, style="target_dusk", n_scenes=2, out=tmp_path / "eval.json")
    assert set(r) == {"source_only", "self_trained", "oracle", "_eval"}
    _check_metrics(r)
    assert json.loads((tmp_path / "eval.json").read_text())["_eval"]["style"] == "target_dusk"
    assert main(["evaluate", "--checkpoint", str(out / "selftrain.pt"), "--toy-seed", "5", "--n-scenes", "2",
                 "--out", str(tmp_path / "e2.json"), "--quiet"]) == 0
    assert "self_trained" in json.loads((tmp_path / "e2.json").read_text())

    # a resumed demo skips the finished stages and reproduces the metrics
    assert main(["demo", "--out", str(out), "--no-progress", "--resume", *TINY, "categories=[base,ccm]"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["self_trained"] == m["self_trained"] and m2["oracle"] == m["oracle"]
    # ... and says its wall time is its own, not the demo's
    assert m["resumed_stages"] == {"reused": [], "continued": []}
    assert m2["resumed_stages"] == {"reused": ["source", "oracle", "selftrain"], "continued": []}
    assert "source, oracle, selftrain finished by an earlier run" in (out / "report.md").read_text()

    # pseudo-labels to disk, resumable
    pl = tmp_path / "pl"
    assert main(["pseudo-label", "--checkpoint", str(out / "selftrain.pt"), "--out", str(pl), "--limit", "3"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first == {"written": 3, "skipped": 0, "images": 3, "out": str(pl)}
    from pst.io import read_png

    names = json.loads((pl / "index.json").read_text())["images"]
    sem = read_png(pl / f"{names[0]}_semantic.png")
    inst = read_png(pl / f"{names[0]}_instances.png")
    assert sem.shape == (64, 128) and inst.shape == (64, 128)
    assert set(sem.ravel().tolist()) <= set(range(11)) | {255}
    os.remove(pl / f"{names[1]}_instances.png")  # as if killed while writing image 2
    assert main(["pseudo-label", "--checkpoint", str(out / "selftrain.pt"), "--out", str(pl), "--limit", "3"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["written"] == 1 and second["skipped"] == 2

    # export in Cityscapes formats and read back with the evaluator's reader
    ex = tmp_path / "export"
    assert main(["export", "--checkpoint", str(out / "selftrain.pt"), "--out", str(ex), "--limit", "2"]) == 0
    from pst.formats.cityscapes import read_panoptic_json

    ann = read_panoptic_json(ex / "panoptic.json")
    assert len(ann) == 2
    assert len(list((ex / "semantic").glob("*_labelIds.png"))) == 2
    assert len(list((ex / "instance").glob("*_pred.txt"))) == 2


def test_cli_config_errors_name_the_key(tmp_path, capsys):
    assert main(["train", "source", "--out", str(tmp_path), "source.stepz=3"]) == 2
    assert "source.stepz" in capsys.readouterr().err
    assert main(["train", "source", "--out", str(tmp_path), "source.steps=many"]) == 2
    assert "source.steps should be int" in capsys.readouterr().err
    assert main(["train", "selftrain", "--out", str(tmp_path)]) == 2
    assert "no source checkpoint" in capsys.readouterr().err
    assert main(["bench", "no_such_bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_train_cli_resume(tmp_path):
    args = ["train", "source", "--out", str(tmp_path), "--no-progress", *TINY]
    assert main(args + ["--max-steps", "2"]) == 0
    assert (tmp_path / "source" / "last.pt").is_file() and not (tmp_path / "source.pt").exists()
    assert main(args + ["--resume"]) == 0
    assert (tmp_path / "source.pt").is_file()
    assert main(["train", "selftrain", "--out", str(tmp_path), "--no-progress", *TINY, "selftrain.eval_every=0"]) == 0
    assert (tmp_path / "selftrain.pt").is_file()


@pytest.mark.slow
def test_full_demo_meets_targets(tmp_path):
    """The README's demo with the default config and seed against issue 10's targets, on the
    held-out target scenes: <= 15 min on 2 idle cores; the toy target stays an adaptation
    problem (source-only >= 8 PQ points below the oracle); oracle PQ_things >= 35 and AP >= 20;
    self-training closes >= 50% of the gap on PQ and PQ_things and >= 30% on mIoU and AP;
    embedding instances beat connected components of the same masks by >= 10 PQ_things points.
    The benchmark behind the README's table (commit 6fae568) met all of them for this seed."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    _check_metrics(m)
    assert m["oracle"]["PQ"] - m["source_only"]["PQ"] >= 0.08
    assert m["oracle"]["PQ_things"] >= 0.35 and m["oracle"]["AP"] >= 0.20
    gap = m["gap_closed"]
    assert gap["PQ"] >= 0.5 and gap["PQ_things"] >= 0.5 and gap["mIoU"] >= 0.3 and gap["AP"] >= 0.3
    assert all(v >= 0.10 for v in m["cc_baseline"]["PQ_things_gain"].values())
    if os.environ.get("PST_CHECK_DEMO_TIME", "1") == "1":
        assert m["wall_seconds"] <= 15 * 60
