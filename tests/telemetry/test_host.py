"""The real host sampler (/proc) against a real child process with known memory and CPU use."""

from __future__ import annotations

import subprocess
import sys
import time

from hpc_ft.telemetry.host import CLK_TCK, HostSampler, _proc_usage

CHILD = """
import sys
block = bytearray(200 * 2**20)  # 200 MiB, touched so it is resident
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
while True:
    pass
"""


def test_host_sampler_measures_the_job_processes():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        hs = HostSampler(pids=lambda: [child.pid])
        first = hs.sample(time.monotonic(), hs.job_pids())
        ticks0 = _proc_usage(child.pid)[0]
        deadline = time.monotonic() + 60
        while _proc_usage(child.pid)[0] - ticks0 < CLK_TCK // 2:  # wait until it burned >= 0.5 CPU-s
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = hs.sample(time.monotonic(), hs.job_pids())
    finally:
        child.kill()
        child.wait(timeout=30)
    assert "job_cpu_cores" not in first  # a rate needs two samples
    assert 0.2 <= second["job_cpu_cores"] <= 1.2  # one busy-looping process
    assert 0.19 <= second["job_rss_gb"] <= 0.5
    assert 0 <= second["cpu_util_pct"] <= 100 and second["mem_used_gb"] > 0.19 and second["load1"] >= 0
    info = HostSampler.info()
    assert info["cpus"] >= 1 and info["mem_total_gb"] > 0


def test_exited_processes_are_skipped():
    hs = HostSampler(pids=lambda: [2**22 + 12345])  # no such pid
    out = hs.sample(time.monotonic(), hs.job_pids())
    assert out["job_rss_gb"] == 0.0
