"""The receiver in-process, fed payloads captured from a real Alertmanager: modes, dedupe, limits, revert, safety."""
from __future__ import annotations

import time

import pytest

from exporter.playbook import BY_NAME
from service.context import CTX
from tests.helpers import API_KEY
from tests.remediation.conftest import load, variant

HOOK = "/internal/alerts/webhook"
ERR_ACTOR = "alertmanager:LlmapiErrorRateNeedsAttention"


async def post(client, payload, status=200, **kw):
    r = await client.post(HOOK, json=payload, **kw)
    body = await r.json()
    assert r.status == status, body
    return body


async def mode(client, entry, m):
    r = await client.post(f"/internal/remediation/{entry}", json={"mode": m})
    assert r.status == 200, await r.text()
    return await r.json()


async def config(client) -> dict:
    r = await client.get("/internal/config")
    return await r.json()


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def grew(before: str, after: str, **labels) -> float:
    """How much llmapi_remediation_actions_total{labels} grew between two scrapes (counters are per process)."""
    name = "llmapi_remediation_actions_total"
    return metric(after, name, **labels) - metric(before, name, **labels)


async def metrics(client) -> str:
    r = await client.get("/metrics")
    return await r.text()


# ---- modes ----------------------------------------------------------------------------------
async def test_shipped_dry_run_says_what_it_would_do_and_changes_nothing(make_client):
    c = await make_client()
    m0 = await metrics(c)  # counters are per process: compare with the start
    before = await config(c)
    body = await post(c, load("error_rate_firing"))
    res = body["results"][0]
    assert res["entry"] == "error_rate" and res["mode"] == "dry_run" and res["outcome"] == "dry_run"
    assert res["would_change"]["changes"] == {"resilience": {"preset": "aggressive"}}
    assert res["would_change"]["previous"] == {"resilience": {"preset": "simple"}}
    assert "would run POST /internal/resilience/config/apply-preset" in res["message"]
    resolved = (await post(c, load("error_rate_resolved")))["results"][0]
    assert resolved["outcome"] == "dry_run" and "would revert" in resolved["message"]
    after = await config(c)
    assert after["version"] == before["version"] and after["overrides"] == before["overrides"]
    m = await metrics(c)
    assert grew(m0, m, entry="error_rate", mode="dry_run", outcome="dry_run") == 2


async def test_enforce_applies_once_per_fingerprint_as_the_alertmanager_actor(make_client):
    c = await make_client()
    m0 = await metrics(c)  # counters are per process: compare with the start
    await mode(c, "error_rate", "enforce")
    first = (await post(c, load("error_rate_firing")))["results"][0]
    assert first["outcome"] == "applied" and first["changes"] == {"resilience": {"preset": "aggressive"}}
    for _ in range(3):  # Alertmanager repeats the notification
        again = (await post(c, load("error_rate_firing")))["results"][0]
        assert again["outcome"] == "duplicate"
    r = await c.get("/internal/resilience/config/current")
    assert (await r.json())["preset"] == "aggressive"   # live: the resilience subsystem reads it
    hist = (await (await c.get("/internal/config/history")).json())["history"]
    mine = [h for h in hist if h["section"] == "resilience"]
    assert len(mine) == 1 and mine[0]["actor"] == ERR_ACTOR
    assert mine[0]["source"] == "remediation:resilience/config/apply-preset" and mine[0]["request_id"]
    m = await metrics(c)
    assert grew(m0, m, entry="error_rate", mode="enforce", outcome="applied") == 1
    assert metric(m, "llmapi_remediation_active", entry="error_rate") == 1
    status = await (await c.get("/internal/remediation")).json()
    assert [p["entry"] for p in status["pending_reverts"]] == ["error_rate"]
    assert next(e for e in status["entries"] if e["name"] == "error_rate")["runs_last_hour"] == 1


async def test_resolve_restores_exactly_the_config_before_the_action(make_client):
    c = await make_client()
    m0 = await metrics(c)  # counters are per process: compare with the start
    await mode(c, "error_rate", "enforce")
    before = await config(c)
    await post(c, load("error_rate_firing"))
    res = (await post(c, load("error_rate_resolved")))["results"][0]
    assert res["outcome"] == "reverted", res
    assert res["reverts"][0]["restored"] == {"resilience": {"preset": "simple"}}
    after = await config(c)
    assert {k: v["values"] for k, v in after["sections"].items()} == \
        {k: v["values"] for k, v in before["sections"].items()}
    again = (await post(c, load("error_rate_resolved")))["results"][0]
    assert again["outcome"] == "duplicate"
    m = await metrics(c)
    assert grew(m0, m, entry="error_rate", outcome="reverted") == 1
    assert grew(m0, m, entry="error_rate", outcome="effective") == 1
    assert metric(m, "llmapi_remediation_active", entry="error_rate") == 0


async def test_a_manual_change_between_action_and_revert_is_kept(make_client):
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    await post(c, load("error_rate_firing"))
    r = await c.post("/internal/resilience/config/apply-preset", json={"preset": "production"})
    assert r.status == 200
    res = (await post(c, load("error_rate_resolved")))["results"][0]
    assert res["outcome"] == "revert_skipped"
    assert res["reverts"][0]["changed_since"] == ["resilience.preset"]
    assert (await config(c))["sections"]["resilience"]["values"]["preset"] == "production"
    hist = (await (await c.get("/internal/remediation/history")).json())["history"]
    assert hist[0]["outcome"] == "revert_skipped"


async def test_a_manual_change_to_the_same_value_and_back_still_counts(make_client):
    """A person set the field to something else and back: the history shows it, the revert is skipped."""
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    await post(c, load("error_rate_firing"))
    for preset in ("production", "aggressive"):
        await c.post("/internal/resilience/config/apply-preset", json={"preset": preset})
    res = (await post(c, load("error_rate_resolved")))["results"][0]
    assert res["outcome"] == "revert_skipped"
    assert (await config(c))["sections"]["resilience"]["values"]["preset"] == "aggressive"


async def test_off_does_nothing_and_is_not_recorded(make_client):
    c = await make_client()
    await mode(c, "error_rate", "off")
    res = (await post(c, load("error_rate_firing")))["results"][0]
    assert res["outcome"] == "off"
    assert (await (await c.get("/internal/remediation/history")).json())["history"] == []


# ---- limits -----------------------------------------------------------------------------------
async def test_cooldown_holds_for_a_new_firing_of_the_same_entry(make_client):
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    await post(c, load("error_rate_firing"))
    await post(c, load("error_rate_resolved"))
    refire = variant("error_rate_firing", starts_at="2030-01-01T00:00:00Z")
    res = (await post(c, refire))["results"][0]
    assert res["outcome"] == "cooldown"
    assert (await config(c))["sections"]["resilience"]["values"]["preset"] == "simple"


async def test_entry_cap_per_hour_holds(make_client, tune_entry):
    tune_entry("error_rate", cooldown_seconds=0, max_runs_per_hour=2)
    c = await make_client()
    m0 = await metrics(c)  # counters are per process: compare with the start
    await mode(c, "error_rate", "enforce")
    outcomes = []
    for i in range(3):
        p = variant("error_rate_firing", fingerprint=f"{i:016x}", job=f"job{i}")
        outcomes.append((await post(c, p))["results"][0]["outcome"])
        r = variant("error_rate_resolved", fingerprint=f"{i:016x}", job=f"job{i}")
        await post(c, r)
    assert outcomes == ["applied", "applied", "entry_cap"]
    m = await metrics(c)
    assert grew(m0, m, entry="error_rate", outcome="entry_cap") == 1


async def test_global_hourly_cap_holds_over_entries(make_client):
    c = await make_client()
    r = await c.post("/internal/config/remediation", json={"max_actions_per_hour": 1})
    assert r.status == 200
    await mode(c, "error_rate", "enforce")
    await mode(c, "memory_pressure", "enforce")
    assert (await post(c, load("error_rate_firing")))["results"][0]["outcome"] == "applied"
    res = (await post(c, load("memory_firing")))["results"][0]
    assert res["entry"] == "memory_pressure" and res["outcome"] == "global_cap"
    # a later repeat is re-evaluated (the claim was released), still capped
    assert (await post(c, load("memory_firing")))["results"][0]["outcome"] == "global_cap"


# ---- safety --------------------------------------------------------------------------------
async def test_kill_switch(make_client):
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    assert (await c.post("/internal/config/remediation", json={"enabled": False})).status == 200
    res = (await post(c, load("error_rate_firing")))["results"][0]
    assert res["outcome"] == "disabled"
    assert (await config(c))["sections"]["resilience"]["values"]["preset"] == "simple"


async def test_no_action_while_a_person_set_emergency_mode(make_client):
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    assert (await c.post("/internal/monitoring/emergency-mode", json={"reason": "incident 42"})).status == 200
    version = (await config(c))["version"]
    res = (await post(c, load("error_rate_firing")))["results"][0]
    assert res["outcome"] == "emergency_by_person"
    assert (await config(c))["version"] == version
    # once the person ends it, the next repeat of the same alert acts
    assert (await c.post("/internal/monitoring/emergency-mode", json={"enabled": False})).status == 200
    assert (await post(c, load("error_rate_firing")))["results"][0]["outcome"] == "applied"


async def test_emergency_mode_set_by_the_loop_reverts_exactly(make_client, tune_entry):
    c = await make_client()
    await mode(c, "slow_api", "enforce")
    before = await config(c)
    p = variant("error_rate_firing", fingerprint="00000000000000aa", alertname="LlmapiApiResponseTimeP95NeedsAttention",
                kpi="api_response_time_p95")
    res = (await post(c, p))["results"][0]
    assert res["outcome"] == "applied" and res["changes"]["monitoring"]["emergency_mode"] is True
    em = await (await c.get("/internal/monitoring/emergency-mode")).json()
    assert em["emergency_mode"] is True
    # the loop's own emergency mode does not block other entries
    await mode(c, "error_rate", "enforce")
    assert (await post(c, load("error_rate_firing")))["results"][0]["outcome"] in ("applied",)
    await post(c, load("error_rate_resolved"))
    r = variant("error_rate_resolved", fingerprint="00000000000000aa", alertname="LlmapiApiResponseTimeP95NeedsAttention",
                kpi="api_response_time_p95")
    assert (await post(c, r))["results"][0]["outcome"] == "reverted"
    after = await config(c)
    for name in ("ai", "resilience", "cache", "monitoring"):
        assert after["sections"][name]["values"] == before["sections"][name]["values"], name


# ---- verification, escalation, expiry ----------------------------------------------------------
async def test_ineffective_action_escalates_to_the_next_and_resolve_reverts_both(make_client, tune_entry):
    tune_entry("memory_pressure", verify_after_seconds=0.001)
    c = await make_client()
    m0 = await metrics(c)  # counters are per process: compare with the start
    await mode(c, "memory_pressure", "enforce")
    rem = c.app[CTX].extras["remediation"]
    rem.kpi_check = lambda kpi: (False, f"{kpi} still high")
    first = (await post(c, load("memory_firing")))["results"][0]
    assert first["outcome"] == "applied" and first["action"] == "POST /internal/cache/emergency-cleanup"
    assert {"before", "after", "evicted", "bytes_freed"} <= set(first["result"]), first["result"]  # the cleanup ran
    await rem.check(time.time() + 1)
    hist = (await (await c.get("/internal/remediation/history")).json())["history"]
    assert [h["outcome"] for h in hist[:2]] == ["escalated", "ineffective"]
    assert (await config(c))["sections"]["cache"]["values"]["max_memory_mb"] == 50
    res = (await post(c, load("memory_resolved")))["results"][0]
    assert res["outcome"] == "reverted"
    assert (await config(c))["sections"]["cache"]["values"]["max_memory_mb"] == 100
    m = await metrics(c)
    assert grew(m0, m, entry="memory_pressure", outcome="ineffective") == 1
    assert grew(m0, m, entry="memory_pressure", outcome="escalated",
                  action="cache/optimize-memory") == 1


async def test_effective_action_is_recorded_and_not_escalated(make_client, tune_entry):
    tune_entry("memory_pressure", verify_after_seconds=0.001)
    c = await make_client()
    await mode(c, "memory_pressure", "enforce")
    rem = c.app[CTX].extras["remediation"]
    rem.kpi_check = lambda kpi: (True, "recovered")
    await post(c, load("memory_firing"))
    await rem.check(time.time() + 1)
    await rem.check(time.time() + 1)
    hist = (await (await c.get("/internal/remediation/history")).json())["history"]
    assert [h["outcome"] for h in hist] == ["effective", "applied"]
    assert (await config(c))["sections"]["cache"]["values"]["max_memory_mb"] == 100


async def test_an_action_applied_too_long_is_reverted(make_client, tune_entry):
    tune_entry("error_rate", max_applied_seconds=0.001)
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    await post(c, load("error_rate_firing"))
    await c.app[CTX].extras["remediation"].check(time.time() + 1)
    assert (await config(c))["sections"]["resilience"]["values"]["preset"] == "simple"
    hist = (await (await c.get("/internal/remediation/history")).json())["history"]
    assert hist[0]["outcome"] == "reverted" and "applied longer than" in hist[0]["why"]
    res = (await post(c, load("error_rate_resolved")))["results"][0]
    assert res["outcome"] == "nothing_to_revert"


# ---- operator endpoints --------------------------------------------------------------------------
async def test_operator_view_and_dry_run_now(make_client):
    c = await make_client()
    st = await (await c.get("/internal/remediation")).json()
    assert {e["name"] for e in st["entries"]} == set(BY_NAME)
    assert all(e["mode"] == "dry_run" for e in st["entries"]) and st["enabled"] is True
    r = await c.post("/internal/remediation/high_load", json={"dry_run": True})
    out = await r.json()
    assert r.status == 200 and out["would_change"]["changes"] == {"rate_limit": {"global_limit_per_minute": 1000}}
    version = (await config(c))["version"]
    assert (await config(c))["sections"]["rate_limit"]["values"]["global_limit_per_minute"] is None
    assert (await config(c))["version"] == version


@pytest.mark.parametrize("path,body,status,field", [
    ("/internal/remediation/nope", {"mode": "enforce"}, 404, "entry"),
    ("/internal/remediation/error_rate", {"mode": "always"}, 422, "mode"),
    ("/internal/remediation/error_rate", {"mode": "enforce", "dry_run": True}, 422, "body"),
    ("/internal/remediation/error_rate", {"dry_run": False}, 422, "dry_run"),
    ("/internal/remediation/error_rate", {"colour": 1}, 422, "colour"),
    ("/internal/config/remediation", {"error_rate_mode": "yes"}, 422, None),
])
async def test_operator_bad_input(make_client, path, body, status, field):
    c = await make_client()
    version = (await config(c))["version"]
    r = await c.post(path, json=body)
    out = await r.json()
    assert r.status == status, out
    assert out["error_code"] and out["request_id"]
    if field:
        assert out["details"]["field"] == field
    assert (await config(c))["version"] == version


# ---- bad payloads, unknown alerts ------------------------------------------------------------------
def _bad_payloads():
    good = load("error_rate_firing")

    def mutate(fn):
        import copy
        p = copy.deepcopy(good)
        fn(p)
        return p

    return [
        ("not an object", [1, 2], "body"),
        ("version 3", mutate(lambda p: p.update(version="3")), "version"),
        ("no status", mutate(lambda p: p.pop("status")), "status"),
        ("alerts not a list", mutate(lambda p: p.update(alerts={})), "alerts"),
        ("alert status", mutate(lambda p: p["alerts"][0].update(status="burning")), "alerts[0].status"),
        ("no fingerprint", mutate(lambda p: p["alerts"][0].pop("fingerprint")), "alerts[0].fingerprint"),
        ("no alertname", mutate(lambda p: p["alerts"][0]["labels"].pop("alertname")), "alerts[0].labels.alertname"),
        ("label not a string", mutate(lambda p: p["alerts"][0]["labels"].update(job=5)), "alerts[0].labels.job"),
        ("second alert bad", mutate(lambda p: p["alerts"].append({"status": "firing"})), "alerts[1].labels"),
    ]


@pytest.mark.parametrize("name,body,field", _bad_payloads(), ids=[b[0] for b in _bad_payloads()])
async def test_bad_payloads_get_422_and_change_nothing(make_client, name, body, field):
    c = await make_client()
    await mode(c, "error_rate", "enforce")
    version = (await config(c))["version"]
    out = await post(c, body, status=422)
    assert out["error_code"] == "VALIDATION_ERROR" and out["details"]["field"] == field
    assert (await config(c))["version"] == version
    assert (await (await c.get("/internal/remediation/history")).json())["history"] == []


async def test_malformed_json_is_400_and_changes_nothing(make_client):
    c = await make_client()
    r = await c.post(HOOK, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and (await r.json())["error_code"] == "INVALID_JSON"


async def test_unknown_alerts_are_acknowledged_and_ignored(make_client):
    c = await make_client()
    version = (await config(c))["version"]
    out = await post(c, variant("error_rate_firing", alertname="SomethingElse"))
    assert out["results"][0]["outcome"] == "ignored" and out["results"][0]["entry"] is None
    assert (await config(c))["version"] == version


# ---- auth -------------------------------------------------------------------------------------
async def test_webhook_credential_from_a_file_is_accepted_on_the_webhook_only(make_client, tmp_path):
    token = "alertmanager-credential-0123456789"
    f = tmp_path / "token"
    f.write_text(token + "\n")
    c = await make_client(ALERT_WEBHOOK_TOKEN_FILE=str(f))
    c.session.headers.pop("X-API-Key", None)
    r = await c.post(HOOK, json=load("error_rate_firing"), headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()
    r = await c.get("/internal/config", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 401
    r = await c.post(HOOK, json=load("error_rate_firing"), headers={"Authorization": "Bearer wrong-credential-000000"})
    assert r.status == 401
    r = await c.post(HOOK, json=load("error_rate_firing"))
    assert r.status == 401


async def test_a_client_key_gets_403(make_client):
    c = await make_client(ADDITIONAL_API_KEYS="client-key-0123456789")  # a client key: scope text only
    r = await c.post(HOOK, json=load("error_rate_firing"), headers={"X-API-Key": "client-key-0123456789"})
    assert r.status == 403 and (await r.json())["error_code"] == "FORBIDDEN"
    assert (await (await c.get("/internal/remediation/history")).json())["history"] == []
    r = await c.post(HOOK, json=load("error_rate_firing"), headers={"X-API-Key": API_KEY})
    assert r.status == 200
