"""bench/scrape.py's reading of every worker's loop holds (the figures the scrape target is judged on)."""
import time

import pytest

from bench.scrape import _holds, _holds_line


def _view(pid, scrape, kinds, longest):
    return {"pid": pid, "since": time.time() - 10, "busy_wall_seconds": 2.5 * pid, "labels": {"scrape": scrape} if scrape else {}, "kinds": kinds, "longest": longest,
            "gc": {"gen0": {"collections": 0, "longest_ms": 0.0}, "pending": [10, 0, 0], "thresholds": [700, 10, 10]}}


def _worst(held, cpu, wall, over, steps=10):
    return {"steps": steps, "max_held_ms": held, "max_cpu_ms": cpu, "max_wall_ms": wall, "over_5_ms": over,
            "cpu_ms_per_run": cpu / 2}


def _hold(held, kind, label=None):
    return {"held_ms": held, "cpu_ms": held, "wall_ms": held, "gc_ms": 0.0, "kind": kind, "label": label,
            "from": None, "to": "done"}


def test_the_worst_of_every_worker_and_what_else_held_the_loop_over_the_limit():
    a = _view(1, _worst(2.0, 1.9, 9.0, 0), {"scrape-task": _worst(2.0, 1.9, 9.0, 0),
                                            "batch": _worst(7.5, 7.0, 8.0, 2)},
              [_hold(7.5, "batch"), _hold(2.0, "scrape-task", "scrape")])
    b = _view(2, _worst(6.1, 6.0, 6.2, 1, steps=4), {"scrape-task": _worst(6.1, 6.0, 6.2, 1),
                                                     "batch": _worst(5.5, 5.0, 5.6, 1)},
              [_hold(6.1, "scrape-task", "scrape"), _hold(5.5, "batch")])
    r = _holds([a, b])
    assert (r["scrape_max_held_ms"], r["scrape_max_cpu_ms"], r["scrape_max_wall_ms"]) == (6.1, 6.0, 9.0)
    assert r["scrape_steps_over_5ms"] == 1 and r["scrape_steps"] == 14 and r["scrape_loop_cpu_ms"] == 3.0
    assert r["loop_max_held_ms"] == 7.5 and [h["held_ms"] for h in r["loop_longest_holds"]] == [7.5, 6.1, 5.5, 2.0]
    assert r["loop_holds_over_limit"] == {"batch": 7.5, "scrape-task": 6.1}
    assert set(r["gc"]) == {"1", "2"} and 0.49 <= r["loop_busy_share"] <= 0.5   # worker 2: 5 s of 10
    assert "young count 10 of 700" in _holds_line(r)


def test_no_scrape_recorded_is_an_error_unless_none_was_asked_for():
    quiet = _view(1, None, {}, [])
    with pytest.raises(RuntimeError, match="no scrape"):
        _holds([quiet])
    r = _holds([quiet], scrapes=False)
    assert r["scrape_max_held_ms"] == 0.0 and r["loop_max_held_ms"] == 0.0 and r["loop_holds_over_limit"] == {}


def test_the_series_that_appeared_after_the_load_are_named_with_their_count():
    from bench.scrape import _series, growth
    before = _series(b'# TYPE a counter\na_total{x="1"} 1\nb_bucket{le="1"} 2\nb_bucket{le="+Inf"} 2\nc 3\n')
    after = _series(b'a_total{x="1"} 1\na_total{x="2"} 5\nb_bucket{le="1"} 2\nb_bucket{le="+Inf"} 2\n'
                      b'b_bucket{le="1",e="t"} 1\nb_count{e="t"} 1\nd 1 1700\n')
    assert before == {'a_total{x="1"}', 'b_bucket{le="1"}', 'b_bucket{le="+Inf"}', "c"}
    assert growth(before, after) == {"per_name": {"a_total": 1, "b_bucket": 1, "b_count": 1, "d": 1},
                                     "some": ['a_total{x="2"}', 'b_count{e="t"}', "d"]}
    assert growth(after, after) == {}
