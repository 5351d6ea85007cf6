"""Clustering benchmark: pst.cluster against scikit-learn on the same data, in one run.

``pst bench cluster`` (or ``python benchmarks/bench_cluster.py``) writes
``cluster.json`` and ``cluster.md`` into ``--out`` (default ``benchmarks/results``).
Every row times both libraries on the same points (median of ``--repeat`` runs after
one warm-up for pst) and reports the time ratio and the adjusted Rand index (ARI)
against scikit-learn's labels and against the ground truth. scikit-learn is skipped
where its estimated time exceeds ``--sk-budget`` seconds; those rows say so.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

import numpy as np
import sklearn
import torch
from sklearn import cluster as skc
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from tqdm import tqdm

import pst
import pst.cluster as pc
from pst.bench._common import machine, time_calls, write_results

log = logging.getLogger(__name__)

QUANTILE = 0.05  # bandwidth quantile: sklearn's default 0.3 merges all blobs at d >= 8


def blobs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=n, n_features=d, centers=10, random_state=seed)
    return X, y


def embedding_like(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel embeddings as an instance head makes them: instances of very different sizes
    (power law), tight clusters (spread ~ delta_v = 0.5) about centres pushed apart
    (~ 2 delta_d), and 5% boundary pixels blended between two instances."""
    rng = np.random.default_rng(seed)
    k = 24
    sizes = rng.pareto(1.2, k) + 0.05
    sizes = np.maximum((sizes / sizes.sum() * n).astype(int), 1)
    sizes[0] += n - sizes.sum()
    centers = rng.normal(size=(k, d))
    centers *= 3.0 / np.linalg.norm(centers, axis=1, keepdims=True) * np.sqrt(d / 8)
    y = np.repeat(np.arange(k), sizes)
    scale = rng.uniform(0.12, 0.25, k)
    X = centers[y] + rng.normal(size=(n, d)) * scale[y, None]
    blend = rng.random(n) < 0.05
    other = rng.integers(0, k, n)
    t = rng.uniform(0.0, 0.35, n)[:, None]
    X[blend] = (1 - t[blend]) * X[blend] + t[blend] * centers[other[blend]]
    perm = rng.permutation(n)
    return X[perm], y[perm]


DATASETS: dict[str, Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]] = {
    "blobs": blobs,
    "embedding": embedding_like,
}


_SK_CACHE: dict[tuple[str, int, int], tuple[float, Any]] = {}


def run_case(method: str, data: str, n: int, d: int, *, repeat: int, sk_budget: float,
             sk_rate: dict[str, float]) -> dict[str, Any]:
    X, y = DATASETS[data](n, d, 0)
    bw = pc.estimate_bandwidth(X, quantile=QUANTILE, n_samples=min(n, 5000), random_state=0)
    row: dict[str, Any] = {"method": method, "data": data, "n": n, "d": d, "bandwidth": bw}
    ref = lambda: skc.MeanShift(bandwidth=bw, bin_seeding=True).fit(X)  # noqa: E731
    if method == "MeanShift":
        ours = lambda: pc.MeanShift(bandwidth=bw, bin_seeding=True).fit(X)  # noqa: E731
    elif method == "MeanShiftPP":
        ours = lambda: pc.MeanShiftPP(bandwidth=bw).fit(X)  # noqa: E731
    else:  # ward on the same 10-nearest-neighbour graph as scikit-learn's
        from sklearn.neighbors import kneighbors_graph

        k = int(len(np.unique(y)))
        ours = lambda: pc.AgglomerativeClustering(n_clusters=k, n_neighbors=10).fit(X)  # noqa: E731
        ref = lambda: skc.AgglomerativeClustering(  # noqa: E731
            n_clusters=k, connectivity=kneighbors_graph(X, 10, include_self=False)).fit(X)
        row["bandwidth"] = None
        data = data + "/ward"
        row["data"] = data
    try:
        t, ts, est = time_calls(ours, repeat)[1:]
    except ValueError as exc:  # e.g. bin seeds that see no point (d = 32): scikit-learn raises the same
        row.update(pst_s=None, sk_s=None, note=f"not clusterable with these settings: {exc}")
        return row
    row.update(pst_s=t, pst_runs=ts, pst_clusters=int(len(np.unique(est.labels_))),
               pst_ari_truth=float(adjusted_rand_score(y, est.labels_)))
    # scikit-learn's cost grows about linearly in n here; estimate from the last run at this (data, d)
    key = f"{data}:{d}"
    guess = sk_rate.get(key, 0.0) * n
    if guess > sk_budget:
        row.update(sk_s=None, note=f"scikit-learn not run (estimated {guess:.0f} s > budget {sk_budget:.0f} s)")
        return row
    if (data, n, d) not in _SK_CACHE:  # the same scikit-learn run serves both pst methods
        try:
            _SK_CACHE[(data, n, d)] = time_calls(ref, 0)[1:]
        except ValueError as exc:  # bin seeds that see no point (d = 32)
            _SK_CACHE[(data, n, d)] = (None, [], str(exc))
    t_sk, ts_sk, sk = _SK_CACHE[(data, n, d)]
    if t_sk is None:
        row.update(sk_s=None, note=f"scikit-learn failed: {sk}")
        return row
    sk_rate[key] = t_sk / n  # cases run in increasing n: the latest rate is the best guess
    row.update(sk_s=t_sk, sk_runs=ts_sk, sk_clusters=int(len(np.unique(sk.labels_))),
               sk_ari_truth=float(adjusted_rand_score(y, sk.labels_)),
               ari_vs_sk=float(adjusted_rand_score(sk.labels_, est.labels_)), speedup=t_sk / t)
    return row


THING_CLASSES = [11, 12, 13, 14, 17, 18]


def instance_frame(h: int = 256, w: int = 512, d: int = 8, n_instances: int | None = None, seed: int = 0):
    """A synthetic frame for cluster_instances: rectangles of thing classes (``n_instances`` of
    them, or until 20% of the pixels are things), embeddings = per-instance centre + noise.
    Returns (embeddings [1, d, h, w], semantic [1, h, w], objectness [1, h, w], instances [1, h, w])."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.zeros(1, h, w, dtype=torch.long)
    inst = torch.zeros(1, h, w, dtype=torch.long)
    k = 0
    while (k < n_instances) if n_instances is not None else float((inst > 0).float().mean()) < 0.2:
        k += 1
        hh, ww = int(torch.randint(12, 60, (1,), generator=g)), int(torch.randint(8, 90, (1,), generator=g))
        y0, x0 = int(torch.randint(0, h - hh, (1,), generator=g)), int(torch.randint(0, w - ww, (1,), generator=g))
        sem[0, y0:y0 + hh, x0:x0 + ww] = THING_CLASSES[k % len(THING_CLASSES)]
        inst[0, y0:y0 + hh, x0:x0 + ww] = k
    centers = torch.randn(k + 1, d, generator=g) * 1.5
    emb = (centers[inst].permute(0, 3, 1, 2) + 0.2 * torch.randn(1, d, h, w, generator=g)).contiguous()
    obj = (inst > 0).float() * 0.9 + 0.05
    return emb, sem, obj, inst


def instance_case(repeat: int) -> dict[str, Any]:
    """cluster_instances on one Cityscapes-sized frame against one instance-model training step."""
    emb, sem, obj, inst = instance_frame()
    thing_classes = THING_CLASSES
    d, h, w = emb.shape[1:]
    k = int(inst.max())
    row: dict[str, Any] = {"frame": [d, h, w], "thing_fraction": float((sem > 0).float().mean()), "instances": k}
    for method, kw in [("meanshift", dict(bandwidth=0.5, merge_distance=1.5)),
                       ("meanshift++", dict(bandwidth=0.5, merge_distance=1.5))]:
        t, ts, out = time_calls(lambda: pc.cluster_instances(emb, sem, obj, thing_classes=thing_classes,
                                                             method=method, **kw), repeat)[1:]
        m = sem > 0
        row[method] = {"s": t, "runs": ts, "ari_truth": float(adjusted_rand_score(inst[m].numpy(), out[m].numpy()))}
    try:
        from pst.models import build_instance

        for backbone in ("resnet101", "resnet50"):
            model = build_instance(backbone=backbone, embed_dim=d)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            x = torch.rand(1, 3, h, w)

            def step():
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = out["embedding"].square().mean() + out["objectness"].mean()
                loss.backward()
                opt.step()

            t, ts, _ = time_calls(step, 1)[1:]
            row[f"train_step_{backbone}_s"] = t
    except ImportError as exc:  # the models are another part of the package
        row["train_step_note"] = f"pst.models not available: {exc}"
    return row


def markdown(rows: list[dict[str, Any]], inst: dict[str, Any] | None, info: dict[str, Any]) -> str:
    out = [f"# pst.cluster vs scikit-learn {info['sklearn']}",
           "",
           f"{info['cpu']}, {info['cores']} cores, {info.get('cpu_isa', '?')} loops (load average {info['load_avg_1min_at_start']:.1f} at start), "
           f"torch {info['torch']} ({info['torch_threads']} threads), commit {info['commit']}. Bandwidth: `estimate_bandwidth(quantile={QUANTILE})`; scikit-learn runs "
           "`MeanShift(bin_seeding=True)` with the same bandwidth. Times are medians; speed-up = sklearn / pst.",
           "",
           "| method | data | n | d | pst (s) | sklearn (s) | speed-up | ARI vs sklearn | ARI truth pst | ARI truth sklearn | clusters pst / sk |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        sk = r.get("sk_s")
        if r.get("pst_s") is None:
            out.append(f"| {r['method']} | {r['data']} | {r['n']:.0e} | {r['d']} | - | - | - | - | - | - | {r['note']} |")
            continue
        out.append("| {m} | {data} | {n:.0e} | {d} | {p:.4f} | {s} | {x} | {a} | {at:.4f} | {st} | {cp} / {cs} |".format(
            m=r["method"], data=r["data"], n=r["n"], d=r["d"], p=r["pst_s"],
            s=f"{sk:.2f}" if sk is not None else "not run",
            x=f"{r['speedup']:.0f}x" if sk is not None else "-",
            a=f"{r['ari_vs_sk']:.4f}" if sk is not None else "-",
            at=r["pst_ari_truth"], st=f"{r['sk_ari_truth']:.4f}" if sk is not None else "-",
            cp=r["pst_clusters"], cs=r.get("sk_clusters", "-")))
    if inst:
        out += ["", "## cluster_instances on one frame",
                f"Embeddings {inst['frame']}, {100 * inst['thing_fraction']:.0f}% of pixels in thing masks, "
                f"{inst['instances']} instances.", "",
                "| call | time (s) | ARI vs truth |", "|---|---:|---:|"]
        for m in ("meanshift", "meanshift++"):
            out.append(f"| cluster_instances({m}) | {inst[m]['s']:.4f} | {inst[m]['ari_truth']:.4f} |")
        for k, v in inst.items():
            if k.startswith("train_step_") and k.endswith("_s"):
                name = k[len("train_step_"):-2]
                out.append(f"| one instance-model training step ({name} U-Net, 1x3x256x512, fwd+bwd+SGD) | {v:.2f} | |")
        if "train_step_note" in inst:
            out.append(f"\n{inst['train_step_note']}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pst bench cluster", description=__doc__)
    p.add_argument("--out", default="benchmarks/results", help="output folder (default: benchmarks/results)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of pst per case (default: 3)")
    p.add_argument("--sk-budget", type=float, default=60.0, help="skip scikit-learn runs estimated above this (s)")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--targets", action="store_true",
                   help="only the rows with targets (MeanShift n=2e4 d=8, MeanShiftPP n=1e5 d=8) and the "
                        "cluster_instances frame; writes cluster_targets.{json,md}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stem = "cluster"
    if args.targets:
        stem = "cluster_targets"
        cases = [("MeanShift", "blobs", 20000, 8), ("MeanShiftPP", "blobs", 100000, 8)]
    elif args.quick:
        cases = [("MeanShift", "blobs", 2000, 8), ("MeanShiftPP", "blobs", 10000, 8)]
    else:
        cases = []
        for d in (2, 3, 8, 16, 32):  # d = 32: grid seeds see no point, as in scikit-learn (reported)
            for n in (1000, 20000):
                cases.append(("MeanShift", "blobs", n, d))
        cases += [("MeanShift", "embedding", 20000, 8), ("MeanShift", "blobs", 100000, 8)]
        for d in (2, 3, 8, 16, 32):  # n = 1e6 up to d = 8 (minutes per run beyond)
            for n in (1000, 100000, 1000000) if d <= 8 else (1000, 100000):
                cases.append(("MeanShiftPP", "blobs", n, d))
        cases += [("MeanShiftPP", "embedding", 100000, 8), ("MeanShiftPP", "embedding", 1000000, 8)]
        cases += [("Agglomerative", "blobs", 10000, 8), ("Agglomerative", "embedding", 10000, 8)]
    info = machine(sklearn=sklearn.__version__, cpu_isa=pst.cpu_isa())
    rows, sk_rate = [], {}
    for method, data, n, d in tqdm(cases, desc="cluster bench"):
        row = run_case(method, data, n, d, repeat=args.repeat, sk_budget=args.sk_budget, sk_rate=sk_rate)
        log.info("%s", {k: v for k, v in row.items() if not k.endswith("_runs")})
        rows.append(row)
    inst = None if args.quick else instance_case(args.repeat)
    write_results(args.out, stem, {"machine": info, "quantile": QUANTILE, "rows": rows, "cluster_instances": inst},
                  markdown(rows, inst, info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
