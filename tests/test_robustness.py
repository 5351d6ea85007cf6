"""Nothing lost, nothing silently wrong (issue 17): one writer per run folder, resume checks
the config it continues, refused writes are one clear line, exports are complete or visibly
not, files follow the umask."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pst.cli import main as pst_main
from pst.config import RESUME_RULES, Config, _flatten, config_changes, config_to_dict, load_config, resume_rule
from pst.io import WriteError, save_png, torch_save, write_json
from pst.train.checkpoint import load_checkpoint, save_checkpoint
from pst.train.runlock import LOCK_NAME, RunFolderBusy, hold_run_folder, join_parent_hold, lock_holder
from test_train import TINY, tiny_config

REPO = Path(__file__).resolve().parent.parent


def run_cli(argv, capsys):
    code = pst_main([str(a) for a in argv])
    return code, capsys.readouterr().err


def last_line(err: str) -> str:
    """The error line (progress bars may come before it on stderr)."""
    return err.strip().splitlines()[-1]


def pst_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory):
    """A tiny finished source run: <run>/source.pt."""
    from pst.train.source import train_supervised

    out = tmp_path_factory.mktemp("src")
    return train_supervised(tiny_config("source.steps=1"), out, progress=False)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), the lock file aside."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def _fail_fsync_after(monkeypatch, n: int, err: int = errno.ENOSPC):
    """Every atomic write fsyncs its file once: let ``n`` writes through, refuse the next ones
    as a full disk would."""
    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n:
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


# --------------------------------------------------------------------------- one writer per folder

def test_two_processes_on_one_folder_one_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    procs = []
    for seed, steps in ((0, 4), (1, 5)):  # started together, different seeds and lengths
        argv = [sys.executable, "-m", "pst", "train", "source", "--out", str(out), "--no-progress", *TINY,
                f"seed={seed}", f"source.steps={steps}"]
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=pst_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 1], [(p.returncode, err[-2000:]) for p, _, err in results]
    (winner, _, _), = [r for r in results if r[0].returncode == 0]
    (loser, _, err), = [r for r in results if r[0].returncode == 1]
    seed = 0 if winner is procs[0] else 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"pst train: error: {out}: in use by another pst process (pid {winner.pid} on ")
    assert "command: " in line and f"seed={seed}" in line and "started 20" in line
    assert "Traceback" not in err
    # the winner's result is whole and its own
    state = load_checkpoint(out / "source.pt")
    assert state["config"]["seed"] == seed and state["step"] == (4 if seed == 0 else 5)
    assert lock_holder(out) is None  # released cleanly


def test_refused_process_waits_for_the_holders_record(tmp_path):
    """The holder locks the file first and writes its record just after: a process refused in
    that gap (the file still empty, then half written) waits for the record, and names the holder."""
    import fcntl
    import threading

    folder = tmp_path / "run"
    folder.mkdir()
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file of the lock: refuses this process too
    record = json.dumps({"pid": 4242, "host": "elsewhere", "started": "2026-01-01T00:00:00+00:00",
                         "command": "pst train source"}).encode()

    def write_late():
        time.sleep(0.2)
        os.pwrite(fd, record[:10], 0)  # a torn write first
        time.sleep(0.2)
        os.pwrite(fd, record + b"\n", 0)

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        with pytest.raises(RunFolderBusy, match=r"in use by another pst process \(pid 4242 on elsewhere, started "
                                                r"2026-01-01T00:00:00\+00:00, command: pst train source\)"):
            with hold_run_folder(folder):
                pass
    finally:
        writer.join()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "run"
    # a process that takes the lock and dies without releasing it
    code = textwrap.dedent(f"""
        import os, signal
        from pst.train.runlock import hold_run_folder
        with hold_run_folder({str(folder)!r}):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    dead = subprocess.run([sys.executable, "-c", code], env=pst_env())
    assert dead.returncode == -signal.SIGKILL
    old = lock_holder(folder)  # still recorded, but nobody holds the lock
    assert old is not None and old["command"] == "-c" and old["pid"] != os.getpid()
    with caplog.at_level(logging.WARNING, logger="pst.train.runlock"):
        with hold_run_folder(folder):
            assert lock_holder(folder)["pid"] == os.getpid()
    assert f"taking over the lock left by a process that ended without releasing it (pid {old['pid']} " in caplog.text
    assert lock_holder(folder) is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pst.train.runlock"), hold_run_folder(folder):
        pass
    assert "taking over" not in caplog.text  # a clean release leaves nothing to take over


def _hold_and_wait(folder: str, ready, go) -> None:
    with hold_run_folder(folder):
        ready.set()
        go.wait(60)


def _child_joins(folder: str, queue) -> None:
    """A child process of the holder: joining works, taking the lock as a stranger does not."""
    try:
        with hold_run_folder(folder):
            queue.put("took it")
    except RunFolderBusy as exc:
        queue.put(f"refused: {exc}")
    with join_parent_hold(folder), hold_run_folder(folder):  # re-entrant once joined
        queue.put("joined")


def test_lock_is_reentrant_refuses_others_and_lets_the_holders_child_join(tmp_path):
    import multiprocessing

    folder = tmp_path / "run"
    ctx = multiprocessing.get_context("spawn")
    with hold_run_folder(folder), hold_run_folder(folder):  # re-entrant in one process
        holder = lock_holder(folder)
        assert holder["pid"] == os.getpid()
        q = ctx.Queue()
        child = ctx.Process(target=_child_joins, args=(str(folder), q))
        child.start()
        child.join(120)
        answers = [q.get(timeout=5), q.get(timeout=5)]
        assert child.exitcode == 0
        assert answers[0].startswith(f"refused: {folder}: in use by another pst process (pid {os.getpid()} ")
        assert answers[1] == "joined"
    assert lock_holder(folder) is None
    # a process that is not the holder's child cannot join: here the holder is a sibling
    ready, go = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_and_wait, args=(str(folder), ready, go))
    other.start()
    try:
        assert ready.wait(120)
        with pytest.raises(RunFolderBusy, match=rf"pid {other.pid} on "):
            with join_parent_hold(folder):
                pass
    finally:
        go.set()
        other.join(60)


def test_every_writer_refuses_a_held_folder(source_ckpt, tmp_path, capsys):
    out = tmp_path / "busy"
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_and_wait, args=(str(out), ready, go))
    other.start()
    try:
        assert ready.wait(120)
        for argv in (["train", "source", "--out", out, *TINY],
                     ["train", "selftrain", "--out", out, "--init", source_ckpt, *TINY],
                     ["train", "oracle", "--out", out, "--resume", *TINY],
                     ["demo", "--out", out, *TINY],
                     ["pseudo-label", "--checkpoint", source_ckpt, "--out", out],
                     ["export", "--checkpoint", source_ckpt, "--out", out]):
            code, err = run_cli(argv, capsys)
            assert code == 1 and f"in use by another pst process (pid {other.pid} " in err, (argv, err)
    finally:
        go.set()
        other.join(60)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nobody wrote anything


# --------------------------------------------------------------------------- resume checks its config

def test_every_config_key_is_classified_for_resume():
    keys = _flatten(config_to_dict(Config()))
    assert [k for k in keys if resume_rule(k) is None] == []
    assert {r[1] for r in RESUME_RULES} == {"allow", "refuse"}
    for key, verdict in (("model.width", "refuse"), ("label_space", "refuse"), ("categories", "refuse"),
                         ("data.size", "refuse"), ("data.source.n", "refuse"), ("loss.delta_v", "refuse"),
                         ("source.steps", "allow"), ("source.log_every", "allow"), ("eval.batch_size", "allow"),
                         ("source.checkpoint_every", "allow"), ("data.source.root", "allow"), ("threads", "allow"),
                         ("device", "allow"), ("selftrain.steps", "allow"), ("selftrain.lr", "refuse")):
        assert resume_rule(key)[1] == verdict, key


def test_config_changes_by_stage_and_for_init():
    old = config_to_dict(load_config("toy"))
    new = load_config("toy", ["model.width=8", "source.steps=5", "data.target.n=3", "selftrain.lr=0.1", "threads=2"])
    refused, allowed = config_changes(old, new, stage="source")
    assert [(k, a, b) for k, a, b, _ in refused] == [("model.width", 16, 8)]
    assert [k for k, *_ in allowed] == ["data.target.n", "selftrain.lr", "source.steps", "threads"]
    refused, _ = config_changes(old, new, stage="selftrain")
    assert [k for k, *_ in refused] == ["data.target.n", "model.width", "selftrain.lr"]
    refused, allowed = config_changes(old, new, only=("label_space", "categories", "model.*"))
    assert [k for k, *_ in refused] == ["model.width"] and allowed == []
    # a checkpoint written before a key existed: the key had its default then, no difference now
    del old["selftrain"]["consistency_anchors"]
    assert config_changes(old, load_config("toy"), stage="selftrain") == ([], [])


def test_resume_refuses_a_changed_model_and_names_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "source", "--out", out, "--no-progress", *TINY]
    assert run_cli([*argv, "--max-steps", "2"], capsys)[0] == 0
    last = out / "source" / "last.pt"
    before = last.read_bytes()
    code, err = run_cli([*argv, "model.width=4", "loss.delta_d=2.0", "--resume"], capsys)
    assert code == 2 and "Traceback" not in err and "size mismatch" not in err
    assert f"{last}: cannot resume this checkpoint with a different config" in err
    assert "  loss.delta_d: 1.5 in the checkpoint, 2.0 now (what is minimised)" in err
    assert "  model.width: 8 in the checkpoint, 4 now (network architecture and shapes)" in err
    assert len(err.strip().splitlines()) == 4
    assert last.read_bytes() == before


def test_resume_allows_and_logs_steps_and_logging(tmp_path, caplog):
    from pst.train.source import train_supervised

    out = tmp_path / "run"
    assert train_supervised(tiny_config(), out, max_steps=2, progress=False) is None
    with caplog.at_level(logging.INFO, logger="pst.train.checkpoint"):
        final = train_supervised(tiny_config("source.steps=3", "source.log_every=1", "eval.batch_size=4"), out,
                                 resume=True, progress=False)
    assert "settings changed since the checkpoint (allowed): eval.batch_size 8 -> 4; source.log_every 2 -> 1; " \
           "source.steps 4 -> 3" in caplog.text
    assert load_checkpoint(final)["step"] == 3
    # a finished stage is kept on --resume only if it fits the config too
    with pytest.raises(ValueError, match=rf"{re.escape(str(final))}: cannot resume .*\n  model.width: 8 in the "
                                         r"checkpoint, 4 now"):
        train_supervised(tiny_config("model.width=4"), out, resume=True, progress=False)


def test_selftrain_init_compares_only_what_the_weights_depend_on(source_ckpt, tmp_path):
    from pst.train.selftrain import self_train

    with pytest.raises(ValueError, match=r"cannot initialise from this checkpoint with a different config; .*\n"
                                         r"  model.embed_dim: 8 in the checkpoint, 4 now"):
        self_train(tiny_config("model.embed_dim=4", "source.lr=0.5"), tmp_path / "st", init=source_ckpt,
                   progress=False)
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == [LOCK_NAME]
    refused, _ = config_changes(load_checkpoint(source_ckpt)["config"], tiny_config("source.lr=0.5", "seed=3"),
                                only=("label_space", "categories", "model.*"))
    assert refused == []


# --------------------------------------------------------------------------- refused writes: one line

def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_old_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", "source", "--out", out, "--no-progress", *TINY, "source.checkpoint_every=1"]
    assert run_cli([*argv, "--max-steps", "1"], capsys)[0] == 0
    last = out / "source" / "last.pt"
    _fail_fsync_after(monkeypatch, 0)
    code, err = run_cli([*argv, "--resume"], capsys)
    assert code == 1 and "Traceback" not in err
    assert last_line(err) == f"pst train: error: no space left on device while writing {last}"
    monkeypatch.undo()
    assert load_checkpoint(last)["step"] == 1
    assert not list(out.rglob(".tmp-*"))


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 9 MB file system: one tiny checkpoint (about 6 MB) fits, a second copy does not."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=9m")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_real_full_disk(small_disk, capsys):
    out = small_disk / "run"
    argv = ["train", "source", "--out", out, "--no-progress", *TINY, "source.checkpoint_every=1"]
    code, err = run_cli([*argv, "--max-steps", "3"], capsys)
    last = out / "source" / "last.pt"
    assert code == 1 and "Traceback" not in err
    assert last_line(err) == f"pst train: error: no space left on device while writing {last}"
    assert load_checkpoint(last)["step"] == 1  # the one that fitted
    assert not list(out.rglob(".tmp-*"))


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into: chmod where that stops the writer, else (root) a
    read-only tmpfs."""
    ro = tmp_path / "ro"
    if os.geteuid() != 0:
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    _mount_tmpfs(ro, "ro,size=1m")
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


def test_read_only_folder_is_one_line(read_only_dir, source_ckpt, capsys):
    cause = "permission denied" if os.geteuid() != 0 else "read-only file system"
    for argv, cmd in ((["train", "source", *TINY], "train"), (["export", "--checkpoint", source_ckpt], "export"),
                      (["pseudo-label", "--checkpoint", source_ckpt], "pseudo-label")):
        code, err = run_cli([*argv, "--out", read_only_dir / "out"], capsys)
        assert code == 1 and "Traceback" not in err
        assert last_line(err) == f"pst {cmd}: error: {cause} while creating the lock file " \
                                 f"{read_only_dir / 'out' / LOCK_NAME}"


def test_full_disk_in_pseudo_label_and_export(source_ckpt, tmp_path, capsys, monkeypatch):
    _fail_fsync_after(monkeypatch, 2)
    code, err = run_cli(["pseudo-label", "--checkpoint", source_ckpt, "--out", tmp_path / "pl"], capsys)
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(f"pst pseudo-label: error: no space left on device while writing {tmp_path / 'pl'}/"
                        r"[\w-]+_(semantic|confidence|instances)\.png", last_line(err))
    _fail_fsync_after(monkeypatch, 2)
    code, err = run_cli(["export", "--checkpoint", source_ckpt, "--out", tmp_path / "ex"], capsys)
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(f"pst export: error: no space left on device while writing "
                        f"{tmp_path / 'ex' / '.pst-export-partial'}/" r"(panoptic|semantic|instance)/[\w/.-]+",
                        last_line(err))


def test_torch_save_names_the_cause_of_a_refused_write(tmp_path, monkeypatch):
    """torch's zip writer reports a failed write as "unexpected pos"; torch_save keeps the cause."""
    import io

    real_write = io.BufferedWriter.write
    calls = [0]

    class FullFile(io.BufferedWriter):
        def write(self, data):
            calls[0] += 1
            if calls[0] > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(self, data)

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullFile(io.FileIO(fd, "w")))
    with pytest.raises(WriteError, match=rf"^no space left on device while writing {tmp_path / 'x.pt'}$") as info:
        torch_save(tmp_path / "x.pt", {"w": torch.zeros(300_000)})
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value.__cause__, RuntimeError)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- exports complete or visibly not

def test_interrupted_export_is_not_published_and_a_rerun_equals_a_clean_export(source_ckpt, tmp_path, capsys,
                                                                               monkeypatch):
    args = ["--checkpoint", source_ckpt, "--limit", "3"]
    writes = _fail_fsync_after(monkeypatch, 10**9)  # counts the files an export writes
    assert run_cli(["export", *args, "--out", tmp_path / "clean"], capsys)[0] == 0
    monkeypatch.undo()
    clean = _tree(tmp_path / "clean")
    assert {k.split("/")[0] for k in clean} == {"panoptic", "panoptic.json", "semantic", "instance", "export.json"}
    manifest = json.loads(clean["export.json"])
    assert manifest["images"] == 3 and manifest["formats"] == ["panoptic", "semantic", "instance"]

    out = tmp_path / "cut"
    _fail_fsync_after(monkeypatch, 4)  # fails in the middle of the second image
    assert run_cli(["export", *args, "--out", out], capsys)[0] == 1
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [".pst-export-partial", LOCK_NAME]  # nothing looks finished
    assert run_cli(["export", *args, "--out", out], capsys)[0] == 0
    assert _tree(out) == clean
    # the disk is full when the last file, the manifest, is written: nothing is moved into place
    _fail_fsync_after(monkeypatch, writes[0] - 1)
    code, err = run_cli(["export", *args, "--out", tmp_path / "last"], capsys)
    monkeypatch.undo()
    assert code == 1 and last_line(err) == ("pst export: error: no space left on device while writing "
                                            f"{tmp_path / 'last' / '.pst-export-partial' / 'export.json'}")
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == [".pst-export-partial", LOCK_NAME]

    # an export over a finished one replaces its entries; interrupted, it leaves the old one whole
    _fail_fsync_after(monkeypatch, 1)
    assert run_cli(["export", *args, "--out", out, "--formats", "semantic"], capsys)[0] == 1
    monkeypatch.undo()
    assert {k: v for k, v in _tree(out).items() if not k.startswith(".pst-export-partial")} == clean
    assert run_cli(["export", *args, "--out", out, "--formats", "semantic"], capsys)[0] == 0
    assert json.loads((out / "export.json").read_text())["formats"] == ["semantic"]
    assert not (out / ".pst-export-partial").exists()


def test_export_killed_in_the_middle_then_rerun(source_ckpt, tmp_path, capsys):
    args = ["--checkpoint", str(source_ckpt), "--limit", "4"]
    assert run_cli(["export", *args, "--out", tmp_path / "clean"], capsys)[0] == 0
    out = tmp_path / "cut"
    # the real export, killed (SIGKILL) once it has written its second semantic PNG
    code = textwrap.dedent(f"""
        import os, signal, sys
        import pst.formats.cityscapes as cs
        from pst.cli import main
        write, done = cs.export_semantic, []
        def export_semantic(*a, **k):
            write(*a, **k)
            done.append(1)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        cs.export_semantic = export_semantic
        sys.exit(main(["export", *{args!r}, "--out", {str(out)!r}]))
    """)
    killed = subprocess.run([sys.executable, "-c", code], env=pst_env(), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list(out.glob(".pst-export-partial/semantic/*.png"))) == 2
    assert sorted(p.name for p in out.iterdir()) == [".pst-export-partial", LOCK_NAME]  # nothing looks finished
    assert run_cli(["export", *args, "--out", out], capsys)[0] == 0
    assert _tree(out) == _tree(tmp_path / "clean")


# --------------------------------------------------------------------------- umask

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, umask):
    import numpy as np

    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "c.pt", {"config": {}, "model": {"w": torch.zeros(2)}})
        write_json(tmp_path / "r.json", {"a": 1})
        save_png(tmp_path / "p.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    for name in ("c.pt", "r.json", "p.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# --------------------------------------------------------------------------- data check

def test_data_check_counts_only_what_decoded(tmp_path, capsys):
    from test_data import _corrupt, make_cityscapes

    paths = make_cityscapes(tmp_path / "cs", files=(("aachen", 9),))
    _corrupt(paths[4][0])
    code = pst_main(["data", "check", "--dataset", "cityscapes", "--root", str(tmp_path / "cs"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert (f"9 samples found, 8 decoded, 1 failed: {paths[4][0]}: not a readable image" in out), out
    assert out.strip().endswith("FAILED")
