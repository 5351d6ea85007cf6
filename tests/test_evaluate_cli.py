"""`pst evaluate`: the command module on its own parser (pst.cli imports every subcommand)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types

import pytest

from pst.commands import evaluate as cmd
from pst.formats import cityscapes as cs
from test_formats import make_tree  # tests/ is on sys.path (pytest rootdir conftest)

TOP_KEYS = ("PQ", "SQ", "RQ", "PQ_things", "PQ_stuff", "PQ_dagger", "mIoU", "AP", "AP50", "per_class")


def run(argv):
    parser = argparse.ArgumentParser(prog="pst")
    sub = parser.add_subparsers(dest="command")
    cmd.register(sub)
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("cli"), seed=4, n_per_city=2)


def test_evaluate_writes_json_and_table(tree, tmp_path, capsys):
    gt_root, pred = tree
    out = tmp_path / "results.json"
    assert run(["--gt", str(gt_root), "--pred", str(pred), "--split", "val", "--out", str(out)]) == 0
    res = json.loads(out.read_text())  # strict JSON: NaN written as null
    for key in TOP_KEYS:
        assert key in res
    for key in TOP_KEYS[:-1]:
        assert 0.0 <= res[key] <= 1.0
    direct = cs.evaluate_dirs(gt_root, pred)
    for key in TOP_KEYS[:-1]:
        assert res[key] == pytest.approx(direct[key], abs=1e-12)
    for name, row in res["per_class"].items():
        for k, v in row.items():
            d = direct["per_class"][name][k]
            assert (v is None and math.isnan(d)) or v == pytest.approx(d, abs=1e-12)
    table = capsys.readouterr().out
    assert "PQ" in table and "car*" in table and f"{100 * direct['PQ']:5.1f}" in table


def test_evaluate_without_instances_has_no_ap(tmp_path):
    gt_root, pred = make_tree(tmp_path, seed=5, n_per_city=1, with_semantic=False, with_instances=False)
    out = tmp_path / "r.json"
    assert run(["--gt", str(gt_root), "--pred", str(pred), "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert "AP" not in res and "AP50" not in res and res["mIoU_source"] == "panoptic"


def test_evaluate_argument_errors(tree):
    gt_root, pred = tree
    with pytest.raises(ValueError, match=r"pass --gt CITYSCAPES_ROOT and --pred PRED_DIR \(or --checkpoint\)"):
        run(["--gt", str(gt_root)])
    with pytest.raises(ValueError, match="use either --checkpoint or --gt/--pred, not both"):
        run(["--gt", str(gt_root), "--pred", str(pred), "--checkpoint", "x.pt"])
    with pytest.raises(KeyError, match="unknown label space 'nope'"):
        run(["--gt", str(gt_root), "--pred", str(pred), "--label-space", "nope"])


def test_checkpoint_mode_calls_pipeline(tmp_path, monkeypatch):
    calls = {}

    def evaluate_checkpoint(path, *, seed, style, n_scenes=32, device, out):
        calls.update(path=path, seed=seed, style=style, n_scenes=n_scenes, device=device, out=out)
        return {"PQ": 0.5, "mIoU": 0.6}

    fake = types.ModuleType("pst.train.evaluate")
    fake.evaluate_checkpoint = evaluate_checkpoint
    monkeypatch.setitem(sys.modules, "pst.train.evaluate", fake)
    out = tmp_path / "r.json"
    assert run(["--checkpoint", str(tmp_path / "run"), "--toy-seed", "3", "--toy-style", "target",
                "--n-scenes", "4", "--out", str(out), "--quiet"]) == 0
    assert calls == dict(path=tmp_path / "run", seed=3, style="target", n_scenes=4, device="cpu", out=out)
    assert json.loads(out.read_text()) == {"PQ": 0.5, "mIoU": 0.6}  # written because the pipeline did not
    out.unlink()
    assert run(["--checkpoint", "ck.pt", "--out", str(out)]) == 0
    assert calls["n_scenes"] == 32  # not given -> the pipeline's default


def test_checkpoint_mode_without_pipeline(monkeypatch):
    monkeypatch.setitem(sys.modules, "pst.train.evaluate", None)  # import fails as if the module were absent
    with pytest.raises(ValueError, match=r"--checkpoint needs pst.train.evaluate.evaluate_checkpoint"):
        run(["--checkpoint", "x.pt", "--quiet"])
