"""Series file format (killed writers leave a readable prefix) and the streaming summary math."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hpc_ft.rundir.layout import new_series_path, series_files
from hpc_ft.telemetry.records import SeriesFile, SeriesWriter, columns, read_series
from hpc_ft.telemetry.summary import J_PER_KWH, BucketMeans, Downsampler, NodeSummary, QuantileSketch, Stat

GPU = {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "mem_total_gb": 80.0}


def _write(path, rows, n_gpus=1):
    w = SeriesWriter(path, {"gpus": [GPU] * n_gpus, "interval_s": 1.0})
    for r in rows:
        w.append(r)
    w.close()


def test_round_trip_and_missing_values(tmp_path):
    p = tmp_path / "telemetry.bin"
    _write(p, [{"t": 1.5, "g0.util_pct": 10.0}, {"t": 2.5, "cpu_util_pct": 50.0}])
    header, rec = read_series(p)
    assert header["columns"] == columns(1) and header["gpus"][0]["name"] == GPU["name"]
    assert rec["t"].tolist() == [1.5, 2.5]
    assert rec["g0.util_pct"][0] == 10.0 and math.isnan(rec["g0.util_pct"][1])
    assert math.isnan(rec["cpu_util_pct"][0]) and rec["cpu_util_pct"][1] == 50.0


def test_chunks_stream_the_same_records(tmp_path):
    p = tmp_path / "telemetry.bin"
    _write(p, [{"t": float(i), "g0.power_w": float(i)} for i in range(1000)])
    sf = SeriesFile(p)
    parts = list(sf.chunks(chunk_rows=64))
    assert len(parts) == 16 and max(len(c) for c in parts) == 64
    assert np.concatenate(parts)["g0.power_w"].tolist() == list(range(1000))


def test_truncated_mid_record_keeps_the_whole_records(tmp_path):
    p = tmp_path / "telemetry.bin"
    _write(p, [{"t": float(i)} for i in range(10)])
    sf = SeriesFile(p)
    os.truncate(p, sf.offset + 3 * sf.dtype.itemsize + sf.dtype.itemsize // 2)  # 3.5 records
    header, rec = read_series(p)
    assert rec["t"].tolist() == [0.0, 1.0, 2.0]
    os.truncate(p, sf.offset)  # killed right after the header
    assert len(read_series(p)[1]) == 0


def test_torn_header_is_refused_clearly(tmp_path):
    p = tmp_path / "telemetry.bin"
    _write(p, [{"t": 1.0}])
    os.truncate(p, 20)
    with pytest.raises(ValueError, match="torn header"):
        SeriesFile(p)


def test_killed_sampler_leaves_a_readable_prefix(tmp_path):
    """A real sampler process SIGKILLed while sampling fast: every record before the kill reads back."""
    out = tmp_path / "node0"
    code = textwrap.dedent(f"""
        import threading
        from hpc_ft.telemetry import NodeSampler
        NodeSampler(out_dir={str(out)!r}, interval_s=0.001, env={{"CUDA_VISIBLE_DEVICES": ""}}).start()
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        path = out / "telemetry.bin"
        deadline = time.monotonic() + 60
        while not path.exists() or SeriesFile(path).rows < 200:  # wait for the file to grow, bounded
            assert proc.poll() is None, "sampler process died"
            assert time.monotonic() < deadline, "sampler wrote too few records"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    header, rec = read_series(path)
    assert len(rec) >= 200
    assert np.all(np.diff(rec["t"]) > 0) and np.isfinite(rec["mem_used_gb"]).all()
    # The report streams it like any other node.
    summ = NodeSummary(header["gpus"], 5.0, header["interval_s"])
    for chunk in SeriesFile(path).chunks():
        summ.add_chunk(chunk)
    assert summ.samples == len(rec)


def test_requeued_node_gets_a_new_segment(tmp_path):
    assert new_series_path(tmp_path).name == "telemetry.bin"
    for _ in range(11):
        _write(new_series_path(tmp_path), [{"t": 0.0}])
    names = [p.name for p in series_files(tmp_path)]
    assert names[:3] == ["telemetry.bin", "telemetry.1.bin", "telemetry.2.bin"] and names[-1] == "telemetry.10.bin"


def test_stat_hand_computed():
    st = Stat()
    for x in (1.0, 2.0, float("nan"), 3.0, 4.0):
        st.add(x)
    d = st.to_dict()
    assert (d["n"], d["mean"], d["min"], d["max"]) == (4, 2.5, 1.0, 4.0)
    assert d["p50"] == pytest.approx(2.0, rel=0.005)  # rank floor(0.5 * 3) = 1 of [1, 2, 3, 4]
    assert d["p95"] == pytest.approx(3.0, rel=0.005)  # rank floor(0.95 * 3) = 2
    many = Stat()
    many.add_many(np.array([1.0, 2.0, np.nan, 3.0, 4.0]))
    assert many.to_dict() == d


def test_quantile_sketch_relative_error():
    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.lognormal(3, 1, 20000), np.zeros(5000)])
    sk = QuantileSketch()
    sk.add_many(xs[:10000])
    for x in xs[10000:]:
        sk.add(float(x))
    srt = np.sort(xs)
    for q in (0.1, 0.5, 0.9, 0.95, 0.99):
        exact = srt[math.floor(q * (len(xs) - 1))]
        assert sk.quantile(q) == pytest.approx(exact, rel=0.005, abs=1e-12)
    assert QuantileSketch().quantile(0.5) != QuantileSketch().quantile(0.5)  # NaN when empty


def _rows():
    # 4 samples, 2 s apart: util 0, 2, 50, 100 (idle below 5: two of four), counter 0..300 J.
    return [{"t": 100.0 + 2 * i, "cpu_util_pct": 10.0 * (i + 1), "g0.util_pct": u, "g0.power_w": 150.0,
             "g0.energy_j": 100.0 * i, "g0.mem_used_gb": 10.0 + i, "cost_ms": 0.5}
            for i, u in enumerate((0.0, 2.0, 50.0, 100.0))]


def test_node_summary_hand_computed(tmp_path):
    s = NodeSummary([GPU], idle_util_pct=5.0, interval_s=2.0)
    for r in _rows():
        s.add_row(r)
    d = s.to_dict()
    g = d["gpus"][0]
    assert d["samples"] == 4 and d["duration_s"] == 8.0  # 6 s span + the last sample's interval
    assert g["util_pct"]["mean"] == 38.0 and g["util_pct"]["max"] == 100.0
    assert g["idle_fraction"] == 0.5
    assert g["energy_kwh"] == pytest.approx(300.0 / J_PER_KWH) and g["energy_source"] == "counter"
    assert g["mem_used_gb"]["max"] == 13.0 and g["mem_total_gb"] == 80.0
    assert d["host"]["cpu_util_pct"]["mean"] == 25.0
    assert d["sampler"]["mean_cost_ms"] == 0.5 and d["sampler"]["duty_pct"] == pytest.approx(0.025)
    assert "temp_c" in g["missing"]
    # The same numbers from the file, chunk by chunk (what the report does).
    p = tmp_path / "telemetry.bin"
    _write(p, _rows())
    c = NodeSummary([GPU], idle_util_pct=5.0, interval_s=2.0)
    for chunk in SeriesFile(p).chunks(chunk_rows=3):
        c.add_chunk(chunk)
    assert c.to_dict() == d


def test_segments_merge_energy_and_duration():
    first, second = NodeSummary([GPU], 5.0, 2.0), NodeSummary([GPU], 5.0, 2.0)
    for r in _rows():
        first.add_row(r)
    for r in _rows():  # the requeued node's counter starts again at 0
        second.add_row({**r, "t": r["t"] + 1000})
    second.merge(first)
    d = second.to_dict()
    assert d["samples"] == 8 and d["duration_s"] == 16.0  # the queueing gap is not run time
    assert d["gpus"][0]["energy_kwh"] == pytest.approx(600.0 / J_PER_KWH)
    assert d["gpus"][0]["idle_fraction"] == 0.5


def test_downsampler_bucket_means_and_bound():
    d = Downsampler(["t", "x"], max_points=4)
    for i in range(8):
        d.add([float(i), float(i)])
    assert d.series()["x"] == [0.5, 2.5, 4.5, 6.5]
    big = Downsampler(["x"], max_points=10)
    for i in range(1000):
        big.add([float(i)])
    xs = big.series()["x"]
    assert len(xs) <= 10 and xs == sorted(xs) and xs[0] < 100 and xs[-1] > 900


def test_downsampler_missing_values_are_gaps():
    d = Downsampler(["x"], max_points=4)
    for v in (1.0, float("nan"), 3.0, float("nan")):
        d.add([v])
    assert d.series()["x"] == [1.0, None, 3.0, None]


def test_bucket_means_chunked(tmp_path):
    p = tmp_path / "telemetry.bin"
    _write(p, [{"t": float(i), "g0.util_pct": float(i)} for i in range(10)])
    sf = SeriesFile(p)
    bm = BucketMeans(["t", "g0.util_pct", "g0.power_w"], sf.rows, max_points=3)
    for chunk in sf.chunks(chunk_rows=3):
        bm.add_chunk(chunk)
    s = bm.series()
    assert s["g0.util_pct"] == [1.5, 5.5, 8.5] and s["g0.power_w"] == [None, None, None]
