"""Ctrl-C (SIGINT) stops the compiled ops of pst.cluster: a long fit in a subprocess gets
KeyboardInterrupt within 2 s of the signal and exits with it, and the interrupt machinery leaves Python's own
SIGINT handling as it was outside the ops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pst._interrupt import interruptible, interruptible_ops
from pst._ops import native_library, ops

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess is POSIX")

# A process started in the background by a non-interactive shell (nohup, `cmd &`, some CI runners)
# inherits SIGINT ignored, and Python then leaves it ignored; pst's guard rightly does not arm then.
# These tests are about a program with Python's usual Ctrl-C handling, so they set it up.
_DEFAULT_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

# Each fit runs for minutes uninterrupted (tens of seconds on a fast machine at the least); the
# child prints "ready" just before it, and "done" after it.
FITS = {
    "MeanShift": """
        X = np.random.default_rng(0).normal(size=(100_000, 8))
        fit = lambda: pc.MeanShift(bandwidth=2.0).fit(X)
    """,
    "MeanShiftPP": """
        X = np.random.default_rng(0).normal(size=(400_000, 24))
        fit = lambda: pc.MeanShiftPP(bandwidth=0.5, max_iter=100_000, tol=0.0).fit(X)
    """,
    "AgglomerativeClustering": """
        X = np.random.default_rng(0).normal(size=(100_000, 64))
        fit = lambda: pc.AgglomerativeClustering(n_clusters=3, knn_backend="pst").fit(X)
    """,
    "cluster_instances": """
        emb = torch.randn(1, 8, 512, 512, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        sem = torch.ones(1, 512, 512, dtype=torch.long)
        fit = lambda: pc.cluster_instances(emb, sem, thing_classes=[1], bandwidth=1.5, n_anchors=8192, max_iter=300)
    """,
}


@pytest.mark.parametrize("name", list(FITS))
def test_sigint_stops_a_long_fit(name):
    # the child stamps the moment KeyboardInterrupt reaches it (CLOCK_MONOTONIC: the same clock in
    # both processes), then lets it end the process
    code = (_DEFAULT_SIGINT + "import time\nimport numpy as np, torch\nimport pst.cluster as pc\n"
            + textwrap.dedent(FITS[name])) + (
        "print('ready', flush=True)\n"
        "try:\n    fit()\nexcept KeyboardInterrupt:\n    print('interrupted', time.monotonic(), flush=True)\n    raise\n"
        "print('done', flush=True)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(1.5)  # well inside the compiled op
        assert proc.poll() is None, "the fit ended before the signal: it is not long enough to test anything"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        # the exit itself (interpreter teardown) gets more slack on a loaded machine
        out, err = proc.communicate(timeout=20.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "done" not in out
    assert proc.returncode != 0
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    # raised by the guard around the op (the op saw the signal), not by Python code between ops
    assert "pst/_interrupt.py" in err, err
    stamp = [line for line in out.splitlines() if line.startswith("interrupted ")]
    assert len(stamp) == 1, out
    assert float(stamp[0].split()[1]) - sent < 2.0


def _mean_shift_args(n=2000):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(n, 3)))
    return x, torch.tensor([0, n]), x.clone(), torch.zeros(n, dtype=torch.long), 1.0, 300, 1e-3


def test_sigint_during_an_op_raises_keyboard_interrupt_and_restores_the_handler():
    args = _mean_shift_args()
    with pytest.raises(KeyboardInterrupt) as info:
        with interruptible():
            signal.raise_signal(signal.SIGINT)  # caught by pst's handler: only sets the flag
            ops.mean_shift(*args)
            pytest.fail("the op should have stopped")
    assert info.value.__suppress_context__  # the op's RuntimeError is not shown
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # Python handles SIGINT itself again, and ops run to the end
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    modes, counts, _ = interruptible_ops.mean_shift(*args)
    ref_modes, ref_counts, _ = ops.mean_shift(*args)
    assert torch.equal(modes, ref_modes) and torch.equal(counts, ref_counts)


def test_sigint_after_the_last_check_still_raises():
    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            ops.nearest_center(*_mean_shift_args()[:2], torch.zeros(1, 3, dtype=torch.float64), torch.tensor([0, 1]))
            signal.raise_signal(signal.SIGINT)


def test_c_api_without_python_guard():
    """The op library's own switch (what a libtorch program would use): an armed thread's op stops
    with a RuntimeError naming the interrupt; disarming reports it and clears it."""
    lib = native_library()
    assert lib.pst_sigint_arm() == 1
    try:
        assert lib.pst_sigint_arm() == 0  # not nested
        signal.raise_signal(signal.SIGINT)
        for op, args in [(ops.mean_shift, _mean_shift_args()), (ops.knn_graph, (_mean_shift_args()[0], 3)),
                         (ops.grid_mean_shift, (_mean_shift_args()[0], torch.tensor([0, 2000]), 0.5, 10, 0.0))]:
            with pytest.raises(RuntimeError, match="pst: interrupted"):
                op(*args)
    finally:
        assert lib.pst_sigint_disarm() == 1
    assert lib.pst_sigint_disarm() == 0
    ops.mean_shift(*_mean_shift_args())  # not armed any more


def test_custom_handler_and_other_threads_are_left_alone():
    calls = []
    previous = signal.signal(signal.SIGINT, lambda *a: calls.append(a))
    try:
        with interruptible():  # a handler of the program's own: not replaced
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            ops.mean_shift(*_mean_shift_args())
        signal.raise_signal(signal.SIGINT)
        assert len(calls) == 1
    finally:
        signal.signal(signal.SIGINT, previous)

    armed = []

    def worker():
        guard = interruptible()
        with guard:
            armed.append(guard._armed)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert armed == [False]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
