#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus rules against the gateway's metric names.

Run from the repository root (.ci/validate-deploy does):

    python3 deploy/check_metrics.py --promql-out /tmp/dashboard-exprs.yml

1. deploy/grafana/etelecom-gateway.json: JSON; every panel and query uses the ${DS_PROMETHEUS}
   input; panel ids are unique; panels do not overlap; every template variable is defined.
2. Every etelecom_gateway_* name used by the dashboard, rules.yml, rules.test.yml and the
   recording rules is one the gateway exports (EXPORTED below, the metrics contract), and
   EXPORTED matches the contract table in the doc comment of src/metrics.rs when it has one.
3. With --promql-out, writes every dashboard query (Grafana variables replaced by neutral values)
   as a Prometheus rules file, so that `promtool check rules` parses them with the real PromQL
   parser.

Exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

DASHBOARD = Path("deploy/grafana/etelecom-gateway.json")
RULES = Path("deploy/prometheus/rules.yml")
RULE_TESTS = Path("deploy/prometheus/rules.test.yml")
SOURCE = Path("src/metrics.rs")

# The gateway's metrics (prometheus-client, text format; counters carry _total, histograms
# expose _bucket/_sum/_count). Keep in step with the code.
COUNTERS = [
    "requests", "upstream_errors", "cache_requests", "cache_evictions", "cache_invalidations",
    "ratelimit_decisions", "credential_rejections", "config_reloads",
    "cluster_requests", "cluster_fallback", "cache_remote_invalidations",
]
GAUGES = [
    "cache_entries", "cache_bytes", "config_last_reload_success_timestamp_seconds",
    "in_flight_requests", "open_connections", "build_info", "cluster_up",
]
HISTOGRAMS = ["request_duration_seconds", "upstream_duration_seconds", "cluster_duration_seconds"]
P = "etelecom_gateway_"
EXPORTED = (
    {f"{P}{c}_total" for c in COUNTERS}
    | {f"{P}{g}" for g in GAUGES}
    | {f"{P}{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
)
NAME_RE = re.compile(r"\betelecom_gateway_[a-z0-9_]+")
# Recording rule names contain colons (level:metric:operations); strip those before matching.
RECORDED_RE = re.compile(r"[a-z_]*:[a-z0-9_]+:[a-z0-9_]+")

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}")


def names_in(text: str) -> set[str]:
    return set(NAME_RE.findall(RECORDED_RE.sub("", text)))


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []) or [])


def check_dashboard() -> list[tuple[str, str]]:
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail(f"{DASHBOARD}: not JSON: {e}")
        return []
    inputs = [i for i in dash.get("__inputs", []) if i.get("name") == "DS_PROMETHEUS"]
    if not inputs or inputs[0].get("pluginId") != "prometheus":
        fail(f"{DASHBOARD}: no __inputs entry DS_PROMETHEUS of type prometheus")
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    builtin = {"__rate_interval", "__interval", "__range", "__all"}
    exprs: list[tuple[str, str]] = []
    ids: dict[int, str] = {}
    boxes = []
    for p in walk_panels(dash.get("panels", [])):
        title = p.get("title", "?")
        if p.get("id") in ids:
            fail(f"panel {title!r}: id {p.get('id')} also used by {ids[p['id']]!r}")
        ids[p.get("id")] = title
        g = p.get("gridPos") or {}
        if not all(k in g for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
            fail(f"panel {title!r}: bad gridPos {g}")
        else:
            for other_title, o in boxes:
                if g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]:
                    fail(f"panel {title!r} overlaps {other_title!r}")
            boxes.append((title, g))
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            fail(f"panel {title!r}: datasource is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            fail(f"panel {title!r}: no query")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                fail(f"panel {title!r} query {t.get('refId')}: datasource is not ${{DS_PROMETHEUS}}")
            expr = t.get("expr", "")
            for v in re.findall(r"\$\{?(\w+)", expr):
                if v not in variables | builtin:
                    fail(f"panel {title!r}: undefined variable ${v}")
            exprs.append((f"{title} [{t.get('refId')}]", expr))
    for v in dash.get("templating", {}).get("list", []):
        if (v.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            fail(f"variable {v.get('name')}: datasource is not ${{DS_PROMETHEUS}}")
        q = v.get("query")
        exprs.append((f"variable {v.get('name')}", q.get("query", "") if isinstance(q, dict) else str(q)))
    print(f"  ok   {DASHBOARD}: {len(ids)} panels, {len(exprs)} queries, {len(variables)} variables")
    return exprs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--promql-out", type=Path, help="write the dashboard queries as a rules file here")
    args = ap.parse_args()

    exprs = check_dashboard()

    used: dict[str, set[str]] = {}
    for label, e in exprs:
        for n in names_in(e):
            used.setdefault(n, set()).add(str(DASHBOARD))
    for f in (RULES, RULE_TESTS):
        for n in names_in(f.read_text()):
            used.setdefault(n, set()).add(str(f))
    unknown = {n: sorted(w) for n, w in used.items() if n not in EXPORTED}
    for n, where in sorted(unknown.items()):
        fail(f"{n} (in {', '.join(where)}) is not a metric the gateway exports")
    if not unknown:
        print(f"  ok   {len(used)} etelecom_gateway_* names used, all exported by the gateway")
    unused = sorted(EXPORTED - set(used) - {f"{P}{h}_sum" for h in HISTOGRAMS} - {f"{P}{h}_count" for h in HISTOGRAMS})
    if unused:
        print(f"  note exported but shown nowhere: {unused}")

    # The contract table at the top of src/metrics.rs, when there is one, must list the same names.
    if SOURCE.is_file():
        table = [l for l in SOURCE.read_text().splitlines() if l.startswith("//! | `")]
        listed = set()
        for line in table:
            for n in re.findall(r"`([a-z_]+)`", line.split("|")[1]):
                listed.add(P + n)
        if not listed:
            print(f"  note {SOURCE} has no contract table: metric names not compared with the code")
        else:
            exported_bases = {n.removesuffix("_bucket") for n in EXPORTED if not n.endswith(("_sum", "_count"))}
            for n in sorted(listed - exported_bases):
                fail(f"{SOURCE} lists {n}, unknown here: add it to EXPORTED (and to the dashboard)")
            for n in sorted(exported_bases - listed):
                fail(f"{n} is not in the contract table of {SOURCE}: renamed or removed?")
            if listed == exported_bases:
                print(f"  ok   the {len(listed)} metrics here match the contract table of {SOURCE}")

    if args.promql_out:
        rules = []
        for i, (label, e) in enumerate(exprs):
            if e.startswith("label_values("):
                m = re.match(r"label_values\((.*),\s*\w+\)$", e)
                e = m.group(1) if m else e
            e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            e = re.sub(r"\$\{?\w+\}?", ".*", e)
            rules.append({"record": f"dashboard:query_{i}", "expr": e, "labels": {"panel": label[:60]}})
        args.promql_out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
        print(f"  ok   wrote {len(rules)} dashboard queries to {args.promql_out} for promtool")

    if problems:
        print(f"{len(problems)} problem(s) in dashboard/metric names")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
