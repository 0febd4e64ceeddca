"""The process and host figures in a health answer are real, as the reference's are."""

from __future__ import annotations

import os
import subprocess
import sys

from broadgauge.runtime.system import ProcessSampler, host_memory_bytes, resident_bytes


def test_resident_memory_grows_with_what_the_process_holds() -> None:
    # A child process, so that what this test allocates cannot be hidden by the test runner.
    script = (
        "from broadgauge.runtime.system import resident_bytes\n"
        "before = resident_bytes()\n"
        "block = bytearray(64 * 1024 * 1024)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"  # touch every page so it is resident
        "print(before, resident_bytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before > 0
    assert after - before >= 60 * 1024 * 1024


def test_host_figures_match_what_the_kernel_reports() -> None:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    # sysconf counts whole pages; meminfo rounds to KiB: they agree to within a page.
    assert abs(host_memory_bytes() - total_kib * 1024) <= os.sysconf("SC_PAGE_SIZE")
    assert ProcessSampler().sample().system_cpus == os.cpu_count()
    assert resident_bytes() > 0


def test_cpu_percent_is_cpu_time_over_wall_time_since_the_last_sample() -> None:
    wall, cpu = [100.0], [5.0]
    sampler = ProcessSampler(clock=lambda: wall[0], cpu_seconds=lambda: cpu[0])
    wall[0], cpu[0] = 102.0, 6.0  # one CPU-second in two seconds
    assert sampler.sample().cpu_percent == 50.0
    wall[0], cpu[0] = 103.0, 8.0  # two threads busy for one second: past 100, as sysinfo
    assert sampler.sample().cpu_percent == 200.0
    assert sampler.sample().cpu_percent == 0.0  # no time has passed: no division by zero
    wall[0] = 104.0
    assert sampler.sample().cpu_percent == 0.0  # idle for a second


def test_a_busy_process_shows_cpu_use() -> None:
    sampler = ProcessSampler()
    deadline = os.times().user + 0.2
    while os.times().user < deadline:  # burn a fifth of a CPU-second
        pass
    assert sampler.sample().cpu_percent > 0.0
