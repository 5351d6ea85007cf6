"""Every compiled op through ``torch.library.opcheck``, and its fake kernel (``pst/_meta.py``)
against its real kernels on bad arguments.

opcheck runs an op on sample inputs and checks its schema (no input mutated or aliased that the
schema does not say), its fake kernel (outputs of the real kernel's shapes, dtypes, strides and
devices), its autograd registration, and the op under AOTAutograd with dynamic shapes. The
fakes also check each op's arguments (``check_<op>_args`` in ``csrc/<op>.cpp``); the second test
gives every op bad arguments and wants the same exception type and message from the fake as from
the CPU kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.utils._pytree import tree_map

from pst._ops import ops

# ops that are not part of the op contract: _trust_inputs switches a thread-local flag (no tensors)
PRIVATE_OPS = {"_trust_inputs"}


def _points(n: int, d: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) + 3 * torch.randint(0, 3, (n, 1), generator=g)).to(dtype)


def _instances(b: int = 2, h: int = 29, w: int = 37) -> torch.Tensor:
    """[b, h, w] int64: blocks of 7 ids (touching, some at the border), with holes punched in."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ids = ((yy // 6) * 3 + xx // 8 + torch.arange(b).view(b, 1, 1)) % 7
    return torch.where(torch.rand(b, h, w, generator=g) < 0.05, 0, ids)


def _knn_csr(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, idx = ops.knn_graph(x, k)
    return torch.arange(0, x.shape[0] * k + 1, k), idx.reshape(-1).contiguous()


def samples() -> dict[str, list[tuple]]:
    """Per op, argument tuples on CPU tensors."""
    x = _points(40, 2)
    off = torch.tensor([0, 15, 40])
    seeds = x[::4].contiguous()
    seed_segment = (torch.arange(0, 40, 4) >= 15).long()
    centers = _points(7, 2, seed=1)
    inst = _instances()
    tree_x = _points(15, 2, seed=2)
    rowptr, col = _knn_csr(tree_x, 3)
    children, _ = ops.agglomerative_tree(tree_x, rowptr, col, "ward", 1)
    g = torch.Generator().manual_seed(3)
    w, merge_w = torch.rand(40, dtype=torch.float64, generator=g), torch.rand(7, dtype=torch.float64, generator=g)
    return {
        "nearest_center": [(x, off, centers, torch.tensor([0, 3, 7])),
                           (x.float(), off, centers.float(), torch.tensor([0, 0, 7]))],
        "mean_shift": [(x, off, seeds, seed_segment, 1.0, 50, 1e-4),
                       (x.float(), off, seeds.float(), seed_segment, 0.5, 0, 0.0)],
        "grid_mean_shift": [(x, off, 1.0, 10, 1e-4), (x[:0].float(), torch.tensor([0]), 2.0, 1, 0.0)],
        "merge_modes": [(centers, merge_w, torch.tensor([0, 0, 0, 1, 1, 1, 1]), 2.0)],
        "sample_anchors": [(w, x, off, 4, 1.0, 7), (w.float(), x.float(), off, 0, 0.0, 0)],
        "knn_graph": [(torch.randn(20, 3, dtype=torch.float64, generator=g), 4), (x.float(), 1)],
        "agglomerative_tree": [(tree_x, rowptr, col, "ward", 3), (tree_x.float(), rowptr, col, "single", 1)],
        "agglomerative_labels": [(children, 15, 10), (children[:0], 4, 0)],
        "connected_components": [(inst > 0, 4), (inst > 2, 8)],
        "morph_refine": [(inst, 1, 2, True, True, 2, True, 8), (inst.to(torch.uint8), 0, 1, False, False, 0, False, 4)],
    }


SAMPLES = samples()
CASES = [pytest.param(op, i, id=f"{op}-{i}") for op, args in SAMPLES.items() for i in range(len(args))]


def _on(device: str, args: tuple) -> tuple:
    return tree_map(lambda a: a.to(device) if isinstance(a, torch.Tensor) else a, args)


def test_every_op_has_samples():
    defined = {name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("pst::")}
    assert defined - PRIVATE_OPS == set(SAMPLES)
    assert {op for op, _ in BAD} == set(SAMPLES)


@pytest.mark.parametrize(("op", "i"), CASES)
def test_opcheck(op: str, i: int, device: str):
    """All of opcheck's checks (test_schema, test_autograd_registration, test_faketensor,
    test_aot_dispatch_dynamic) on every op. The two ops whose output sizes depend on the input
    values (grid_mean_shift: the number of modes; agglomerative_tree: the number of merges, fewer
    than N - n_clusters when the graph is cut) need no narrower test_utils: their fakes return
    unbacked sizes (get_ctx().new_dynamic_size()), which test_faketensor and AOTAutograd accept."""
    torch.library.opcheck(getattr(ops, op).default, _on(device, SAMPLES[op][i]))


def _fake_run(overload, args: tuple):
    """The op on fake copies of args (static sizes; the shape environment holds the unbacked sizes
    of data-dependent outputs)."""
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        fake = tree_map(lambda a: mode.from_tensor(a, static_shapes=True) if isinstance(a, torch.Tensor) else a, args)
        return overload(*fake)


@pytest.mark.parametrize(("op", "i"), CASES)
def test_fake_outputs_match_real(op: str, i: int):
    """Dtypes, ranks and devices always; sizes where they do not depend on the data (the others are
    unbacked symbols)."""
    overload = getattr(ops, op).default
    real, fake = overload(*SAMPLES[op][i]), _fake_run(overload, SAMPLES[op][i])
    real, fake = (real, fake) if isinstance(real, tuple) else ((real,), (fake,))
    assert len(real) == len(fake)
    for r, f in zip(real, fake):
        assert (f.dtype, f.dim(), f.device) == (r.dtype, r.dim(), r.device)
        sizes = [(fs, rs) for fs, rs in zip(f.shape, r.shape) if isinstance(fs, int)]
        assert all(fs == rs for fs, rs in sizes), (f.shape, r.shape)
        assert len(sizes) >= f.dim() - 1  # at most one data-dependent size per output


_X = _points(10, 2)
_OFF = torch.tensor([0, 4, 10])
_INST = _instances(1, 6, 7)
BAD = [
    ("nearest_center", lambda: (_X, _OFF, _X.float(), _OFF)),
    ("nearest_center", lambda: (_X, _OFF, _X, torch.tensor([0, 10]))),
    ("nearest_center", lambda: (_X, _OFF.int(), _X, _OFF)),
    ("mean_shift", lambda: (_X, _OFF, _X, torch.zeros(9, dtype=torch.long), 1.0, 5, 0.0)),
    ("mean_shift", lambda: (_X, _OFF, _X[:, :1], torch.zeros(10, dtype=torch.long), 1.0, 5, 0.0)),
    ("mean_shift", lambda: (_X, _OFF, _X, torch.zeros(10, dtype=torch.long), 0.0, 5, 0.0)),
    ("mean_shift", lambda: (_X, _OFF, _X, torch.zeros(10, dtype=torch.long), 1.0, 5, float("nan"))),
    ("grid_mean_shift", lambda: (_X, _OFF, 1.0, 0, 0.0)),
    ("grid_mean_shift", lambda: (_X.long(), _OFF, 1.0, 1, 0.0)),
    ("grid_mean_shift", lambda: (_X, torch.zeros(0, dtype=torch.long), 1.0, 1, 0.0)),
    ("merge_modes", lambda: (_X, torch.ones(10), torch.zeros(10, dtype=torch.long), 1.0)),
    ("merge_modes", lambda: (_X, torch.ones(10, dtype=torch.float64), torch.zeros(9, dtype=torch.long), 1.0)),
    ("merge_modes", lambda: (_X, torch.ones(10, dtype=torch.float64), torch.zeros(10, dtype=torch.long), -1.0)),
    ("sample_anchors", lambda: (torch.ones(10), _X.float(), _OFF, 2, -0.5, 0)),
    ("sample_anchors", lambda: (torch.ones(10), _X[:9].float(), _OFF, 2, 0.0, 0)),
    ("sample_anchors", lambda: (torch.ones(10), _X.float(), _OFF, -1, 0.0, 0)),
    ("sample_anchors", lambda: (torch.ones(10), _X.float(), _OFF, 2**62, 0.0, 0)),
    ("knn_graph", lambda: (_X, 10)),
    ("knn_graph", lambda: (_X, 0)),
    ("knn_graph", lambda: (_X[:, :0], 2)),
    ("knn_graph", lambda: (_X.half(), 2)),
    ("agglomerative_tree", lambda: (_X, torch.arange(11), torch.arange(10), "median", 1)),
    ("agglomerative_tree", lambda: (_X, torch.arange(10), torch.arange(10), "ward", 1)),
    ("agglomerative_tree", lambda: (_X, torch.arange(11), torch.arange(10), "ward", 11)),
    ("agglomerative_tree", lambda: (_X, torch.arange(11).int(), torch.arange(10), "ward", 1)),
    ("agglomerative_labels", lambda: (torch.zeros(2, 2, dtype=torch.long), 5, 3)),
    ("agglomerative_labels", lambda: (torch.zeros(4, 2, dtype=torch.long), 3, 3)),
    ("agglomerative_labels", lambda: (torch.zeros(2, 3, dtype=torch.long), 5, 1)),
    ("agglomerative_labels", lambda: (torch.zeros(2, 2, dtype=torch.long), -1, 0)),
    ("connected_components", lambda: (_INST, 8)),
    ("connected_components", lambda: (_INST > 0, 6)),
    ("connected_components", lambda: (_INST[0] > 0, 4)),
    ("morph_refine", lambda: (_INST.float(), 1, 0, False, False, 0, False, 8)),
    ("morph_refine", lambda: (_INST, -1, 0, False, False, 0, False, 8)),
    ("morph_refine", lambda: (_INST, 0, 0, False, False, -2, False, 8)),
    ("morph_refine", lambda: (_INST, 0, 0, False, False, 0, False, 5)),
    ("morph_refine", lambda: (_INST > 0, 0, 0, False, False, 0, False, 8)),
]


@pytest.mark.parametrize(("op", "make"), [pytest.param(op, make, id=f"{op}-{i}") for i, (op, make) in enumerate(BAD)])
def test_fake_checks_arguments_as_the_kernel_does(op: str, make: Callable[[], tuple]):
    overload = getattr(ops, op).default
    with pytest.raises((RuntimeError, ValueError, TypeError)) as real:
        overload(*make())
    with pytest.raises((RuntimeError, ValueError, TypeError)) as fake:
        _fake_run(overload, make())
    assert fake.type is real.type
    assert str(fake.value).splitlines()[0] == str(real.value).splitlines()[0]
