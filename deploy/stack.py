"""The whole local stack without Docker: the one launcher.

    python -m deploy.stack up      [--dir .stack] [--profile demo|shipped]   (make stack)
    python -m deploy.stack down    [--dir .stack]                            (make stack-down)
    python -m deploy.stack status  [--dir .stack]
    python -m deploy.stack incident [--dir .stack]                           (make incident; deploy/incident.py)

It runs the real binaries of Debian's `redis-server`, `prometheus` and
`prometheus-alertmanager`, the service, the fake OpenAI-compatible upstream
(so an incident can be injected) and the webhook sink that shows the
notifications, on loopback, each on its usual port when free, else on a free
one.  It reads the same files docker-compose.yml mounts: deploy/prometheus.yml
(targets swapped for the loopback ports), the generated rules of alerts/rules,
deploy/alertmanager.yml through deploy/alertmanager-entrypoint.sh, and
deploy/llmapi.yml as the service's CONFIG_FILE.  The end-to-end tests start
their stack with this class too.

Profiles: `shipped` runs the committed rules with the committed intervals, as
in production.  `demo` (the default of `make stack`) evaluates every second
and uses the alert generator's short-window test profile, so an injected
incident fires within a minute instead of an hour.

Everything lives under one directory (default .stack, removed by `make
clean`): stack.json (ports, pids, URLs), logs/, each binary's data, the
rendered config files, and operator.key when no API_KEY was given.  The
processes run in their own sessions, so they outlive `make stack`; `down`
stops exactly the process groups stack.json names.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
STATE_FILE = "stack.json"
KEY_FILE = "operator.key"
JOB = "llmapi"
PROFILES = ("demo", "shipped")
# the usual ports, taken when free
USUAL = {"redis": 6379, "upstream": 9000, "llmapi": 8000, "sink": 5001, "alertmanager": 9093, "prometheus": 9090}
# demo profile: what changes against the shipped files (and nothing else)
DEMO_INTERVAL = "1s"
DEMO_GROUP = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}
# the service in the demo profile: one retry, a breaker that recovers in seconds
DEMO_SERVICE = {"ai": {"max_retries": 1, "timeout_seconds": 5.0},
                "resilience": {"recovery_timeout": 2.0}}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_port(name: str, usual: bool) -> int:
    if usual and port_free(USUAL[name]):
        return USUAL[name]
    return free_port()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def _load(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _write(path: str, doc) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:  # so does anyone else's zombie (an init that does not reap would keep it forever)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def demo_rules() -> str:
    """The generated rules with the alert generator's short windows (the demo and test profile)."""
    from dataclasses import replace

    from alerts import generate
    from exporter import mixin
    return generate.rules_yaml(replace(mixin.TEST, for_override="5s"))


class Component:
    """One process of the stack: its command, port, log and readiness URL."""

    def __init__(self, name: str, argv: list[str], env: dict, port: int, ready_path: str | None, log: str):
        self.name, self.argv, self.env, self.port, self.ready_path, self.log = name, argv, env, port, ready_path, log
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "Component":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; last log lines:\n"
                                   + self.tail())
            if self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout:.0f}s:\n" + self.tail())

    def _ready(self) -> bool:
        if self.ready_path is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        return http_ok(self.url + self.ready_path)

    def tail(self, n: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group of pid, then SIGKILL what is left after timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while alive(pid):
            time.sleep(0.05)


class Stack:
    """The stack under one directory.  start() / stop(); `state()` is what stack.json holds."""

    ORDER = ("redis", "upstream", "llmapi", "sink", "alertmanager", "prometheus")

    def __init__(self, directory: str, profile: str = "demo", usual_ports: bool = True,
                 api_key: str | None = None, service_config: dict | None = None,
                 rules_text: str | None = None, service_env: dict | None = None):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}")
        self.dir = os.path.abspath(directory)
        self.profile = profile
        self.usual_ports = usual_ports
        self.api_key = api_key
        self.service_config = service_config
        self.rules_text = rules_text
        self.service_env = service_env or {}
        self.components: dict[str, Component] = {}

    # ---- paths ----------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def __getitem__(self, name: str) -> Component:
        return self.components[name]

    # ---- the operator key ---------------------------------------------------------------
    def operator_key(self) -> str:
        if self.api_key:
            return self.api_key
        path = self.path(KEY_FILE)
        if os.path.exists(path):
            with open(path) as fh:
                return fh.read().strip()
        key = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key

    def webhook_token_file(self) -> str:
        """Alertmanager's credential for the service's remediation webhook: a random secret in a 0600 file
        that both read (the service: ALERT_WEBHOOK_TOKEN_FILE; Alertmanager: its credentials_file)."""
        path = self.path("config", "alert-webhook-token")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        return path

    # ---- rendered config ----------------------------------------------------------------
    def _service_config(self) -> str:
        cfg = _load(os.path.join(DEPLOY, "llmapi.yml")) or {}
        overlay = self.service_config if self.service_config is not None else (
            DEMO_SERVICE if self.profile == "demo" else {})
        for section, fields in overlay.items():
            cfg.setdefault(section, {}).update(fields)
        return _write(self.path("config", "llmapi.yml"), cfg)

    def _rules(self) -> str:
        out = self.path("config", "rules")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        if self.rules_text is not None:
            _write(os.path.join(out, "llmapi.rules.yml"), self.rules_text)
        elif self.profile == "demo":
            _write(os.path.join(out, "llmapi.rules.yml"), demo_rules())
        else:
            src = os.path.join(ROOT, "alerts", "rules")
            for name in os.listdir(src):
                shutil.copy(os.path.join(src, name), out)
        return out

    def _prometheus_config(self, ports: dict[str, int]) -> str:
        cfg = _load(os.path.join(DEPLOY, "prometheus.yml"))
        cfg["rule_files"] = [os.path.join(self._rules(), "*.yml")]
        cfg["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]
        if self.profile == "demo":
            cfg["global"].update(scrape_interval=DEMO_INTERVAL, evaluation_interval=DEMO_INTERVAL)
        targets = {JOB: ports["llmapi"], "prometheus": ports["prometheus"], "alertmanager": ports["alertmanager"]}
        for sc in cfg["scrape_configs"]:
            sc["static_configs"] = [{"targets": [f"127.0.0.1:{targets[sc['job_name']]}"]}]
            if self.profile == "demo":
                sc["scrape_interval"] = DEMO_INTERVAL
                sc["scrape_timeout"] = DEMO_INTERVAL
        return _write(self.path("config", "prometheus.yml"), cfg)

    def _alertmanager_config(self) -> str:
        cfg = _load(os.path.join(DEPLOY, "alertmanager.yml"))
        if self.profile == "demo":
            for route in [cfg["route"], *cfg["route"].get("routes", [])]:
                route.update(DEMO_GROUP)
        return _write(self.path("config", "alertmanager.yml"), cfg)

    # ---- components -----------------------------------------------------------------------
    def _components(self) -> list[Component]:
        py = sys.executable
        ports = {name: pick_port(name, self.usual_ports) for name in self.ORDER}
        logs = self.path("logs")
        os.makedirs(logs, exist_ok=True)
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("REDIS_", "API_", "AI_", "OPENAI_", "ADDITIONAL_API_KEYS", "ADMIN_API_KEYS"))}
        base["PYTHONUNBUFFERED"] = "1"

        def log(name):
            return os.path.join(logs, f"{name}.log")

        redis_dir = self.path("redis")
        os.makedirs(redis_dir, exist_ok=True)
        svc_env = dict(base, HOST="127.0.0.1", PORT=str(ports["llmapi"]), API_KEY=self.operator_key(),
                       REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0", AI_PROVIDER="openai",
                       OPENAI_BASE_URL=f"http://127.0.0.1:{ports['upstream']}/v1",
                       CONFIG_FILE=self._service_config(), STATE_DIR=self.path("service-state"),
                       LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
                       ALERT_WEBHOOK_TOKEN_FILE=self.webhook_token_file())
        svc_env.update(self.service_env)
        am_env = dict(base, ALERT_WEBHOOK_URL=f"http://127.0.0.1:{ports['sink']}/alerts",
                      ALERTMANAGER_CONFIG=self._alertmanager_config(),
                      ALERTMANAGER_RENDERED=self.path("config", "alertmanager.rendered.yml"),
                      ALERTMANAGER_BIN=shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager",
                      # playbook alerts also go to the service's own webhook (exporter/playbook.py)
                      LLMAPI_WEBHOOK_URL=f"http://127.0.0.1:{ports['llmapi']}/internal/alerts/webhook",
                      ALERT_WEBHOOK_TOKEN_PATH=self.webhook_token_file())
        prom_cfg = self._prometheus_config(ports)
        return [
            Component("redis", ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                                "--dir", redis_dir, "--appendonly", "yes", "--save", "", "--protected-mode", "no"],
                      base, ports["redis"], None, log("redis")),
            Component("upstream", [py, "-m", "service.providers.fake_upstream", "--host", "127.0.0.1",
                                   "--port", str(ports["upstream"]), "--latency-ms", "20", "--jitter-ms", "10"],
                      base, ports["upstream"], "/_stats", log("upstream")),
            Component("llmapi", [py, "-m", "service"], svc_env, ports["llmapi"], "/v1/health", log("llmapi")),
            Component("sink", [py, "-m", "alerts.webhook_sink", "--host", "127.0.0.1", "--port", str(ports["sink"])],
                      base, ports["sink"], "/alerts", log("sink")),
            Component("alertmanager", ["sh", os.path.join(DEPLOY, "alertmanager-entrypoint.sh"),
                                       f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                       f"--storage.path={self.path('alertmanager')}", "--cluster.listen-address=",
                                       "--log.level=warn"],
                      am_env, ports["alertmanager"], "/-/ready", log("alertmanager")),
            Component("prometheus", [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={prom_cfg}",
                                     f"--storage.tsdb.path={self.path('prometheus')}",
                                     "--storage.tsdb.retention.time=35d",
                                     f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                                     "--web.enable-lifecycle", "--log.level=warn",
                                     *(["--rules.alert.resend-delay=1s"] if self.profile == "demo" else [])],
                      base, ports["prometheus"], "/-/ready", log("prometheus")),
        ]

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "Stack":
        os.makedirs(self.dir, exist_ok=True)
        running = read_state(self.dir)
        if running and any(alive(c["pid"]) for c in running["components"].values()):
            raise RuntimeError(f"a stack is already running from {self.dir}: `python -m deploy.stack down` first")
        try:
            for c in self._components():
                self.components[c.name] = c.start()
                self._save()
        except BaseException:
            self.stop()
            raise
        return self

    def _save(self) -> None:
        _write(self.path(STATE_FILE), json.dumps(self.state(), indent=2) + "\n")

    def state(self) -> dict:
        return {"profile": self.profile, "dir": self.dir,
                "key_file": None if self.api_key else self.path(KEY_FILE),
                "components": {n: {"pid": c.pid, "port": c.port, "url": c.url, "log": c.log}
                               for n, c in self.components.items()}}

    def stop(self) -> None:
        for name in reversed(self.ORDER):
            c = self.components.get(name)
            if c is not None and c.pid is not None:
                stop_pid(c.pid)
                if c.proc is not None:
                    c.proc.wait()
        self.components.clear()
        if os.path.exists(self.path(STATE_FILE)):
            os.unlink(self.path(STATE_FILE))


def read_state(directory: str) -> dict | None:
    path = os.path.join(os.path.abspath(directory), STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def down(directory: str) -> list[str]:
    """Stop exactly the process groups stack.json names (reverse start order); returns their names."""
    state = read_state(directory)
    if state is None:
        return []
    stopped = []
    for name in reversed(Stack.ORDER):
        c = state["components"].get(name)
        if c and alive(c["pid"]):
            stop_pid(c["pid"])
            stopped.append(name)
    os.unlink(os.path.join(os.path.abspath(directory), STATE_FILE))
    return stopped


def describe(state: dict, key: str) -> str:
    c = state["components"]
    lines = [f"llmapi stack up ({state['profile']} profile), state in {state['dir']}",
             f"  service        {c['llmapi']['url']}      (API: /v1/text/*, /internal/*, /metrics)",
             f"  prometheus     {c['prometheus']['url']}  (alerts: {c['prometheus']['url']}/alerts)",
             f"  alertmanager   {c['alertmanager']['url']}",
             f"  webhook sink   {c['sink']['url']}/alerts  (every notification Alertmanager sent)",
             f"  fake upstream  {c['upstream']['url']}     (POST /_control to inject faults)",
             f"  redis          redis://127.0.0.1:{c['redis']['port']}/0",
             f"  operator key   {key}" + (f"   (saved in {state['key_file']})" if state.get("key_file") else ""),
             f"  logs           {state['dir']}/logs/",
             "",
             f"  try: curl -s {c['llmapi']['url']}/internal/monitoring/dashboard -H 'X-API-Key: {key}'",
             "  then: make incident     (inject upstream errors, watch the alerts fire and resolve)",
             "        make stack-down"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("up", "down", "status", "incident"))
    ap.add_argument("--dir", default=os.environ.get("STACK_DIR", os.path.join(ROOT, ".stack")))
    ap.add_argument("--profile", choices=PROFILES, default=os.environ.get("STACK_PROFILE", "demo"))
    ap.add_argument("--free-ports", action="store_true", help="up: always pick free ports, not the usual ones")
    ap.add_argument("--timeout", type=float, default=300.0, help="incident: longest wait for each phase, seconds")
    args, rest = ap.parse_known_args(argv)
    if args.command == "up":
        stack = Stack(args.dir, args.profile, usual_ports=not args.free_ports, api_key=os.environ.get("API_KEY") or None)
        try:
            stack.start()
        except RuntimeError as e:
            print(f"stack: {e}", file=sys.stderr)
            return 1
        print(describe(stack.state(), stack.operator_key()))
        return 0
    if args.command == "down":
        stopped = down(args.dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    state = read_state(args.dir)
    if state is None:
        print(f"no stack running from {args.dir}: `make stack` first", file=sys.stderr)
        return 1
    if args.command == "status":
        for name, c in state["components"].items():
            print(f"{name:13} {'up  ' if alive(c['pid']) else 'DOWN'} {c['url']}")
        return 0
    from deploy import incident
    return incident.main(state, key_of(state), timeout=args.timeout, argv=rest)


def key_of(state: dict) -> str:
    if os.environ.get("API_KEY"):
        return os.environ["API_KEY"]
    with open(state["key_file"]) as fh:
        return fh.read().strip()


if __name__ == "__main__":
    sys.exit(main())
