"""Validate a dataset tree: what is missing, what is malformed (``pst data check``)."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from pst.labels import LabelSpace

__all__ = ["CheckReport", "check_dataset", "DATASETS"]

logger = logging.getLogger(__name__)


def _datasets() -> dict:
    from pst.data.cityscapes import Cityscapes
    from pst.data.gta5 import GTA5
    from pst.data.synthia import Synthia

    return {"cityscapes": (Cityscapes, "train"), "gta5": (GTA5, "all"), "synthia": (Synthia, "all")}


DATASETS = ("cityscapes", "gta5", "synthia")


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: ``errors`` (the tree cannot be used as is) and ``warnings``.

    ``n_decoded`` counts the samples that loaded, ``failed`` lists the ones that did not (each
    message names the file and the reason; they are among ``errors`` too)."""

    dataset: str
    root: str
    split: str
    n_samples: int = 0
    n_decoded: int = 0
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def format(self, max_lines: int = 50) -> str:
        failed = f", {len(self.failed)} failed" if self.failed else ""
        if len(self.failed) == 1:
            failed += f": {self.failed[0]}"
        head = (f"{self.dataset} at {self.root} (split {self.split!r}): {self.n_samples} samples found, "
                f"{self.n_decoded} decoded{failed}; {len(self.errors)} errors, {len(self.warnings)} warnings")
        lines = [head]
        for kind, msgs in (("error", self.errors), ("warning", self.warnings)):
            for m in msgs[:max_lines]:
                lines.append(f"  {kind}: {m}")
            if len(msgs) > max_lines:
                lines.append(f"  ... and {len(msgs) - max_lines} more {kind}s")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def check_dataset(name: str, root: str | os.PathLike, split: str | None = None, *, limit: int | None = None,
                  label_space: LabelSpace | None = None, progress: bool = False) -> CheckReport:
    """Scan a dataset tree and decode its samples; collect every problem instead of stopping at the first.

    Args:
        name: "cityscapes", "gta5" or "synthia".
        root: the dataset's root folder.
        split: the split (default: "train" for Cityscapes, "all" for the others).
        limit: decode only the first ``limit`` samples (None: all); file presence is checked for all.
        label_space: the label space to map to (default: the dataset's default).
        progress: show a progress bar while decoding.

    Returns:
        a :class:`CheckReport`; each message names the file and the problem.
    """
    table = _datasets()
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(table)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit should be an int >= 0 or None, got {limit!r}")
    cls, default_split = table[name]
    split = split or default_split
    report = CheckReport(dataset=name, root=str(root), split=split)
    kwargs = {"label_space": label_space} if label_space is not None else {}
    with _capture_warnings():  # the scan's problems are reported from ds.scan, not logged twice
        ds = cls(root, split, strict=False, **kwargs)
    report.errors.extend(ds.scan.errors)
    report.warnings.extend(ds.scan.warnings)
    report.n_samples = len(ds)
    n = len(ds) if limit is None else min(limit, len(ds))
    captured = _capture_warnings()
    with captured:
        for i in tqdm(range(n), desc=f"check {name}", disable=not progress, unit="img"):
            try:
                ds.load(i)
            except (ValueError, FileNotFoundError, OSError) as exc:
                report.failed.append(str(exc))
                report.errors.append(str(exc))
            else:
                report.n_decoded += 1
    report.warnings.extend(captured.messages)
    return report


class _capture_warnings(logging.Handler):
    """Collect the dataset loaders' logged warnings (e.g. GTA5 size mismatches) while active,
    instead of passing them on to the root logger (they go into the report)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self):
        log = logging.getLogger("pst.data")
        self._propagate = log.propagate
        log.addHandler(self)
        log.propagate = False
        return self

    def __exit__(self, *exc):
        log = logging.getLogger("pst.data")
        log.removeHandler(self)
        log.propagate = self._propagate
        return False
