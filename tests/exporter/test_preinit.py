"""Known label values exist from the start (issue 14): right after start, before any request, every family of
exporter/metrics.py has at least one series, so a rate() panel reads 0 instead of "No data".

Each owner creates its series at 0 from the label values it emits (constants next to the emitting code);
a family that depends on an optional part (Redis, a provider with a connection pool) is created when that
part is configured.  The exemptions, each with its reason, are below; nothing else may be empty.
"""
import json
import re
import urllib.request

from exporter.metrics import BREAKER_STATES
from tests.dashboards.test_dashboards import exposed_names
from tests.helpers import API_KEY

# empty until the first event in every setup
UNTIL_FIRST_EVENT = {
    "llmapi_ai_upstream_remaining": "the upstream's quota is unknown until it sends x-ratelimit-remaining-*; "
                                    "a 0 would read as 'quota exhausted'",
    "llmapi_config_changes": "section x actor (the key names, startup, rollback, peer, alertmanager, other) is "
                             "about 24 x 8 combinations of which a few ever move: at 0 they would cost ~190 series "
                             "of the budget; its panel reads 0 through `or on() vector(0)` and the config-change "
                             "annotation follows llmapi_config_version",
}
# what only exists with REDIS_URL (created at start when it is set: the second test)
REDIS_ONLY = {
    "llmapi_cache_l2_errors": "failed cache L2 commands: no L2 without Redis",
    "llmapi_cache_l2_transitions": "L2 outages and recoveries: no L2 without Redis",
    "llmapi_rate_limit_leases": "token leases are asked of Redis",
    "llmapi_redis_command_duration_seconds": "Redis command latency",
}
# what only exists with a provider that has a connection pool (the openai provider: the second test)
POOL_ONLY = {name: "the local provider has no connection pool" for name in (
    "llmapi_ai_pool_connections_in_use", "llmapi_ai_pool_max_connections", "llmapi_ai_pool_waiting_requests",
    "llmapi_ai_pool_wait_seconds")}


def scrape(url: str) -> list[str]:
    req = urllib.request.Request(f"{url}/metrics", headers={"X-API-Key": API_KEY})
    return [ln for ln in urllib.request.urlopen(req, timeout=10).read().decode().splitlines() if ln and ln[0] != "#"]


def empty_families(url: str) -> set[str]:
    """The families of the registry without a single sample in a scrape of url."""
    samples = {re.match(r"[A-Za-z_:][\w:]*", ln).group(0) for ln in scrape(url)}
    return {family for family, names in exposed_names().items() if not names & samples}


def series(url: str, name: str) -> set[frozenset]:
    """The label sets of `name` in a scrape."""
    out = set()
    for ln in scrape(url):
        head = ln.split(" ", 1)[0]
        if head.split("{", 1)[0] == name:
            out.add(frozenset(re.findall(r'(\w+)="([^"]*)"', head)))
    return out


def post(url: str, path: str, body: dict) -> None:
    req = urllib.request.Request(f"{url}{path}", json.dumps(body).encode(), method="POST",
                                 headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=10).status == 200


def test_the_exemptions_name_real_families():
    families = exposed_names()
    for exempt in (UNTIL_FIRST_EVENT, REDIS_ONLY, POOL_ONLY):
        assert set(exempt) <= set(families), set(exempt) - set(families)


def test_every_family_has_a_series_at_start_with_the_default_config(service_factory):
    svc = service_factory()  # memory cache, local provider, API keys configured
    empty = empty_families(svc.url)
    assert empty - set(UNTIL_FIRST_EVENT) - set(REDIS_ONLY) - set(POOL_ONLY) == set()
    # within a family: every state of every breaker, not only "open"
    transitions = series(svc.url, "llmapi_circuit_breaker_transitions_total")
    breakers = {dict(s)["breaker"] for s in transitions}
    assert breakers and transitions == {frozenset({("breaker", b), ("state", st)})
                                        for b in breakers for st in BREAKER_STATES}


def test_a_config_change_creates_the_series_of_its_new_label_values(service_factory):
    """Label values that come from config (a pressure response, a tier, a guarded scope) follow it live."""
    svc = service_factory()
    post(svc.url, "/internal/config/cache", {"pressure_response": "evict_lfu", "emergency_response": "clear_all"})
    post(svc.url, "/internal/config/rate_limit", {"client_tier_limits": {"gold": 500}})
    post(svc.url, "/internal/config/auth", {"protect_metrics": True})
    pressure = {dict(s)["level"] + ":" + dict(s)["response"] for s in series(svc.url, "llmapi_cache_pressure_events_total")}
    assert {"pressure:evict_lfu", "emergency:clear_all"} <= pressure
    decisions = {(dict(s)["decision"], dict(s)["tier"]) for s in series(svc.url, "llmapi_rate_limit_decisions_total")}
    assert {("allowed", "gold"), ("denied", "gold"), ("denied", "default"), ("allowed", "global")} <= decisions
    scopes = {(dict(s)["reason"], dict(s)["scope"]) for s in series(svc.url, "llmapi_auth_rejections_total")}
    assert {(r, "metrics") for r in ("missing", "invalid", "forbidden")} <= scopes
    assert not {sc for _, sc in scopes} - {"text", "admin", "metrics"}  # health is not guarded: never rejected


def test_redis_and_pool_families_have_series_at_start_when_configured(service_factory, fake_upstream_factory,
                                                                      redis_url):
    up = fake_upstream_factory()
    svc = service_factory(REDIS_URL=redis_url, AI_PROVIDER="openai", OPENAI_BASE_URL=f"{up.url}/v1",
                          OPENAI_API_KEY="sk-test")
    assert empty_families(svc.url) - set(UNTIL_FIRST_EVENT) == set()
