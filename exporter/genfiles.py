"""Write generated files, or check that the committed ones are current.

Shared by alerts/generate.py and dashboards/generate.py: both render every
output to a string first, so `--check` compares without writing.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stale(outputs: dict[str, str]) -> list[str]:
    """Paths (relative to the repo) whose file differs from its regeneration."""
    bad = []
    for path, text in outputs.items():
        try:
            with open(path) as fh:
                if fh.read() == text:
                    continue
        except OSError:
            pass
        bad.append(os.path.relpath(path, ROOT))
    return bad


def main(outputs_fn, make_target: str, description: str, argv=None) -> int:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--check", action="store_true", help="exit 1 when a committed output is stale")
    args = ap.parse_args(argv)
    outputs = outputs_fn()
    if args.check:
        bad = stale(outputs)
        for p in bad:
            print(f"stale: {p} (run `make {make_target}`)", file=sys.stderr)
        return 1 if bad else 0
    for path, text in outputs.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
        print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0
