"""The thread cap of pst/_threads.py and csrc/cpu/parallel.h: on a machine whose cores other
processes keep busy, torch's kernels run on the calling thread alone inside the cap, the
thread count comes back after it, and the results are those of any other thread count."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import pst.cluster as pc
import pst.morph as pm
from pst._threads import capped_threads

SPIN = "while True: pass"


@contextlib.contextmanager
def busy():
    """One pure-Python busy loop per core, and one more: no core left idle."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        time.sleep(0.5)  # until they run
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture
def busy_machine():
    with busy():
        yield


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_cap_on_a_busy_machine_is_one_thread_and_restored(busy_machine, two_threads):
    time.sleep(0.02)  # past the cached reading of the load (10 ms)
    with capped_threads():
        assert torch.get_num_threads() == 1
        with capped_threads():  # nested: nothing more to cap, nothing to restore early
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_cap_restores_after_an_exception(busy_machine, two_threads):
    time.sleep(0.02)
    with pytest.raises(ValueError, match="inside"):
        with capped_threads():
            raise ValueError("inside")
    assert torch.get_num_threads() == 2


def test_cap_changes_only_the_calling_thread(busy_machine, two_threads):
    time.sleep(0.02)
    seen = []
    with capped_threads():
        t = threading.Thread(target=lambda: (torch.set_num_threads(2), seen.append(torch.get_num_threads())))
        t.start()
        t.join()
        assert torch.get_num_threads() == 1
    assert seen == [2]


def test_one_thread_is_left_alone():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with capped_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_results_do_not_depend_on_the_load(two_threads):
    """The same labels busy (capped, serial) as without the load (whatever the cap decides)."""
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3000, 4)))
    mask = torch.from_numpy(np.random.default_rng(1).random((2, 300, 400)) > 0.6)

    def run():
        return (pc.MeanShift(bandwidth=1.0, bin_seeding=True).fit(x).labels_,
                pc.AgglomerativeClustering(n_clusters=5).fit(x).labels_,
                pm.connected_components(mask, 8), pc.knn_graph(x, 7)[1])

    free = run()
    with busy():
        loaded = run()
    for a, b in zip(free, loaded):
        assert np.array_equal(np.asarray(a), np.asarray(b))
