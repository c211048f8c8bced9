"""Smoke runs of the alternating scenarios access_log_cost and workers_scaling (bench/accesslog.py,
bench/workers.py) and the figures bench/middleware.py's _alternate derives from the rounds.  No timing
is asserted: only that each figure is there and is what the rounds say."""
import pytest

from bench import accesslog, workers
from bench.middleware import FOREIGN_LIMIT, _box_busy, _foreign_figures, _quartiles


def test_quartiles_are_nearest_rank_with_the_median_between():
    assert _quartiles([]) is None
    assert _quartiles([5.0]) == [5.0, 5.0, 5.0]
    assert _quartiles([4.0, 1.0, 3.0, 2.0]) == [1.0, 2.5, 4.0]
    assert _quartiles([float(x) for x in range(16)]) == [3.0, 7.5, 12.0]


def test_the_clean_median_leaves_out_every_round_with_other_load_in_either_run():
    acc = {"on": {"foreign": [0.0, 0.5, 0.05, 0.0, 0.0]}, "off": {"foreign": [0.02, 0.0, 0.3, 0.25, 0.0]}}
    r = _foreign_figures(acc, [10.0, 50.0, 40.0, 2.0, 6.0])
    assert r["foreign_cores_rounds"] == [0.02, 0.5, 0.3, 0.25, 0.0]
    assert r["clean_rounds"] == 3 and r["cost_percent_clean"] == 6.0   # rounds 0, 3, 4 (0.25 is the limit)
    assert FOREIGN_LIMIT == 0.25
    assert _foreign_figures(acc, [1.0, 2.0, 3.0, 4.0, 5.0][:2])["cost_percent_clean"] is None  # fewer than 3


def test_the_box_busy_clock_moves_with_work():
    before = _box_busy()
    sum(i * i for i in range(2_000_000))
    assert _box_busy() > before


def test_rounds_grow_with_the_duration_and_stay_even():
    assert accesslog.rounds_for(5) == 16 and workers.rounds_for(5) == 16
    assert accesslog.rounds_for(0.1) == 2 and workers.rounds_for(0.1) == 2
    assert all(accesslog.rounds_for(d) % 2 == 0 and workers.rounds_for(d) % 2 == 0 for d in (1, 2.5, 7, 60))


def test_access_log_cost_runs_and_its_log_holds_a_line_per_request(tmp_path):
    proc = accesslog.starter()(str(tmp_path), None)
    try:
        res = accesslog.run(proc, 0.5, 4)
    finally:
        proc.stop()
    assert res["errors"] == 0 and res["access_log_off_errors"] == 0
    assert res["rounds"] == 2 and len(res["rps_rounds"]) == len(res["cpu_cost_percent_rounds"]) == 2
    assert res["judged_on"] == "access_log_cost_percent"
    assert res["access_log_cost_percent"] == pytest.approx(_median_of(res["cost_percent_rounds"]), abs=0.01)
    assert res["cpu_us_per_request"] > 0 and res["off_cpu_us_per_request"] > 0
    assert len(res["foreign_cores_rounds"]) == 2
    # every request the log was on for has its line (wrk does not count the ones it cut off at the end)
    assert res["access_log_lines"] >= res["requests"] > 0
    side = res["side_by_side"]  # the same service with ACCESS_LOG=false beside it, both driven at once
    assert side["rounds"] == 2 and len(side["cost_percent_rounds"]) == 2 and side["errors"] == side["off_errors"] == 0
    assert res["access_log_cost_percent_side_by_side"] == side["cost_percent"] == pytest.approx(
        _median_of(side["cost_percent_rounds"]), abs=0.01)
    assert side["rps"] > 0 and side["off_rps"] > 0 and side["cpu_us_per_request"] > 0


def test_workers_scaling_runs_and_its_ratio_is_the_rounds_median(tmp_path):
    two = workers.starter()(str(tmp_path), None)
    try:
        res = workers.run(two, 0.5, 8)
    finally:
        two.stop()
    assert res["errors"] == 0 and res["one_worker_errors"] == 0 and res["judged_on"] == "scaling"
    ratios = [a / b for a, b in zip(res["rps_rounds"], res["off_rps_rounds"])]
    assert res["scaling_rounds"] == pytest.approx(ratios, abs=0.002)   # two workers' req/s over one's
    assert res["scaling"] == pytest.approx(_median_of(res["scaling_rounds"]), abs=0.002)
    assert res["cpu_us_per_request"] > 0 and res["off_cpu_us_per_request"] > 0
    assert res["gen_cpu_us_per_request"] > 0 and res["ceiling"] > 0


def _median_of(values):
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
