#!/usr/bin/env python3
"""Runs a built gateway with the sidecar ConfigMap's config, on loopback, and checks what the
deployment files rely on.

    python3 deploy/smoke_gateway.py --binary target/release/etelecom-gateway

.ci/validate-deploy runs it when ETELECOM_GATEWAY_BIN is set. Everything stays on 127.0.0.1:
the project's own mock eTelecom (`etelecom-gateway mock-upstream --tls`) stands in for the API,
and the keys are wrong on purpose (placeholders), so eTelecom answers 401.

1. The config of deploy/kubernetes/sidecar/configmap.yaml (listeners moved to free loopback
   ports, upstream pointed at the mock, key files in a scratch folder) starts the gateway.
2. Admin listener: GET /healthz 200, /readyz 200 (what the probes use), /config 200 without the
   key's secret in it.
3. A few requests through the public listener, then GET /metrics: every metric family is one
   that deploy/check_metrics.py knows (so the dashboard and alerts see real names), and
   `promtool check metrics` accepts the exposition when promtool is installed.
4. SIGTERM: /readyz turns 503 within a second, and the process exits 0 within
   drain_delay_secs + grace_secs + 5 s (the budget terminationGracePeriodSeconds covers).

Exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_metrics import EXPORTED  # noqa: E402

CONFIGMAP = Path("deploy/kubernetes/sidecar/configmap.yaml")
SECRET = "smoke-test-secret-that-must-not-leak"
problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}")


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int | str, bytes]:
    req = urllib.request.Request(url, method=method, data=body)
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return type(e).__name__, b""


def wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    args = ap.parse_args()
    binary = str(args.binary.resolve())

    doc = yaml.safe_load(CONFIGMAP.read_text())
    text = doc["data"]["gateway.toml"]
    cfg = tomllib.loads(text)
    tmp = Path(tempfile.mkdtemp(prefix="egw-smoke-"))
    procs: list[subprocess.Popen] = []
    try:
        up_port, pub_port, adm_port = free_port(), free_port(), free_port()
        mock = subprocess.Popen(
            [binary, "mock-upstream", "--listen", f"127.0.0.1:{up_port}", "--tls", "--ca-out", str(tmp / "ca.pem")],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "mock.log", "w"),
        )
        procs.append(mock)
        if not wait_for(lambda: (tmp / "ca.pem").exists(), 10):
            fail("the mock eTelecom did not start")
            return 1

        keys = tmp / "keys"
        keys.mkdir()
        for t in cfg.get("tenants", []):
            for k in ("api_key", "shop_key"):
                if k in t:
                    f = t[k]["file"]
                    prefix = "shop1000001" if k == "shop_key" else "1000001"
                    (keys / Path(f).name).write_text(f"{prefix}:{SECRET}\n")
                    text = text.replace(f'"{f}"', f'"{keys / Path(f).name}"')
        text = text.replace(f'"{cfg["server"]["listen"]}"', f'"127.0.0.1:{pub_port}"')
        text = text.replace(f'"{cfg["admin"]["listen"]}"', f'"127.0.0.1:{adm_port}"')
        text = text.replace(
            f'base_url = "{cfg["upstream"]["base_url"]}"',
            f'base_url = "https://127.0.0.1:{up_port}"\nca_file = "{tmp / "ca.pem"}"',
        )
        (tmp / "gateway.toml").write_text(text)

        gw = subprocess.Popen(
            [binary, "serve", "--config", str(tmp / "gateway.toml")],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "gateway.log", "w"),
            env={**os.environ, "RUST_LOG": "info"},
        )
        procs.append(gw)
        admin = f"http://127.0.0.1:{adm_port}"
        if not wait_for(lambda: get(f"{admin}/readyz")[0] == 200 or gw.poll() is not None, 15):
            fail("the gateway never answered 200 on /readyz")
        if gw.poll() is not None:
            fail(f"the gateway exited with {gw.returncode}: {(tmp / 'gateway.log').read_text()[-2000:]}")
            return 1
        ok(f"the sidecar config starts the gateway (public 127.0.0.1:{pub_port}, admin 127.0.0.1:{adm_port})")

        for path in ("/healthz", "/readyz"):
            code, _ = get(admin + path)
            (ok if code == 200 else fail)(f"GET {path} -> {code}")
        code, body = get(admin + "/config")
        if code != 200:
            fail(f"GET /config -> {code}")
        elif SECRET.encode() in body:
            fail("GET /config shows a key's secret")
        else:
            ok("GET /config -> 200, no secret in it")

        statuses = [get(f"http://127.0.0.1:{pub_port}/v1/shop.Etelecom/GetExtensionInfo", "POST", b"{}")[0] for _ in range(3)]
        ok(f"3 requests through the public listener -> {statuses}")

        code, body = get(admin + "/metrics")
        exposition = body.decode()
        families = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
        names = {line.split("{")[0].split()[0] for line in exposition.splitlines() if line and not line.startswith("#")}
        unknown = sorted(n for n in names if n not in EXPORTED)
        if code != 200 or not families:
            fail(f"GET /metrics -> {code}, {len(families)} families")
        elif unknown:
            fail(f"/metrics has series the dashboard/rules contract does not know: {unknown}")
        else:
            ok(f"GET /metrics -> {len(families)} families, {len(names)} series names, all in the contract")
        for must in ("etelecom_gateway_requests_total", "etelecom_gateway_build_info", "etelecom_gateway_config_reloads_total"):
            if must not in names:
                fail(f"/metrics lacks {must}")
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
            if r.returncode == 0:
                ok("promtool check metrics: exposition is valid")
            else:
                fail(f"promtool check metrics: {(r.stdout + r.stderr).strip()}")

        drain = cfg.get("shutdown", {}).get("drain_delay_secs", 5)
        grace = cfg.get("shutdown", {}).get("grace_secs", 25)
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        if wait_for(lambda: get(admin + "/readyz")[0] == 503, 1.0):
            ok(f"SIGTERM: /readyz -> 503 after {time.monotonic() - t0:.2f}s")
        else:
            fail("SIGTERM: /readyz did not turn 503 within 1s")
        try:
            rc = gw.wait(timeout=drain + grace + 5)
            took = time.monotonic() - t0
            (ok if rc == 0 else fail)(f"SIGTERM: exit {rc} after {took:.1f}s (budget {drain}+{grace}s)")
        except subprocess.TimeoutExpired:
            fail(f"SIGTERM: still running after {drain + grace + 5}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        print(f"{len(problems)} problem(s) in the gateway smoke test")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
