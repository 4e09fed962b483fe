"""M/M/1 and M/M/c (Erlang C) against known values; sacct parsing; rates from history."""

from __future__ import annotations

import json
import math

import pytest

from hpc_ft.errors import ConfigError
from hpc_ft.sched import estimate_from_history, mm1, mmc, parse_sacct
from hpc_ft.sched.queueing import erlang_c


def erlang_c_direct(c: int, a: float) -> float:
    """The textbook formula, for comparison: (a^c/c! * c/(c-a)) / (sum_{k<c} a^k/k! + a^c/c! * c/(c-a))."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def test_mm1():
    q = mm1(2.0, 3.0)
    # rho = 2/3; Wq = rho / (mu - lambda) = (2/3) / 1 = 0.6667 h; P(wait) = rho.
    assert q.rho == pytest.approx(2 / 3)
    assert q.wq_h == pytest.approx(2 / 3)
    assert q.p_wait == pytest.approx(2 / 3)
    assert q.stable and q.c == 1


@pytest.mark.parametrize("lam,mu", [(0.5, 1.0), (2.0, 3.0), (9.0, 10.0), (0.01, 4.0)])
def test_mmc_with_one_server_is_mm1(lam, mu):
    assert mmc(lam, mu, 1).wq_h == pytest.approx((lam / mu) / (mu - lam))


def test_erlang_c_known_values():
    # c = 2, a = 1: top = 1/2 * 2/1 = 1; bottom = 1 + 1 + 1 = 3 -> 1/3; Wq = (1/3) / (2*1 - 1) = 1/3 h.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert mmc(1.0, 1.0, 2).wq_h == pytest.approx(1 / 3)
    # c = 3, a = 2: top = 8/6 * 3 = 4; bottom = 1 + 2 + 2 + 4 = 9 -> 4/9.
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(10, 8.0) == pytest.approx(0.40918, abs=5e-5)  # tabulated
    for c, a in [(5, 4.5), (50, 45.0), (120, 100.0)]:
        assert erlang_c(c, a) == pytest.approx(erlang_c_direct(c, a), rel=1e-9)
    assert 0.0 < erlang_c(2000, 1990.0) < 1.0  # the recursion stays finite where a**c / c! overflows


def test_unstable_queue_is_reported_not_hidden():
    q = mmc(3.0, 1.0, 2)  # rho = 3 / (2 * 1) = 1.5
    assert not q.stable
    assert q.rho == pytest.approx(1.5)
    assert math.isinf(q.wq_h) and q.p_wait == 1.0
    assert any("unstable" in a and "1.5" in a for a in q.assumptions)
    assert json.loads(json.dumps(q.to_dict(), allow_nan=False))["wq_h"] is None
    assert not mmc(2.0, 1.0, 2).stable  # rho = 1 exactly: unstable too


def test_bad_rates_are_rejected_with_the_key():
    with pytest.raises(ConfigError) as exc:
        mmc(0.0, -1.0, 0)
    text = str(exc.value)
    assert "lambda_per_h=0.0" in text and "mu_per_h=-1.0" in text and "c=0" in text


SACCT = """\
Submit|Start|End|AllocTRES
2024-05-01T09:00:00|2024-05-01T09:00:05|2024-05-01T10:00:05|billing=8,cpu=8,gres/gpu=2,mem=32G,node=1
2024-05-01T09:30:00|2024-05-01T10:00:05|2024-05-01T12:00:05|billing=16,cpu=16,gres/gpu:a100=4,gres/gpu=4,mem=64G,node=1
2024-05-01T10:00:00|2024-05-01T10:30:00|Unknown|billing=4,cpu=4,gres/gpu:a100=1,mem=16G,node=1
2024-05-01T11:00:00|Unknown|Unknown|
2024-05-01T12:00:00|None|2024-05-01T12:05:00|
"""


def test_parse_sacct():
    recs = parse_sacct(SACCT)
    assert [r.gpus for r in recs] == [2, 4, 1, 0, 0]  # untyped gres/gpu, else the typed ones, else 0
    assert recs[0].end_s - recs[0].start_s == 3600.0
    assert recs[1].start_s - recs[1].submit_s == 1805.0
    assert recs[2].end_s is None  # running
    assert recs[3].start_s is None and recs[3].end_s is None  # pending
    assert recs[4].start_s is None and recs[4].end_s is not None  # cancelled before starting
    assert parse_sacct(SACCT.split("\n", 1)[1]) == recs  # --noheader output parses the same
    with pytest.raises(ValueError, match="line 2"):
        parse_sacct("Submit|Start|End|AllocTRES\n2024-05-01T09:00:00|x")
    with pytest.raises(ValueError, match="line 1"):
        parse_sacct("yesterday|Unknown|Unknown|")


def test_estimate_from_history():
    recs = parse_sacct(SACCT)
    # lambda: 5 submissions over 09:00-12:00 = 3 h -> 4 / 3 per h.
    # mu: finished jobs ran 1 h and 2 h -> mean 1.5 h -> 2/3 per h. a = lambda / mu = 2.
    # c = 3 (given): Erlang C(3, 2) = 4/9; Wq = (4/9) / (3 * 2/3 - 4/3) = (4/9) / (2/3) = 2/3 h.
    q = estimate_from_history(recs, servers=3)
    assert q.lambda_per_h == pytest.approx(4 / 3)
    assert q.mu_per_h == pytest.approx(2 / 3)
    assert q.p_wait == pytest.approx(4 / 9)
    assert q.wq_h == pytest.approx(2 / 3)
    # Observed waits of the 3 started jobs: 5 s, 1805 s, 1800 s -> 1203.33 s.
    assert q.observed_wq_h == pytest.approx(3610 / 3 / 3600)
    assert any("lambda" in a for a in q.assumptions) and any("c = 3" in a for a in q.assumptions)
    # 9 cluster GPUs / (2 + 4) / 2 GPUs per finished job = 3 servers: the same estimate.
    assert estimate_from_history(recs, cluster_gpus=9).wq_h == pytest.approx(2 / 3)
    # Default c: at most 1 finished job ran at a time (one ends as the other starts) -> rho = 2: unstable.
    q1 = estimate_from_history(recs)
    assert q1.c == 1 and not q1.stable


def test_history_too_short_is_refused():
    with pytest.raises(ConfigError, match="at least 2 submissions"):
        estimate_from_history(parse_sacct(SACCT)[:1])
    with pytest.raises(ConfigError, match="finished jobs"):
        estimate_from_history(parse_sacct(SACCT)[3:])
