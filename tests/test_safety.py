"""Safe by default: checkpoints cannot run code through any entry point, incomplete ones are
refused by name, killed writes leave no temporary files behind a resumed run, and no config
float may be NaN or infinite."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from pst.cli import main as pst_main
from pst.config import load_config
from pst.io import remove_stale_temps, torch_save
from pst.train.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from test_train import TINY, tiny_config


class Evil:
    """Unpickling this runs a shell command (``touch <marker>``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A real (tiny) run folder with source.pt, trained by the CLI."""
    from pst.train.source import train_supervised

    out = tmp_path_factory.mktemp("run")
    train_supervised(tiny_config("source.steps=1", "source.checkpoint_every=1"), out, progress=False)
    return out


def write_evil(path, marker, base: dict | None = None):
    """A checkpoint with the right format and keys, plus an object whose unpickling runs code."""
    state = dict(base or {})
    state.update({"format": FORMAT, "x": Evil(marker)})
    torch_save(path, state)
    return path


def run_cli(argv, capsys):
    code = pst_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_malicious_checkpoint_refused_through_every_entry_point(source_run, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    good = load_checkpoint(source_run / "source.pt")
    base = {k: good[k] for k in ("stage", "config", "step", "total_steps", "model", "optimizer")}
    evil = write_evil(tmp_path / "evil" / "source.pt", marker, base)
    # a run folder whose selftrain/last.pt was replaced, next to a genuine source.pt
    run = tmp_path / "resume"
    (run / "selftrain").mkdir(parents=True)
    (run / "source.pt").write_bytes((source_run / "source.pt").read_bytes())
    write_evil(run / "selftrain" / "last.pt", marker, base)
    write_evil(tmp_path / "unfinished" / "source" / "last.pt", marker, base)  # no source.pt: resumes
    overrides = TINY + ["selftrain.eval_every=0"]
    entry_points = {
        "evaluate file": ["evaluate", "--checkpoint", evil, "--n-scenes", "1", "--quiet"],
        "evaluate folder": ["evaluate", "--checkpoint", evil.parent, "--n-scenes", "1", "--quiet"],
        "export": ["export", "--checkpoint", evil, "--out", tmp_path / "pred", "--limit", "1"],
        "pseudo-label": ["pseudo-label", "--checkpoint", evil, "--out", tmp_path / "pl", "--limit", "1"],
        "selftrain --resume": ["train", "selftrain", "--out", run, "--resume", "--no-progress", *overrides],
        "selftrain --init": ["train", "selftrain", "--out", tmp_path / "st", "--init", evil, "--no-progress",
                             *overrides],
        "source --resume": ["train", "source", "--out", tmp_path / "unfinished", "--resume", "--no-progress",
                            *overrides],
    }
    for name, argv in entry_points.items():
        code, err = run_cli(argv, capsys)
        assert code == 2, (name, err)
        assert "refused" in err and "last.pt" in err or str(evil) in err, (name, err)
        assert "posix.system" in err or "os.system" in err, (name, err)  # says what it would have called
        assert not marker.exists(), f"{name}: the checkpoint ran code"


def test_incomplete_checkpoint_names_file_and_key(source_run, tmp_path, capsys):
    good = load_checkpoint(source_run / "source.pt")
    for missing in ("config", "model"):
        path = tmp_path / f"no_{missing}.pt"
        save_checkpoint(path, {k: v for k, v in good.items() if k not in ("format", missing)})
        code, err = run_cli(["evaluate", "--checkpoint", path, "--n-scenes", "1", "--quiet"], capsys)
        assert code == 2
        assert str(path) in err and f"missing key(s) '{missing}'" in err, err
    # a resumable checkpoint needs the optimizer and the step as well
    run = tmp_path / "run"
    save_checkpoint(run / "source" / "last.pt", {k: v for k, v in good.items() if k not in ("format", "optimizer")})
    code, err = run_cli(["train", "source", "--out", run, "--resume", "--no-progress", *TINY], capsys)
    assert code == 2 and "last.pt" in err and "'optimizer'" in err, err
    path = tmp_path / "bad_model.pt"
    save_checkpoint(path, {**{k: v for k, v in good.items() if k != "format"}, "model": [1, 2]})
    with pytest.raises(ValueError, match="'model' should be a state dict"):
        load_checkpoint(path)


def test_old_checkpoints_with_numpy_scalars_still_load(source_run, tmp_path):
    """save_checkpoint used to store what the pipeline gave it: numpy scalars in ``extra``
    (metric values), lists of dicts. Those load; numpy arrays are refused with a way out."""
    good = load_checkpoint(source_run / "source.pt")
    old = {**good, "extra": {"curve": [{"step": 0, "PQ": np.float64(0.25), "n": np.int64(3)}],
                             "timing": {"iteration": np.float32(0.5)}, "history": [{"loss": 1.0}]}}
    path = tmp_path / "old.pt"
    torch_save(path, old)  # written as the old save_checkpoint did: no conversion
    state = load_checkpoint(path)
    assert state["extra"]["curve"][0]["PQ"] == 0.25 and state["extra"]["curve"][0]["n"] == 3
    assert torch.equal(state["model"][next(iter(state["model"]))], good["model"][next(iter(good["model"]))])
    # the new save_checkpoint writes plain data only: readable without any allowed global
    save_checkpoint(tmp_path / "new.pt", {k: v for k, v in old.items() if k != "format"})
    plain = torch.load(tmp_path / "new.pt", weights_only=True)
    assert type(plain["extra"]["curve"][0]["PQ"]) is float and type(plain["extra"]["curve"][0]["n"]) is int
    torch_save(tmp_path / "array.pt", {**good, "extra": {"a": np.arange(3)}})
    with pytest.raises(ValueError, match=r"refused.*numpy.*convert it once"):
        load_checkpoint(tmp_path / "array.pt")


# ----------------------------------------------------------------------------- temporary files

WRITER = textwrap.dedent("""
    import pathlib, sys, time
    import torch
    from pst.io import torch_save

    class Slow:
        # pickling blocks half-way through the write, until the test kills this process
        def __reduce__(self):
            pathlib.Path(sys.argv[2]).touch()
            time.sleep(600)
            return (int, (0,))

    torch_save(sys.argv[1], {"big": torch.zeros(1 << 20), "slow": Slow()})
""")


def kill_mid_write(path, ready):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the writer exited before blocking"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    ready.unlink()


def test_killed_checkpoint_writes_leave_no_temp_after_resume(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    argv = ["train", "source", "--out", out, "--no-progress", *TINY, "source.steps=2", "source.checkpoint_every=1"]
    assert run_cli([*argv, "--max-steps", "1"], capsys)[0] == 0
    last = out / "source" / "last.pt"
    before = last.read_bytes()
    for _ in range(2):  # two kills: the orphans would pile up
        kill_mid_write(last, tmp_path / "ready")
    temps = sorted(p.name for p in last.parent.glob(".tmp-last.pt.*"))
    assert len(temps) == 2, temps
    assert last.read_bytes() == before  # the old checkpoint is intact
    (last.parent / ".tmp-notes").write_text("not ours")  # other names are left alone
    with caplog.at_level(logging.INFO, logger="pst.io"):
        assert run_cli([*argv, "--resume"], capsys)[0] == 0
    assert not list(out.rglob(".tmp-*.pt.*"))
    assert (last.parent / ".tmp-notes").exists()
    assert "removed 2 stale temporary file(s)" in caplog.text and temps[0] in caplog.text
    assert (out / "source.pt").is_file()


def test_remove_stale_temps_only_our_names(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    ours = [tmp_path / ".tmp-last.pt.k2j_9x0a", tmp_path / "a" / "b" / ".tmp-x_semantic.png.abcdefgh"]
    theirs = [tmp_path / ".tmp-last.pt", tmp_path / ".tmp-x.abc", tmp_path / "last.pt", tmp_path / "a" / ".tmpfile"]
    for p in ours + theirs:
        p.write_text("x")
    assert sorted(remove_stale_temps(tmp_path, recursive=False)) == [ours[0]]
    assert remove_stale_temps(tmp_path) == [ours[1]]
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
    assert remove_stale_temps(tmp_path / "missing") == []


def test_export_and_pseudo_label_clean_their_out_folder(source_run, tmp_path, capsys):
    for cmd, sub in (("export", "semantic"), ("pseudo-label", ".")):
        out = tmp_path / cmd
        (out / sub).mkdir(parents=True, exist_ok=True)
        stale = out / sub / ".tmp-x.png.a1b2c3d4"
        stale.write_bytes(b"half")
        code, err = run_cli([cmd, "--checkpoint", source_run / "source.pt", "--out", out, "--limit", "1"], capsys)
        assert code == 0, err
        assert not stale.exists() and not list(out.rglob(".tmp-*"))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("override", ["selftrain.instances.bandwidth=.nan", "selftrain.instances.bandwidth=nan",
                                      "source.lr=.inf", "selftrain.lr=-.inf", "augment.blur_p=1e999"])
def test_config_floats_must_be_finite(override):
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"{key} should be a finite number, got (nan|inf|-inf)"):
        load_config("toy", [override])


def test_nan_config_stops_the_cli_before_the_run(tmp_path, capsys):
    code, err = run_cli(["train", "source", "--out", tmp_path / "r", "--no-progress", *TINY,
                         "selftrain.instances.bandwidth=.nan"], capsys)
    assert code == 2 and "selftrain.instances.bandwidth should be a finite number, got nan" in err
    assert not (tmp_path / "r").exists()


def test_save_checkpoint_refuses_objects_it_could_not_read_back(tmp_path):
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"checkpoint state\['extra'\]\['curve'\]\[1\] should be a tensor or plain "
                                        r"data .* got test_safety\..*Thing"):
        save_checkpoint(tmp_path / "x.pt", {"model": {}, "extra": {"curve": [1, Thing()]}})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
