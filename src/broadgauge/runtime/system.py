"""The process and host figures a health answer carries (memory, CPU, core count).

The reference fills ``memory_bytes``, ``cpu_percent``, ``system_memory_total`` and
``system_cpus`` from the ``sysinfo`` crate: the process's resident memory, its CPU use since
the previous sample as a percentage of one core (so a busy multi-threaded process may pass
100), the host's physical memory and its logical CPU count.  We read the same figures from
the standard library and Linux's ``/proc``, so no extra dependency is needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessSampler", "SystemSample", "host_memory_bytes", "resident_bytes"]

_STATM = Path("/proc/self/statm")


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One reading of the four figures, in the units HealthInfo carries."""

    memory_bytes: int
    cpu_percent: float
    system_memory_total: int
    system_cpus: int


def resident_bytes() -> int:
    """This process's resident set size in bytes (0 if the platform will not say)."""
    try:
        # statm's second field is the resident size in pages; it is one short read.
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0  # no /proc (not Linux): say nothing rather than guess


def host_memory_bytes() -> int:
    """The host's physical memory in bytes (0 if the platform will not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ProcessSampler:
    """Takes :class:`SystemSample` readings; CPU is averaged since the previous reading.

    The first reading measures from the sampler's creation, which an agent does when it is
    built, so even the first health answer shows real CPU use rather than 0.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_seconds: Callable[[], float] = _cpu_seconds,
    ) -> None:
        self._clock = clock
        self._cpu_seconds = cpu_seconds
        self._last_wall = clock()
        self._last_cpu = cpu_seconds()

    def sample(self) -> SystemSample:
        """Read the figures now."""
        wall, cpu = self._clock(), self._cpu_seconds()
        elapsed = wall - self._last_wall
        # Two readings in the same clock tick keep the previous baseline instead of dividing
        # by zero; CPU time never runs backwards, but a clamp costs nothing.
        percent = max(0.0, (cpu - self._last_cpu) / elapsed * 100.0) if elapsed > 0 else 0.0
        if elapsed > 0:
            self._last_wall, self._last_cpu = wall, cpu
        return SystemSample(
            memory_bytes=resident_bytes(),
            cpu_percent=percent,
            system_memory_total=host_memory_bytes(),
            system_cpus=os.cpu_count() or 0,
        )
