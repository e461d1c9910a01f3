#!/usr/bin/env python3
"""Checks the gateway configs shipped under deploy/ and, optionally, runs the gateway's own check.

Run from the repository root (.ci/validate-deploy does):

    python3 deploy/check_configs.py [--binary target/release/etelecom-gateway]

Configs: the gateway.toml of each ConfigMap under deploy/kubernetes/ and deploy/systemd/gateway.toml.

1. Each parses as TOML and sets the sections this deployment relies on.
2. systemd: every { file = ... } key is in /run/credentials/etelecom-gateway.service/ under a
   name the unit loads with LoadCredential=, every loaded credential is used, and TimeoutStopSec
   exceeds drain_delay_secs + grace_secs.
3. With --binary: `etelecom-gateway check --config` on a copy of each config whose key files
   point at a scratch folder of well-formed placeholder keys (the real paths only exist in a pod
   or under systemd). Exit 0 is a pass, 64 (invalid) or anything else a failure. This needs a
   binary that knows every section used ([admin], [shutdown], [reload], [metrics]).

Exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import posixpath
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

K8S = Path("deploy/kubernetes")
UNIT = Path("deploy/systemd/etelecom-gateway.service")
SYSTEMD_TOML = Path("deploy/systemd/gateway.toml")
CRED_DIR = "/run/credentials/etelecom-gateway.service"
REQUIRED = ("server", "upstream", "rate_limit", "cache", "admin", "shutdown", "reload", "metrics", "tenants")
# Placeholder keys of the documented shapes: <id>:<secret> and shop<id>:<secret>.
PLACEHOLDER = {"shop_key": "shop1000001:placeholder-secret-for-config-check"}
PLACEHOLDER_DEFAULT = "1000001:placeholder-secret-for-config-check"

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def configs() -> list[tuple[str, str]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith(".toml"):
                        out.append((f"{path} ConfigMap/{doc['metadata']['name']} {key}", text))
    out.append((str(SYSTEMD_TOML), SYSTEMD_TOML.read_text()))
    return out


def key_refs(cfg: dict) -> list[tuple[str, dict]]:
    refs = []
    if "partner" in cfg:
        refs.append(("partner.api_key", cfg["partner"].get("api_key")))
    for i, t in enumerate(cfg.get("tenants", [])):
        for k in ("api_key", "shop_key"):
            if k in t:
                refs.append((f"tenants[{i}].{k}", t[k]))
    return refs


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        k, v = line.split("=", 1)
        settings.setdefault(k.strip(), []).append(v.strip())
    return settings


def check_systemd(cfg: dict) -> None:
    before = len(problems)
    s = unit_settings()
    creds = {v.split(":", 1)[0] for v in s.get("LoadCredential", [])}
    used = set()
    for key_path, ref in key_refs(cfg):
        f = (ref or {}).get("file", "")
        d, name = posixpath.split(f)
        if d != CRED_DIR:
            fail(f"{SYSTEMD_TOML}: {key_path} = {f!r} is not in {CRED_DIR}/")
        elif name not in creds:
            fail(f"{SYSTEMD_TOML}: {key_path} names credential {name!r}, which the unit does not load (LoadCredential=)")
        used.add(name)
    for c in sorted(creds - used):
        fail(f"{UNIT}: LoadCredential={c} is not used by {SYSTEMD_TOML} (a missing source file fails the start)")
    timeout = s.get("TimeoutStopSec", ["90"])[-1]
    m = re.fullmatch(r"(\d+)s?", timeout)
    sd = cfg.get("shutdown", {})
    budget = sd.get("drain_delay_secs", 5) + sd.get("grace_secs", 25)
    if not m or int(m.group(1)) <= budget:
        fail(f"{UNIT}: TimeoutStopSec={timeout} must exceed drain_delay_secs + grace_secs = {budget}")
    for k in ("ExecStart", "ExecStartPre"):
        for v in s.get(k, []):
            if f"--config /etc/etelecom-gateway/gateway.toml" not in v:
                fail(f"{UNIT}: {k} does not use --config /etc/etelecom-gateway/gateway.toml")
    if len(problems) == before:
        ok(f"{SYSTEMD_TOML} <-> {UNIT}: credentials {sorted(creds)} match, TimeoutStopSec={timeout} > {budget}")


def run_binary(binary: Path, where: str, text: str, cfg: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="egw-check-") as tmp:
        keys = Path(tmp) / "keys"
        keys.mkdir()
        for key_path, ref in key_refs(cfg):
            f = (ref or {}).get("file")
            if not f:
                continue
            d, name = posixpath.split(f)
            target = keys / name
            target.write_text(PLACEHOLDER.get(key_path.rsplit(".", 1)[-1], PLACEHOLDER_DEFAULT) + "\n")
            text = text.replace(f'"{f}"', f'"{target}"')
        conf = Path(tmp) / "gateway.toml"
        conf.write_text(text)
        r = subprocess.run([str(binary), "check", "--config", str(conf)], capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip().replace(tmp, "<tmp>")
        if r.returncode == 0:
            ok(f"{where}: `etelecom-gateway check` exit 0")
        else:
            fail(f"{where}: `etelecom-gateway check` exit {r.returncode}:\n      " + out.replace("\n", "\n      "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, help="an etelecom-gateway binary to run `check` with")
    args = ap.parse_args()
    for where, text in configs():
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            fail(f"{where}: TOML does not parse: {e}")
            continue
        missing = [s for s in REQUIRED if s not in cfg]
        if missing:
            fail(f"{where}: missing sections {missing}")
        else:
            ok(f"{where}: TOML parses, sections {list(REQUIRED)} present")
        if where == str(SYSTEMD_TOML):
            check_systemd(cfg)
        if args.binary:
            run_binary(args.binary, where, text, cfg)
    if problems:
        print(f"{len(problems)} problem(s) in the gateway configs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
