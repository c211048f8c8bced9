"""bench/lag.py runs end to end on a small cache (the 1 M-entry figures come from `make bench`)."""
from bench import lag


def test_lag_scenario_calls_every_analysis_endpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(lag, "ENTRIES", 5000)
    monkeypatch.setattr(lag, "ROUNDS", 1)
    proc = lag.starter()(str(tmp_path), None)
    try:
        res = lag.run(proc, 1.0, 1)
    finally:
        proc.stop()
    assert res["errors"] == 0 and res["entries"] == 5000
    assert set(res["endpoints"]) == {path for _, path in lag.ENDPOINTS}
    # the answers that look at entries say how many they looked at
    assert res["endpoints"]["/internal/cache/usage-patterns"]["sampling"] == {
        "sampled": True, "sample_size": 2000, "entries": 5000}
