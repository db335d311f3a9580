"""Is this CPU already busy? Read at run time, before work whose speed matters (train, predict, benchmark).

PyTorch's intra-op threads assume the cores are free. When other processes already keep them busy, its
threads wait on each other: on our 2-core development machine, with the load average above the core count,
PyTorch ran about 10× slower than on an idle machine, and training with 2 threads 4-7× slower than with 1.
`load_warning` names the load and the thread count that fits what is left (`--threads N`); it is a pure
function of (load average, usable cores, torch threads), so tests inject the reading.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CPULoad:
    """One reading: the 1-minute load average (None where the OS has none), the cores this process may run
    on, and the intra-op threads torch uses."""

    load_average: float | None
    cores: int
    threads: int

    def as_dict(self) -> dict:
        return {"load_average_1min": self.load_average, "cores": self.cores, "torch_threads": self.threads}


def read_load() -> CPULoad:
    """This machine now (os.getloadavg, the process's CPU affinity, torch.get_num_threads)."""
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        load = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CPULoad(load, max(1, cores), torch.get_num_threads())


def better_threads(reading: CPULoad) -> int:
    """The thread count that fits the cores the load leaves free (at least 1)."""
    free = reading.cores - (reading.load_average or 0.0)
    return max(1, min(reading.threads, math.floor(free + 0.5)))


def load_warning(reading: CPULoad, *, option: str = "--threads") -> str | None:
    """One line when the machine is too busy for `reading.threads` threads (load + threads beyond the
    cores by more than half a core), naming the load and the better setting (`option N`); else None."""
    if reading.load_average is None or reading.load_average + reading.threads <= reading.cores + 0.5:
        return None
    head = (f"the machine is busy: load average {reading.load_average:.1f} over the last minute on "
            f"{reading.cores} core{'s' if reading.cores != 1 else ''}, and torch runs {reading.threads} "
            f"thread{'s' if reading.threads != 1 else ''}, so timings are slow and noisy")
    n = better_threads(reading)
    if n < reading.threads:
        crowded = reading.cores - reading.load_average < 0.5
        return f"{head}; {option} {n} fits the free cores better" + (
            ", though even 1 thread shares a core at this load" if crowded else "")
    return f"{head}; even 1 thread shares its core: wait for the load to drop before timing anything"
