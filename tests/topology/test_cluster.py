"""The service on a 3-primary Redis Cluster: every key it writes obeys the slot rules."""
import time

import pytest
from redis.crc import key_slot

from tests.helpers import API_KEY
from tests.topology.conftest import Monitor, call

pytestmark = pytest.mark.topology

TEXT = ("Redis Cluster spreads keys over hash slots. A command that names keys of two slots fails with CROSSSLOT, "
        "so every key of one operation must carry the same hash tag.")

# commands whose arguments name keys: (first key index, how many: None = the rest, "numkeys" = EVAL style)
KEYED = {"GET": (1, 1), "SET": (1, 1), "HSET": (1, 1), "HGET": (1, 1), "HGETALL": (1, 1), "HDEL": (1, 1),
         "HEXISTS": (1, 1), "LPUSH": (1, 1), "RPUSH": (1, 1), "LTRIM": (1, 1), "LRANGE": (1, 1), "LLEN": (1, 1),
         "INCR": (1, 1), "PEXPIRE": (1, 1), "EXPIRE": (1, 1), "PTTL": (1, 1), "TTL": (1, 1), "EXISTS": (1, None),
         "DEL": (1, None), "UNLINK": (1, None), "EVALSHA": (3, "numkeys"), "EVAL": (3, "numkeys"),
         "SPUBLISH": (1, 1), "SSUBSCRIBE": (1, None), "LINDEX": (1, 1), "RPOP": (1, 1), "LPOP": (1, 1),
         "ZADD": (1, 1), "ZREMRANGEBYSCORE": (1, 1), "ZCARD": (1, 1), "HMGET": (1, 1), "PEXPIREAT": (1, 1),
         "SETNX": (1, 1), "WATCH": (1, None)}


def hash_tag(key: str) -> str | None:
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else None


def keys_of(cmd: list[str]) -> list[str]:
    name = cmd[0].upper()
    if name not in KEYED:
        return []
    first, n = KEYED[name]
    if n == "numkeys":
        return cmd[first:first + int(cmd[2])]
    return cmd[first:] if n is None else cmd[first:first + n]


def test_every_prefix_and_channel_hashes_to_one_slot():
    from service.cache.keys import REDIS_PREFIX
    from service.cache.redis_tier import EVENTS_CHANNEL
    from service.config.store import KEY_PREFIX as CONFIG
    from service.monitoring.benchmark import PREFIX as BENCH
    from service.monitoring.history import INSTANCES, PREFIX as HISTORY
    from service.ratelimit import KEY_PREFIX as RATE, MEMBERS
    from service.resilience.shared import CHANNEL
    from service.secret import REDIS_KEY as SECRET
    names = [REDIS_PREFIX + "x", EVENTS_CHANNEL, CONFIG + ":version", BENCH + ":baseline", HISTORY + ":i:minutes",
             INSTANCES, RATE + ":c:0", MEMBERS, CHANNEL, SECRET]
    assert {hash_tag(n) for n in names} == {"llmapi"}
    assert len({key_slot(n.encode()) for n in names}) == 1


def test_every_key_the_service_writes_obeys_the_slot_rules(redis_cluster, service_factory, tmp_path):
    redis_cluster.flush()
    cfg = tmp_path / "config.yml"
    cfg.write_text("monitoring:\n  snapshot_interval_seconds: 0.5\n")
    mon = Monitor(redis_cluster.primaries())
    time.sleep(0.3)
    try:
        svc = service_factory(REDIS_URL=redis_cluster.url, RATE_LIMIT_ENABLED="true", CONFIG_FILE=str(cfg),
                              RATE_LIMIT_REQUESTS_PER_MINUTE="6000")
        for op, body in (("summarize", {"text": TEXT}), ("sentiment", {"text": TEXT}),
                         ("qa", {"text": TEXT, "question": "What fails with CROSSSLOT?"})):
            for _ in range(2):
                assert call(f"{svc.url}/v1/text/{op}", "POST", body)[0] == 200
        assert call(f"{svc.url}/internal/config/text", "POST", {"max_text_length": 12345})[0] == 200
        status, inv = call(f"{svc.url}/internal/cache/invalidate", "POST", {"pattern": "sentiment:*"})
        assert status == 200, inv
        assert call(f"{svc.url}/internal/monitoring/snapshot", "POST", {})[0] == 200
        assert call(f"{svc.url}/internal/monitoring/slow-endpoints")[0] == 200
        status, health = call(f"{svc.url}/v1/health")
        assert status == 200, health
        assert health["checks"]["cache"]["redis_topology"] == "cluster"
        assert health["checks"]["config_store"]["redis_topology"] == "cluster"
        assert call(f"{svc.url}/internal/cache/stats")[1]["redis"]["topology"] == "cluster"
        time.sleep(1.0)
        svc.stop()
    finally:
        commands = mon.stop()
    written = [cmd for client, cmd in commands if cmd[0].upper() in KEYED]
    assert written, "MONITOR saw no keyed command"
    families = set()
    for cmd in written:
        keys = keys_of(cmd)
        for k in keys:
            assert hash_tag(k), f"{cmd[0]} on an untagged key {k!r}"
            assert API_KEY not in k
            families.add(k.split("}", 1)[1].split(":")[1])
        assert len({key_slot(k.encode()) for k in keys}) <= 1, f"{cmd[0]} crosses slots: {keys}"
    assert {"cache", "config", "rl", "monitoring"} <= families, families
    stored = redis_cluster.keys()
    assert stored and all(hash_tag(k) == "llmapi" for k in stored), stored
    log = svc.output()
    assert "CROSSSLOT" not in log and "Traceback" not in log and "NOSCRIPT" not in log, log[-3000:]
