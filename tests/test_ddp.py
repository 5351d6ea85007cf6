"""DDP: two CPU processes (gloo) end source training and self-training with the same weights,
and those weights differ from the initial ones."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_train import TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from pst.config import load_config
    from pst.train.distributed import shutdown
    from pst.train.selftrain import self_train
    from pst.train.source import train_supervised

    cfg = load_config("toy", TINY + ["source.steps=3", "selftrain.steps=2", "selftrain.eval_every=1"])

    def keep(tag):
        def f(net, teacher):
            state = {"model": {k: v.detach().clone() for k, v in net.state_dict().items()}}
            if teacher is not None:
                state["teacher"] = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
            torch.save(state, os.path.join(out, f"{tag}_rank{rank}.pt"))
        return f

    try:
        src = train_supervised(cfg, out, progress=False, on_finish=keep("source"))
        self_train(cfg, out, init=src, progress=False, on_finish=keep("selftrain"))
    finally:
        shutdown()


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"


def test_two_gloo_processes_end_with_same_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for tag in ("source", "selftrain"):
        r0 = torch.load(tmp_path / f"{tag}_rank0.pt")
        r1 = torch.load(tmp_path / f"{tag}_rank1.pt")
        _same(r0["model"], r1["model"])
        if tag == "selftrain":
            _same(r0["teacher"], r1["teacher"])
    # training did move the weights away from the source checkpoint
    src = torch.load(tmp_path / "source_rank0.pt")["model"]
    st = torch.load(tmp_path / "selftrain_rank0.pt")["model"]
    assert any(not torch.equal(src[k], st[k]) for k in src if src[k].is_floating_point())
    # the final checkpoint holds what rank 0 held
    from pst.train.checkpoint import load_checkpoint

    _same(load_checkpoint(tmp_path / "selftrain.pt")["model"], st)
