"""pst.bench._common: the one timer and the one record of the machine that every benchmark uses."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import torch

import pst
from pst.bench._common import machine, time_calls


def test_time_calls_warms_up_then_times_repeat_calls():
    calls = []
    t = time_calls(lambda: calls.append(len(calls)) or len(calls), 3)
    assert len(calls) == 4  # one warm-up, three timed
    assert t.out == 1  # the warm-up call's result
    assert len(t.runs) == 3 and t.median == statistics.median(t.runs) and t.first > 0

    calls.clear()
    t = time_calls(lambda: calls.append(1), 0)  # the first call is the only one
    assert len(calls) == 1 and t.runs == [t.first] and t.median == t.first


def test_time_calls_times_one_call_after_a_long_warm_up():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    t = time_calls(slow, 5, long_s=0.01)
    assert len(calls) == 2 and len(t.runs) == 1 and t.runs[0] >= 0.02


def test_machine_records_commit_torch_cpu_threads_and_load():
    m = machine(peer="1.0")
    assert m["peer"] == "1.0"
    assert m["torch"] == torch.__version__ and m["torch_threads"] == torch.get_num_threads()
    assert m["cores"] >= 1 and m["load_avg_1min_at_start"] >= 0 and "cpu" in m and "gpu" in m
    src = Path(pst.__file__).resolve().parents[1]  # where the pst under test comes from

    def git(*args):
        r = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != src:  # installed, or an sdist: no commit of its own
        assert m["commit"] == ""
        return
    changed = git("diff", "--name-only", "HEAD").splitlines()  # tracked files that differ from the commit
    dirty = any(not f.startswith("benchmarks/results/") for f in changed)  # results are not code
    assert m["commit"] == git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
