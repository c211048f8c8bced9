"""Generate the README's env-var table (from the config sections) and route
list (from the live route table): one source of truth for both.

`python -m service.docgen --write README.md` rewrites both blocks;
`--check README.md` exits 1 when either is stale (a test runs it).
"""
from __future__ import annotations

import sys

from service.config.sections import SECTIONS
from service.settings import PROCESS_ENV

BLOCKS = ("envdoc", "routes")



def table() -> str:
    rows = ["| variable | section.field | default | meaning |", "|---|---|---|---|"]
    for name, (default, doc) in PROCESS_ENV.items():
        rows.append(f"| `{name}` | (process) | `{default}` | {doc} |")
    for sname, s in SECTIONS.items():
        for fname, f in s.fields.items():
            if f.env:
                rng = ""
                if f.choices:
                    rng = f" ({', '.join(map(str, f.choices))})"
                elif f.min is not None or f.max is not None:
                    rng = f" ({f.min if f.min is not None else ''}..{f.max if f.max is not None else ''})"
                rows.append(f"| `{f.env}` | `{sname}.{fname}` | `{f.default}` | {f.help or s.doc}{rng} |")
    return "\n".join(rows)


AREAS = {"/v1": "text API and health", "/internal/config": "runtime config store",
         "/internal/cache": "response cache", "/internal/resilience": "AI-service resilience",
         "/internal/ai": "AI provider tuning", "/internal/middleware": "middleware stack",
         "/internal/auth": "API keys (names and scopes)",
         "/internal/monitoring": "monitoring, KPIs and operations",
         "/internal/alerts": "remediation (closed loop)", "/internal/remediation": "remediation (closed loop)",
         "/metrics": "Prometheus", "/openapi.json": "API document"}


def routes() -> str:
    import tempfile

    from service.app import create_app
    from service.settings import Settings

    env = {"API_KEY": "docgen", "STATE_DIR": tempfile.gettempdir(), "LOG_LEVEL": "ERROR"}
    app = create_app(Settings.from_env(env), env=env)
    seen: dict[str, list[str]] = {}
    for r in app.router.routes():
        if r.method == "HEAD" or r.resource is None:
            continue
        path = r.resource.canonical
        seen.setdefault(path, []).append(r.method)
    rows = ["| area | route | methods |", "|---|---|---|"]
    for path in sorted(seen):
        area = next((v for k, v in sorted(AREAS.items(), key=lambda kv: -len(kv[0])) if path.startswith(k)), "")
        rows.append(f"| {area} | `{path}` | {', '.join(sorted(seen[path]))} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    out = readme
    for name, fn in (("envdoc", table), ("routes", routes)):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in out:
            continue
        head, _, rest = out.partition(begin)
        _, _, tail = rest.partition(end)
        out = f"{head}{begin}\n{fn()}\n{end}{tail}"
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        text = open(sys.argv[2]).read()
        return 0 if render(text) == text else 1
    if len(sys.argv) > 2 and sys.argv[1] == "--write":
        text = open(sys.argv[2]).read()
        open(sys.argv[2], "w").write(render(text))
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
