"""Bench scenarios for the uncached path: the service in front of the fake OpenAI-compatible upstream
(AI_PROVIDER=openai, ENABLE_CACHING=false, the default config otherwise), against the upstream called
directly and against bench/proxy_floor.py, each pair in alternating rounds of one run.

uncached_overhead   p50 the service adds over the upstream called directly, at c=1 with a 0 ms and a
                    50 ms upstream, and p99 at c=64 with the 50 ms upstream (targets: <= 0.5 ms at
                    c=1; p99 within 10 ms at c=64); proxy_floor in the same rounds, so each figure
                    has the floor's own beside it (`floor_added_*`) and the service's excess over it
                    (`over_floor_*`); and a C relay (haproxy, bench/relay.py) in the same rounds when
                    installed (`relay_added_*`): what forwarding costs this machine when the
                    forwarder's code is small; and `cold_work` (bench/coldwork.py): the same Python
                    work back to back and after 50 ms, the machine's price for code that has not run
proxy_capacity      req/s at c=256 with the 50 ms upstream, the pool sized for it (MAX_CONNECTIONS=1000),
                    against proxy_floor with the same pool (target: >= 0.8x); beside it each process's CPU
                    per request (`cpu_ratio_vs_proxy_floor`: the floor's over the service's, the same
                    ratio as req/s per core, and far less moved by load from elsewhere on the box)
"""
from __future__ import annotations

import json

import psutil

from bench import coldwork, relay
from bench.load import drive
from bench.middleware import MIN_ROUND
from service.providers.base import TextRequest
from service.providers.openai_compat import SYSTEM_PROMPT, build_prompt
from tests.helpers import API_KEY, PYTHON, Proc, free_port, service_env, start_fake_upstream

TEXT = ("Operators measure what the gateway adds to every call: the time between the client's request "
        "and the upstream's answer that is not the upstream's own.")
BODY = json.dumps({"text": TEXT, "options": {"max_length": 20}}).encode()
ROUNDS = 4
POOL = 1000


def _chat_body() -> bytes:
    req = TextRequest(operation="summarize", text=TEXT, options={"max_length": 20})
    return json.dumps({"model": "gpt-4o-mini", "temperature": 0.0,
                       "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                    {"role": "user", "content": build_prompt(req)}]}).encode()


class _Group:
    """Processes started together, stopped together."""

    def __init__(self, state: str):
        self.state = state
        self.procs: list[Proc] = []

    def keep(self, p: Proc) -> Proc:
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def upstream(self, latency_ms: float) -> Proc:
        return self.keep(start_fake_upstream("--latency-ms", str(latency_ms)))

    def service(self, up: Proc, **env) -> Proc:
        port = free_port()
        e = service_env(port, self.state, LOG_LEVEL="INFO", AI_PROVIDER="openai", OPENAI_BASE_URL=f"{up.url}/v1",
                        OPENAI_API_KEY="sk-bench", ENABLE_CACHING="false", **env)
        return self.keep(Proc([PYTHON, "-m", "service"], e, port, "/v1/health"))

    def floor(self, up: Proc) -> Proc:
        port = free_port()
        return self.keep(Proc([PYTHON, "-m", "bench.proxy_floor", "--port", str(port), "--upstream",
                               f"{up.url}/v1", "--pool", str(POOL)], dict(self.procs[0].env), port, "/v1/health"))


def starter():
    return lambda state, _redis: _Group(state)


def _median(v: list[float]) -> float:
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _rounds(targets: list[tuple], duration: float, connections: int, pids: list[int] | None = None) -> list[list[dict]]:
    """ROUNDS rounds of each (url, body, headers) target back to back, the order reversed every other round;
    with `pids` (one process per target) each round also gives that process's CPU µs per request."""
    per = max(MIN_ROUND, duration / ROUNDS)
    out: list[list[dict]] = [[] for _ in targets]
    for i in range(ROUNDS):
        order = list(range(len(targets)))
        for which in (order if i % 2 == 0 else order[::-1]):
            url, body, headers = targets[which]
            before = _cpu_seconds(pids[which]) if pids else 0.0
            r = drive(url, body, headers, per, connections)
            if pids and r["requests"]:
                r["cpu_us_per_request"] = (_cpu_seconds(pids[which]) - before) * 1e6 / r["requests"]
            out[which].append(r)
    return out


def overhead(group: _Group, duration: float, _connections: int) -> dict:
    svc_h = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    up_h = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    chat = _chat_body()
    why_no_relay = relay.missing()
    cold = coldwork.probe()  # the machine's price for code that has not run for a while (bench/coldwork.py)
    print(f"  the same Python work: {cold['hot_us']} µs back to back, {cold['after_sleep_50ms_us']} µs after 50 ms "
          f"asleep, {cold['after_busy_50ms_us']} µs after 50 ms busy-waiting")
    out = {}
    for latency, conns, stat in ((0, 1, "p50_ms"), (50, 1, "p50_ms"), (50, 64, "p99_ms")):
        group.stop()
        up = group.upstream(latency)
        svc = group.service(up)
        floor = group.floor(up)
        targets = [(f"{svc.url}/v1/text/summarize", BODY, svc_h), (f"{up.url}/v1/chat/completions", chat, up_h),
                   (f"{floor.url}/v1/text/summarize", BODY, {"Content-Type": "application/json"})]
        if why_no_relay is None:
            rel = group.keep(relay.start(up.port, dict(group.procs[0].env)))
            targets.append((f"{rel.url}/v1/chat/completions", chat, up_h))
        for url, body, h in targets:
            drive(url, body, h, 1.0, conns)  # warm: connections, memo
        rs, rd, rf, *rr = _rounds(targets, duration, conns)
        diffs = [s[stat] - d[stat] for s, d in zip(rs, rd)]
        floor_diffs = [f[stat] - d[stat] for f, d in zip(rf, rd)]
        key = f"{latency}ms_c{conns}"
        out[key] = {"service_" + stat: round(_median([r[stat] for r in rs]), 3),
                    "direct_" + stat: round(_median([r[stat] for r in rd]), 3),
                    "proxy_floor_" + stat: round(_median([r[stat] for r in rf]), 3),
                    "added_" + stat: round(_median(diffs), 3), "rounds": [round(d, 3) for d in diffs],
                    "floor_added_" + stat: round(_median(floor_diffs), 3),
                    "over_floor_" + stat: round(_median([s[stat] - f[stat] for s, f in zip(rs, rf)]), 3),
                    "errors": sum(r["errors"] for r in rs)}
        o = out[key]
        if rr:
            o["relay_added_" + stat] = round(_median([r[stat] - d[stat] for r, d in zip(rr[0], rd)]), 3)
            relay_says = f"; a C relay (haproxy) adds {o['relay_added_' + stat]:.3f} ms"
        else:
            o["relay_skipped"] = why_no_relay
            relay_says = f"; no C relay row: {why_no_relay}"
        print(f"  upstream {latency} ms, c={conns}: the service adds {o['added_' + stat]:.3f} ms at {stat[:3]} "
              f"({o['service_' + stat]:.2f} vs {o['direct_' + stat]:.2f} direct); proxy_floor adds "
              f"{o['floor_added_' + stat]:.3f} ms, the service {o['over_floor_' + stat]:.3f} ms more{relay_says}")
    first = out["50ms_c1"]
    return {"rps": 0.0, "p50_ms": first["service_p50_ms"], "p99_ms": out["50ms_c64"]["service_p99_ms"],
            "requests": 0, "errors": sum(v["errors"] for v in out.values()), "overhead": out, "cold_work": cold}


def capacity(group: _Group, duration: float, _connections: int) -> dict:
    conns = 256
    up = group.upstream(50)
    svc = group.service(up, MAX_CONNECTIONS=str(POOL), KEEPALIVE_CONNECTIONS=str(POOL))
    floor = group.floor(up)
    svc_h = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    a = (f"{svc.url}/v1/text/summarize", BODY, svc_h)
    b = (f"{floor.url}/v1/text/summarize", BODY, {"Content-Type": "application/json"})
    for url, body, h in (a, b):
        drive(url, body, h, 1.0, conns)
    rs, rf = _rounds([a, b], duration, conns, pids=[svc.proc.pid, floor.proc.pid])
    ratios = [s["rps"] / f["rps"] for s, f in zip(rs, rf) if f["rps"]]
    rps, frps = _median([r["rps"] for r in rs]), _median([r["rps"] for r in rf])
    ratio = round(_median(ratios), 3) if ratios else None
    # CPU per request: what req/s at saturation comes from, and what load from elsewhere on the box moves least
    cpu_s, cpu_f = (_median([r.get("cpu_us_per_request", 0.0) for r in x]) for x in (rs, rf))
    cpu_ratio = round(cpu_f / cpu_s, 3) if cpu_s else None
    print(f"  c={conns}, 50 ms upstream, pool {POOL}: service {rps:.0f} req/s, proxy_floor {frps:.0f} req/s: "
          f"{ratio}x; CPU per request {cpu_s:.0f} µs vs the floor's {cpu_f:.0f} µs ({cpu_ratio}x the floor's req/s "
          f"per core)")
    return {"rps": rps, "p50_ms": _median([r["p50_ms"] for r in rs]), "p99_ms": _median([r["p99_ms"] for r in rs]),
            "requests": sum(r["requests"] for r in rs), "errors": sum(r["errors"] for r in rs),
            "proxy_floor_rps": round(frps, 1), "ratio_vs_proxy_floor": ratio,
            "ratio_rounds": [round(r, 3) for r in ratios],
            "cpu_us_per_request": round(cpu_s, 1), "proxy_floor_cpu_us_per_request": round(cpu_f, 1),
            "cpu_ratio_vs_proxy_floor": cpu_ratio}
