"""Benchmark of pst.morph: refinement of instance maps and connected-component labelling.

Refinement (opening, closing, hole filling, small-component removal, largest component)
of 1024x2048 instance maps with about 30 instances each, timed for

* ``pst``: one call of :func:`pst.morph.refine` on the whole batch;
* ``opencv``: the per-instance loop over full-size masks (``cv2.morphologyEx``,
  ``cv2.connectedComponents[WithStats]``), then the paste with pst's conflict rule;
* ``opencv-crop``: the same loop on each instance's bounding box plus margin (what a
  careful user would write);
* ``scipy``: the per-instance loop with scipy.ndimage over full-size masks.

Every output is checked for equality with pst's before timing. Also labelling of the
foreground mask: :func:`pst.morph.connected_components` against ``cv2.connectedComponents``
(default algorithm and SPAGHETTI), ``cc3d.connected_components`` (connected-components-3d,
when installed: ``pip install pst[bench]``) and ``scipy.ndimage.label``; the targets of
issue 13 (refine >= 3x opencv-crop, labelling >= 1.5x the best peer) are marked met or not. All timings are medians of repeats from one run, so ratios
compare like with like on a noisy machine. Writes ``morph.json`` and ``morph.md`` into
``--out`` (default ``benchmarks/results``).

The tests have their own oracle (tests/_reference_morph.py) and check these peers against pst.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

import numpy as np
import scipy
import scipy.ndimage as ndi
import torch

import pst.morph as pm
from pst.bench._common import Timing, dist_versions, machine, time_calls, write_results

log = logging.getLogger(__name__)

__all__ = ["make_instance_maps", "refine_reference", "main"]


# ----------------------------------------------------------------------------- data


def make_instance_maps(batch: int = 1, height: int = 1024, width: int = 2048, n_instances: int = 30,
                       seed: int = 0) -> np.ndarray:
    """Synthetic instance maps like those of a clustering step: int64 ``[batch, height, width]``,
    0 = none, ids 1..n_instances per image.

    Wobbly ellipses of log-uniform size (semi-axes 6 to 200 px), some pinned to the image
    border, painted in order (later ones overlap, so instances touch); each with pepper noise
    (2% of its pixels cleared), a few holes, and a few stray fragments of its id nearby.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, height, width), np.int64)
    for b in range(batch):
        m = out[b]
        for k in range(1, n_instances + 1):
            a = float(np.exp(rng.uniform(np.log(6), np.log(120))))
            c = a * rng.uniform(0.4, 1.8)
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            if rng.random() < 0.15:  # pinned to a border
                if rng.random() < 0.5:
                    cy = rng.choice([0.0, height - 1.0])
                else:
                    cx = rng.choice([0.0, width - 1.0])
            th = rng.uniform(0, np.pi)
            ext = int(np.ceil(max(a, c) * 1.25)) + 1
            y0, y1 = max(0, int(cy) - ext), min(height, int(cy) + ext + 1)
            x0, x1 = max(0, int(cx) - ext), min(width, int(cx) + ext + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(th) + dy * np.sin(th)) / c
            v = (-dx * np.sin(th) + dy * np.cos(th)) / a
            ang = np.arctan2(v, u)
            wobble = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.06 * np.sin(7 * ang + rng.uniform(0, 6.3))
            inside = u * u + v * v <= wobble**2
            inside &= rng.random(inside.shape) >= 0.02  # pepper
            for _ in range(rng.integers(0, 3)):  # holes
                hy, hx, hr = rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * c, rng.uniform(1, 0.25 * a + 1)
                inside &= (dy - hy) ** 2 + (dx - hx) ** 2 > hr * hr
            m[y0:y1, x0:x1][inside] = k
            for _ in range(rng.integers(0, 4)):  # stray fragments
                fy = int(cy + rng.uniform(-1.3, 1.3) * a)
                fx = int(cx + rng.uniform(-1.3, 1.3) * c)
                fr = int(rng.integers(0, 4))
                m[max(0, fy - fr):max(0, fy + fr + 1), max(0, fx - fr):max(0, fx + fr + 1)] = k
    return out


# ----------------------------------------------------------------------------- references


def _element(radius: int, shape: str) -> np.ndarray:
    return pm.structuring_element(radius, shape).numpy().astype(np.uint8)


def _refine_mask_opencv(mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    if p["open_radius"] > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _element(p["open_radius"], p["shape"]))
    if p["close_radius"] > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _element(p["close_radius"], p["shape"]))
    if p["fill_holes"]:
        n, lab = cv2.connectedComponents(1 - m, connectivity=12 - p["connectivity"])
        outside = np.zeros(n, bool)
        for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
            outside[edge] = True
        outside[0] = True  # label 0 = the mask itself
        m[~outside[lab]] = 1
    if p["min_size"] > 0 or p["largest_component"]:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=p["connectivity"])
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
        keep = area >= p["min_size"]
        keep[0] = False
        if p["largest_component"] and keep.any():
            best = np.flatnonzero(keep & (area == area[keep].max()))
            if len(best) > 1:  # ties: the component whose first pixel comes first
                labels, first = np.unique(lab.ravel(), return_index=True)
                pos = dict(zip(labels.tolist(), first.tolist()))
                best = [min(best.tolist(), key=pos.__getitem__)]
            keep[:] = False
            keep[best[0]] = True
        m = keep[lab].astype(np.uint8)
    return m.astype(bool)


def _refine_mask_scipy(mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    m = mask.astype(bool)
    four = ndi.generate_binary_structure(2, 1)
    eight = ndi.generate_binary_structure(2, 2)
    fg = eight if p["connectivity"] == 8 else four
    bg = four if p["connectivity"] == 8 else eight
    # OpenCV's border: outside pixels are ignored, i.e. 1 for an erosion, 0 for a dilation
    if p["open_radius"] > 0:
        se = _element(p["open_radius"], p["shape"]).astype(bool)
        m = ndi.binary_dilation(ndi.binary_erosion(m, se, border_value=1), se, border_value=0)
    if p["close_radius"] > 0:
        se = _element(p["close_radius"], p["shape"]).astype(bool)
        m = ndi.binary_erosion(ndi.binary_dilation(m, se, border_value=0), se, border_value=1)
    if p["fill_holes"]:
        m = ndi.binary_fill_holes(m, structure=bg)
    if p["min_size"] > 0 or p["largest_component"]:
        lab, n = ndi.label(m, structure=fg)
        area = np.bincount(lab.ravel(), minlength=n + 1)
        keep = area >= p["min_size"]
        keep[0] = False
        if p["largest_component"] and keep.any():
            best = int(np.argmax(np.where(keep, area, -1)))  # scipy numbers in raster order
            keep[:] = False
            keep[best] = True
        m = keep[lab]
    return m


def _margin(p: dict[str, Any]) -> int:
    return max(p["open_radius"], 2 * p["close_radius"])


def _paste(instances: np.ndarray, refined: list[tuple[int, tuple[slice, slice], np.ndarray]]) -> np.ndarray:
    """pst's conflict rule: a pixel its own instance keeps stays; the rest go to the lowest id."""
    out = np.zeros_like(instances)
    for k, sl, r in refined:
        region = out[sl]
        region[r & (instances[sl] == k)] = k
    for k, sl, r in sorted(refined, key=lambda t: t[0]):
        region = out[sl]
        region[r & (region == 0)] = k
    return out


def refine_reference(instances: np.ndarray, *, backend: str = "opencv", crop: bool = False, open_radius: int = 0,
                     close_radius: int = 0, shape: str = "square", fill_holes: bool = False, min_size: int = 0,
                     largest_component: bool = False, connectivity: int = 8) -> np.ndarray:
    """:func:`pst.morph.refine` as a Python loop over instances with OpenCV or scipy.ndimage.

    Args:
        instances: integer numpy ``[H, W]`` or ``[B, H, W]``.
        backend: ``"opencv"`` or ``"scipy"``.
        crop: process each instance on its bounding box grown by
            ``max(open_radius, 2 * close_radius)`` instead of the full image.

    Returns:
        numpy array of ``instances``' shape and dtype.
    """
    p = dict(open_radius=open_radius, close_radius=close_radius, shape=shape, fill_holes=fill_holes,
             min_size=min_size, largest_component=largest_component, connectivity=connectivity)
    if instances.ndim == 3:
        return np.stack([refine_reference(x, backend=backend, crop=crop, **p) for x in instances]) \
            if len(instances) else instances.copy()
    fn = {"opencv": _refine_mask_opencv, "scipy": _refine_mask_scipy}[backend]
    h, w = instances.shape
    refined = []
    if crop:
        objs = ndi.find_objects(instances.astype(np.int64)) if instances.size and instances.max() > 0 else []
        mg = _margin(p)
        for i, sl in enumerate(objs):
            if sl is None:
                continue
            ys, xs = sl
            sl = (slice(max(0, ys.start - mg), min(h, ys.stop + mg)), slice(max(0, xs.start - mg), min(w, xs.stop + mg)))
            refined.append((i + 1, sl, fn(instances[sl] == i + 1, p)))
    else:
        full = (slice(0, h), slice(0, w))
        for k in np.unique(instances):
            if k != 0:
                refined.append((int(k), full, fn(instances == k, p)))
    return _paste(instances, refined)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabels a label image (0 = background) so components are numbered 1..n in raster order
    of their first pixel: two labellings of the same partition become equal."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    fg = ids != 0
    order = np.argsort(first[fg], kind="stable")
    lut = np.zeros(ids.shape[0], np.int64)
    lut[np.flatnonzero(fg)[order]] = np.arange(1, fg.sum() + 1)
    return lut[np.searchsorted(ids, flat)].reshape(labels.shape)


# ----------------------------------------------------------------------------- timing


def _record(row: dict[str, Any], name: str, t: Timing) -> None:
    row[f"{name}_s"], row[f"{name}_runs"], row[f"{name}_first_s"] = t.median, t.runs, t.first


def refine_case(maps: np.ndarray, params: dict[str, Any], *, repeat: int, scipy_repeat: int,
                threads: int) -> dict[str, Any]:
    x = torch.from_numpy(maps)
    row: dict[str, Any] = {"params": params, "threads": threads}
    t = time_calls(lambda: pm.refine(x, **params), repeat)
    ours = t.out.numpy()
    _record(row, "pst", t)
    peers = [("opencv", "opencv", False, repeat), ("opencv-crop", "opencv", True, repeat),
             ("scipy", "scipy", False, scipy_repeat)]
    for name, backend, crop, rep in peers:
        if rep <= 0:
            continue
        t = time_calls(lambda: refine_reference(maps, backend=backend, crop=crop, **params), rep)
        ref = t.out
        _record(row, name, t)
        t = t.median
        row[f"{name}_equal"] = bool(np.array_equal(ref, ours))
        row[f"{name}_speedup"] = t / row["pst_s"]
        if not row[f"{name}_equal"]:
            log.error("%s output differs from pst in %d pixels", name, int((ref != ours).sum()))
    row["changed_pixels"] = int((ours != maps).sum())
    return row


REFINE_TARGET = 3.0  # issue 13: refine at least this much faster than OpenCV on bounding-box crops
CCL_TARGET = 1.5  # issue 13: pst at least this much faster than the best of the peers below
CCL_PEERS = ("opencv", "opencv-spaghetti", "cc3d")


def ccl_case(maps: np.ndarray, connectivity: int, *, repeat: int, threads: int) -> dict[str, Any]:
    """Labelling of each map's foreground: pst against OpenCV (default algorithm and
    SPAGHETTI), cc3d (connected-components-3d, when installed) and scipy.ndimage.label."""
    import cv2

    mask = maps > 0
    x = torch.from_numpy(mask)
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    row: dict[str, Any] = {"connectivity": connectivity, "threads": threads}
    t = time_calls(lambda: pm.connected_components(x, connectivity), repeat)
    ours = t.out.numpy()
    _record(row, "pst", t)
    u8 = mask.astype(np.uint8)
    peers: dict[str, Callable[[], list[np.ndarray]]] = {
        "opencv": lambda: [cv2.connectedComponents(m, connectivity=connectivity, ltype=cv2.CV_32S)[1] for m in u8],
        "opencv-spaghetti": lambda: [cv2.connectedComponentsWithAlgorithm(m, connectivity, cv2.CV_32S,
                                                                          cv2.CCL_SPAGHETTI)[1] for m in u8],
        "scipy": lambda: [ndi.label(m, structure=structure)[0] for m in mask],
    }
    try:
        import cc3d

        # uint8 as for OpenCV (cc3d 4.1.1 mislabels a background pixel of a bool mask in tests/test_morph.py)
        peers["cc3d"] = lambda: [cc3d.connected_components(m, connectivity=connectivity) for m in u8]
    except ImportError:
        row["cc3d_note"] = "connected-components-3d not installed"
    for name, fn in peers.items():
        t = time_calls(fn, repeat)
        _record(row, name, t)
        row[f"{name}_equal"] = all(np.array_equal(canonical(r), o) for r, o in zip(t.out, ours))
        row[f"{name}_speedup"] = t.median / row["pst_s"]
    best = min((n for n in CCL_PEERS if f"{n}_s" in row), key=lambda n: row[f"{n}_s"])
    row["best_peer"], row["vs_best_peer"] = best, row[f"{best}_speedup"]
    row["target_met"] = row["vs_best_peer"] >= CCL_TARGET
    row["components"] = int(ours.max(axis=(1, 2)).sum())
    return row


def _fmt(row: dict[str, Any], name: str) -> str:
    if f"{name}_s" not in row:
        return "—"
    spread = f"{min(row[name + '_runs']) * 1e3:.0f}–{max(row[name + '_runs']) * 1e3:.0f}"
    eq = "" if row.get(f"{name}_equal", True) else " **DIFFERENT**"
    return f"{row[name + '_s'] * 1e3:.1f} ({spread}){eq}"


def markdown(info: dict[str, Any], setup: dict[str, Any], refine_rows: list[dict[str, Any]],
             ccl_rows: list[dict[str, Any]]) -> str:
    out = [
        "# pst.morph benchmark",
        "",
        f"{setup['batch']} maps of {setup['height']}x{setup['width']} with {setup['n_instances']} instances each "
        f"(`pst.bench.morph.make_instance_maps`, seed {setup['seed']}); {info['cpu']}, {info['cores']} cores "
        f"(shared), torch {info['torch']} ({info['torch_threads']} threads), OpenCV {info['opencv']} "
        f"({info['opencv_threads']} threads), scipy {info['scipy']}, commit {info['commit'] or 'n/a'}.",
        "",
        "Times in ms for the whole batch: median (min–max) of repeats, all in one run. "
        "`opencv` / `scipy` loop over instances on full-size masks, `opencv-crop` on each instance's bounding "
        "box plus margin; every peer's output is checked equal to pst's (**DIFFERENT** marks a mismatch).",
        "",
        "## refine",
        "",
        "| threads | parameters | pst | opencv | opencv-crop | scipy | vs opencv | vs opencv-crop | vs scipy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in refine_rows:
        p = r["params"]
        desc = (f"{p['shape']} open {p['open_radius']} close {p['close_radius']}"
                f"{' fill' if p['fill_holes'] else ''} min {p['min_size']}{' largest' if p['largest_component'] else ''}")
        ratios = [f"{r[n + '_speedup']:.1f}x" if n + "_speedup" in r else "—" for n in ("opencv", "opencv-crop", "scipy")]
        out.append(f"| {r['threads']} | {desc} | {_fmt(r, 'pst')} | {_fmt(r, 'opencv')} | {_fmt(r, 'opencv-crop')} | "
                   f"{_fmt(r, 'scipy')} | " + " | ".join(ratios) + " |")
    out += ["", f"Target (issue 13): pst at least {REFINE_TARGET:g}x faster than `opencv-crop`: "
            + ", ".join(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''} "
                        f"{r['opencv-crop_speedup']:.1f}x {'met' if r['opencv-crop_speedup'] >= REFINE_TARGET else 'NOT met'}"
                        for r in refine_rows if "opencv-crop_speedup" in r) + "."]
    names = ["pst", "opencv", "opencv-spaghetti", "cc3d", "scipy"]
    out += ["", "## connected_components (foreground of the same maps)", "",
            "| threads | connectivity | components | " + " | ".join(names) + " | best peer | pst vs best peer | "
            f"target {CCL_TARGET:g}x |",
            "|---|---|---|" + "---|" * (len(names) + 3)]
    for r in ccl_rows:
        out.append(f"| {r['threads']} | {r['connectivity']} | {r['components']} | "
                   + " | ".join(_fmt(r, n) for n in names)
                   + f" | {r['best_peer']} | {r['vs_best_peer']:.2f}x | {'met' if r['target_met'] else 'NOT met'} |")
    rows = [("refine", refine_rows[0]), ("connected_components", ccl_rows[0])] if refine_rows and ccl_rows else []
    out += ["", "First call of each library in this process (the warm-up of the first row above; ms):", "",
            "| op | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op, r in rows:
        out.append(f"| {op} | " + " | ".join(f"{r[n + '_first_s'] * 1e3:.1f}" if n + "_first_s" in r else "—"
                                             for n in names) + " |")
    out += ["", "`threads`: torch.set_num_threads and cv2.setNumThreads (scipy and cc3d are single-threaded; scipy "
            "runs refine only in the first setting). Labels of the peers are compared after renumbering in raster "
            "order. `opencv` is cv2.connectedComponents (its default algorithm), `opencv-spaghetti` "
            "cv2.connectedComponentsWithAlgorithm(..., cv2.CCL_SPAGHETTI), `cc3d` cc3d.connected_components per map."]
    return "\n".join(out) + "\n"


CASES = [
    dict(open_radius=2, close_radius=3, shape="square", fill_holes=True, min_size=64, largest_component=True),
    dict(open_radius=2, close_radius=3, shape="disk", fill_holes=True, min_size=64, largest_component=True),
    dict(open_radius=0, close_radius=0, shape="square", fill_holes=True, min_size=0, largest_component=True),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pst bench morph", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results", help="output folder (default: benchmarks/results)")
    p.add_argument("--batch", type=int, default=2, help="maps per batch (default: 2)")
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--instances", type=int, default=30, help="instances per map (default: 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=5, help="timed runs of pst and OpenCV (default: 5)")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts for torch and OpenCV (default: 1 and torch's default)")
    p.add_argument("--scipy-repeat", type=int, default=3, help="timed runs of scipy, 0 = skip (default: 3)")
    p.add_argument("--quick", action="store_true", help="one small case (a smoke run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cases = CASES
    if args.quick:
        args.batch, args.height, args.width, args.repeat, args.scipy_repeat = 1, 256, 512, 2, 1
        cases = CASES[:1]
    setup = {"batch": args.batch, "height": args.height, "width": args.width, "n_instances": args.instances,
             "seed": args.seed, "repeat": args.repeat, "scipy_repeat": args.scipy_repeat}
    import cv2

    default_threads = torch.get_num_threads()
    if args.threads:
        thread_counts = [int(t) for t in args.threads.split(",")]
    else:
        thread_counts = sorted({1, default_threads})
    setup["threads"] = thread_counts
    info = machine(opencv=cv2.__version__, scipy=scipy.__version__, numpy=np.__version__,
                   cc3d=dist_versions("connected-components-3d")["connected-components-3d"],
                   opencv_threads=cv2.getNumThreads())
    maps = make_instance_maps(args.batch, args.height, args.width, args.instances, args.seed)
    refine_rows, ccl_rows = [], []
    old_cv = cv2.getNumThreads()
    try:
        for i, threads in enumerate(thread_counts):
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
            for params in cases:
                row = refine_case(maps, params, repeat=args.repeat, scipy_repeat=args.scipy_repeat if i == 0 else 0,
                                  threads=threads)
                log.info("%s", {k: v for k, v in row.items() if not k.endswith("_runs")})
                refine_rows.append(row)
            for conn in (4, 8):
                row = ccl_case(maps, conn, repeat=args.repeat, threads=threads)
                log.info("%s", {k: v for k, v in row.items() if not k.endswith("_runs")})
                ccl_rows.append(row)
    finally:
        torch.set_num_threads(default_threads)
        cv2.setNumThreads(old_cv)
    write_results(args.out, "morph", {"machine": info, "setup": setup, "refine": refine_rows,
                                      "connected_components": ccl_rows}, markdown(info, setup, refine_rows, ccl_rows))
    ok = all(r.get(f"{n}_equal", True) for r in refine_rows for n in ("opencv", "opencv-crop", "scipy")) and all(
        r.get(f"{n}_equal", True) for r in ccl_rows for n in (*CCL_PEERS, "scipy"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
