"""What the benchmarks share: the machine they ran on, medians with their range, and the work
directory a run makes (and keeps with ``--keep``).

Every benchmark prints the machine next to its figures, because the machines are shared and
noisy: the CPU model, the number of CPUs, the memory and the load average at the start.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cpu_model", "ram_gb", "spread", "work_dir"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram_gb() -> float:
    """The machine's memory in GiB, one decimal."""
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)


def spread(values: list[float]) -> dict[str, float]:
    """The median of ``values`` with their smallest and largest."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextlib.contextmanager
def work_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` (made if missing, left in place), else a new temporary directory removed at
    the end."""
    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
