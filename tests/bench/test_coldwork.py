"""bench/coldwork.py reports the four timings of its unit (what they are worth is the bench's to say)."""
from bench import coldwork


def test_probe_times_the_unit_in_each_condition():
    out = coldwork.probe(reps=3)
    assert set(out) == {"hot_us", "after_sleep_2ms_us", "after_sleep_50ms_us", "after_busy_50ms_us"}
    assert all(isinstance(v, float) and v > 0 for v in out.values())
