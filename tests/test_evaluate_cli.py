"""`pst evaluate`: the command module on its own parser (pst.cli imports every subcommand)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

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

    def evaluate_checkpoint(path, *, device, out, **scenes):
        calls.clear()
        calls.update(path=path, device=device, out=out, **scenes)
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
    # nothing given -> nothing passed: the pipeline's one default, the checkpoint's data.target_val
    assert calls == dict(path=Path("ck.pt"), device="cpu", out=out)
    assert run(["--checkpoint", "ck.pt", "--toy-style", "target_dusk", "--quiet"]) == 0
    assert calls == dict(path=Path("ck.pt"), device="cpu", out=None, style="target_dusk")


def test_held_out_spec_is_the_configs_target_val():
    from pst.config import load_config
    from pst.train.evaluate import held_out_spec

    cfg = load_config("toy", ["data.target_val.seed=9", "data.target_val.n=5"])
    assert held_out_spec(cfg) is cfg.data.target_val
    spec = held_out_spec(cfg, style="target_dusk")
    assert (spec.name, spec.seed, spec.n, spec.style) == ("toy", 9, 5, "target_dusk")
    spec = held_out_spec(cfg, seed=2, n_scenes=3)
    assert (spec.seed, spec.n, spec.style) == (2, 3, "target")
    with pytest.raises(ValueError, match="n_scenes should be >= 1"):
        held_out_spec(cfg, n_scenes=0)
    cs_cfg = load_config("synthia_cityscapes", ["data.source.root=/x", "data.target.root=/x",
                                                "data.target_val.root=/x"])
    assert held_out_spec(cs_cfg).name == "cityscapes"
    with pytest.raises(ValueError, match="need a run on the 'toy' label space"):
        held_out_spec(cs_cfg, seed=1)


def test_checkpoint_mode_without_pipeline(monkeypatch):
    monkeypatch.setitem(sys.modules, "pst.train.evaluate", None)  # import fails as if the module were absent
    with pytest.raises(ValueError, match=r"--checkpoint needs pst.train.evaluate.evaluate_checkpoint"):
        run(["--checkpoint", "x.pt", "--quiet"])
