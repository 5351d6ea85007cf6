"""``pst pseudo-label`` (pst.train.pseudo_files.write_pseudo_labels): the files are a function of
(checkpoint, image, settings) alone, byte for byte, whatever the batch size, the thread
count or where a kill landed; reruns check what they find against the index's checksums."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pst.io import read_png
from pst.train.checkpoint import load_checkpoint, net_from_checkpoint
from pst.train.data import build_dataset, step_generator
from pst.train.pseudo import SemanticPseudoSettings, semantic_pseudo_labels
from pst.train.pseudo_files import (INDEX_NAME, PARTIAL_NAME, PSEUDO_KINDS, _PseudoIndex, _reproducible_kernels,
                                    write_pseudo_labels)
from tests.test_train import tiny_config

ROOT = Path(__file__).resolve().parents[1]
N = 8  # images of the tiny target set


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny source checkpoint trained here, with low thresholds so that most pixels are kept
    and the thing masks hold instances (files worth comparing)."""
    from pst.train.source import train_supervised

    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config("source.steps=40", "source.checkpoint_every=40", "selftrain.instances.min_size=4",
                      "selftrain.threshold_min=0.05", "selftrain.threshold_scale=0.3",
                      "selftrain.thing_objectness=0.1")  # a weak gate: the 40-step U-Net is unsure
    train_supervised(cfg, out, progress=False)
    return out / "source.pt"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    """An uninterrupted run, one image per batch."""
    out = tmp_path_factory.mktemp("ref")
    r = write_pseudo_labels(checkpoint, out, batch_size=1, limit=N, progress=False)
    assert r == {"written": N, "skipped": 0, "images": N, "out": str(out)}
    files = _files(out)
    assert len(files) == 3 * N
    # worth comparing: pixels kept, several classes, instances in most images
    sem = [read_png(out / n) for n in files if n.endswith("_semantic.png")]
    inst = [read_png(out / n) for n in files if n.endswith("_instances.png")]
    assert np.mean([(s != 255).mean() for s in sem]) > 0.5 and len(np.unique(np.stack(sem))) > 4
    assert sum(int(i.max()) > 0 for i in inst) >= N // 2
    return files


@pytest.mark.parametrize("batch_size", [4, 8])
def test_files_do_not_depend_on_the_batch_size(checkpoint, reference, tmp_path, batch_size):
    write_pseudo_labels(checkpoint, tmp_path, batch_size=batch_size, limit=N, progress=False)
    assert _files(tmp_path) == reference


def test_files_do_not_depend_on_the_thread_count(checkpoint, reference, tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=N, progress=False)
        assert torch.get_num_threads() == 2  # given back as it was
    finally:
        torch.set_num_threads(threads)
    assert _files(tmp_path) == reference


def test_reproducible_kernels_give_the_same_logits_whatever_the_thread_count(checkpoint):
    """The network's raw outputs, bit for bit (at the toy scale the files above would not show
    a last-bit difference of the logits; on CPU, oneDNN's convolutions differ in their last
    bits between thread counts outside this context)."""
    net, cfg = net_from_checkpoint(load_checkpoint(checkpoint), which="model")
    x = build_dataset(cfg.data.target, cfg.space, cfg.data.size)[0]["image"][None]
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            with torch.no_grad(), _reproducible_kernels(torch.device("cpu")):
                assert torch.get_num_threads() == 1
                outs.append(net.semantic(x))
            assert torch.get_num_threads() == t
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_files_are_the_training_pseudo_labels_of_the_image_alone(checkpoint, reference):
    """The semantic and confidence files of an image are what semantic_pseudo_labels (the
    training path) gives for that image alone, with the views seeded by its name."""
    state = load_checkpoint(checkpoint)
    net, cfg = net_from_checkpoint(state, which="model")
    st = cfg.selftrain
    ds = build_dataset(cfg.data.target, cfg.space, cfg.data.size)
    for i in (0, 5):
        sample = ds[i]
        name = sample["name"]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sp = semantic_pseudo_labels(net.semantic, sample["image"][None], None,
                                        SemanticPseudoSettings.from_config(st),
                                        generator=step_generator(cfg.seed, "pseudo-label", "views", name))
        finally:
            torch.set_num_threads(threads)
        from io import BytesIO

        from PIL import Image

        sem = np.array(Image.open(BytesIO(reference[f"{name}_semantic.png"])))
        conf = np.array(Image.open(BytesIO(reference[f"{name}_confidence.png"])))
        np.testing.assert_array_equal(sem, sp.labels[0].numpy())
        np.testing.assert_array_equal(conf, np.round(sp.confidence[0].clamp(0, 1).numpy() * 255).astype(np.uint8))


def test_a_kill_inside_a_batch_then_a_rerun_gives_the_uninterrupted_files(checkpoint, reference, tmp_path):
    out = tmp_path / "pl"
    code = (f"from pst.train.pseudo_files import write_pseudo_labels\n"
            f"write_pseudo_labels({str(checkpoint)!r}, {str(out)!r}, batch_size=4, limit={N}, progress=False, "
            f"flush_every=0)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=err)
    try:
        deadline = time.monotonic() + 300
        # kill inside the second batch: once image 5 of 8 is written (batch 1 = images 1-4 is indexed)
        while len(list(out.glob("*_instances.png"))) < 5:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the pseudo-label process wrote nothing in 300 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(out.glob("*_instances.png")))
    assert 5 <= done < N, f"the kill landed after {done} of {N} images"
    assert not (out / INDEX_NAME).exists()  # no index claims an unfinished folder
    partial = json.loads((out / PARTIAL_NAME).read_text())
    assert partial["complete"] is False and len(partial["entries"]) >= 4

    r = write_pseudo_labels(checkpoint, out, batch_size=4, limit=N, progress=False)
    assert r["skipped"] == len(partial["entries"]) and r["written"] == N - r["skipped"]
    assert _files(out) == reference
    assert (out / INDEX_NAME).is_file() and not (out / PARTIAL_NAME).exists()
    assert not list(out.glob(".tmp-*"))


def test_changed_files_are_redone_and_a_finished_folder_is_left_as_is(checkpoint, reference, tmp_path):
    write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=N, progress=False)
    index = tmp_path / INDEX_NAME
    doc = json.loads(index.read_text())
    assert doc["complete"] is True and len(doc["images"]) == N
    for stem in doc["images"]:
        for kind in PSEUDO_KINDS:
            assert doc["entries"][stem]["sha256"][kind] is not None
    stamp = index.stat().st_mtime_ns

    # a finished folder with a matching index: nothing rewritten
    r = write_pseudo_labels(checkpoint, tmp_path, batch_size=8, limit=N, progress=False)
    assert (r["written"], r["skipped"]) == (0, N)
    assert index.stat().st_mtime_ns == stamp and _files(tmp_path) == reference

    a, b, c = doc["images"][1], doc["images"][4], doc["images"][6]
    p = tmp_path / f"{a}_semantic.png"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated
    p = tmp_path / f"{b}_confidence.png"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    p.write_bytes(bytes(data))
    (tmp_path / f"{c}_instances.png").write_bytes(reference[f"{a}_instances.png"])  # another image's valid file
    r = write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=N, progress=False)
    assert (r["written"], r["skipped"]) == (3, N - 3)
    assert _files(tmp_path) == reference


def test_files_without_an_index_are_redone(checkpoint, reference, tmp_path):
    """Files of a run killed before it saved any progress, here the files of another image."""
    stems = sorted({n.rsplit("_", 1)[0] for n in reference})
    for kind in PSEUDO_KINDS:
        (tmp_path / f"{stems[0]}_{kind}.png").write_bytes(reference[f"{stems[1]}_{kind}.png"])
    r = write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=N, progress=False)
    assert (r["written"], r["skipped"]) == (N, 0)
    assert _files(tmp_path) == reference


def test_a_longer_run_completes_a_shorter_one(checkpoint, reference, tmp_path):
    write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=3, progress=False)
    r = write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=N, progress=False)
    assert (r["written"], r["skipped"]) == (N - 3, 3)
    assert _files(tmp_path) == reference
    # a shorter rerun keeps the other images in the index
    write_pseudo_labels(checkpoint, tmp_path, batch_size=4, limit=2, progress=False)
    assert len(json.loads((tmp_path / INDEX_NAME).read_text())["images"]) == N


def test_a_folder_of_other_settings_is_refused(checkpoint, tmp_path):
    write_pseudo_labels(checkpoint, tmp_path, limit=2, progress=False)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=r"other settings \(dataset: 'target' there, 'target_val' now\).*--overwrite"):
        write_pseudo_labels(checkpoint, tmp_path, dataset="target_val", limit=2, progress=False)
    assert _files(tmp_path) == before  # nothing touched
    r = write_pseudo_labels(checkpoint, tmp_path, dataset="target_val", limit=2, progress=False, resume=False)
    assert r["written"] == 2
    assert json.loads((tmp_path / INDEX_NAME).read_text())["settings"]["dataset"] == "target_val"

    # an index of the older format (no settings, no checksums)
    (tmp_path / INDEX_NAME).write_text(json.dumps({"checkpoint": str(checkpoint), "images": ["x"]}))
    with pytest.raises(ValueError, match="is not a pst-pseudo-labels/2 index"):
        write_pseudo_labels(checkpoint, tmp_path, dataset="target_val", limit=2, progress=False)
    (tmp_path / INDEX_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not a readable pseudo-label index"):
        write_pseudo_labels(checkpoint, tmp_path, dataset="target_val", limit=2, progress=False)


def test_bad_arguments_and_colliding_names(checkpoint, tmp_path):
    for kw, msg in (({"batch_size": 0}, "batch_size should be an int >= 1, got 0"),
                    ({"limit": -1}, "limit should be an int >= 0, got -1"),
                    ({"flush_every": float("nan")}, "flush_every should be a number of seconds >= 0")):
        with pytest.raises(ValueError, match=msg):
            write_pseudo_labels(checkpoint, tmp_path, progress=False, **kw)
    index = _PseudoIndex(tmp_path, {}, "ck")
    index.claim("a_b", "a b")
    with pytest.raises(ValueError, match=r"images 'a b' and 'a/b' would both be written as a_b_\*\.png"):
        index.claim("a_b", "a/b")
