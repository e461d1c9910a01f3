#!/usr/bin/env python3
"""Offline validation of the Kubernetes manifests under deploy/kubernetes/.

Run from the repository root (.ci/validate-deploy does):

    python3 deploy/kubernetes/validate_manifests.py [--k8s-versions 1.29.0,1.37.0]

Needs PyYAML and kubernetes-validate (which ships the Kubernetes JSON schemas and brings
jsonschema); nothing is downloaded. It checks:

1. every built-in object against the Kubernetes OpenAPI schema of each version given, in strict
   mode (unknown fields are errors), with kubernetes-validate;
2. ServiceMonitor / PodMonitor (CRDs, unknown to that schema set) against the subset schemas in
   deploy/kubernetes/monitoring/schemas/;
3. kustomization.yaml: every listed resource exists, and every other manifest of the folder is
   listed unless its first line says OPTIONAL;
4. the deployment rules of this project, across objects: the gateway's TOML (parsed) and the
   Deployment that mounts it agree (ports, probes, config path, secret files, shutdown budget
   against terminationGracePeriodSeconds), the security settings of every container, and the
   selectors of Services, PodDisruptionBudgets, NetworkPolicies and the monitors.

Prints one line per finding and a summary; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import posixpath
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path("deploy/kubernetes")
SCHEMAS = ROOT / "monitoring" / "schemas"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.schema.json",
}
GATEWAY_CONTAINER = "etelecom-gateway"
GATEWAY_SECTIONS = ("server", "upstream", "rate_limit", "cache", "admin", "shutdown", "reload", "metrics", "tenants")
# The container memory limit must be at least this many times [cache] max_bytes.
CACHE_MEMORY_FACTOR = 2
# Stop budget margin: terminationGracePeriodSeconds must exceed drain_delay + grace by this much.
STOP_MARGIN_SECS = 5

errors: list[str] = []


def fail(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")
    print(f"  FAIL {where}: {msg}")


def ok(where: str, msg: str) -> None:
    print(f"  ok   {where}: {msg}")


class Obj:
    def __init__(self, path: Path, index: int, doc: dict):
        self.path, self.index, self.doc = path, index, doc
        self.kind = doc.get("kind", "?")
        self.api = doc.get("apiVersion", "?")
        self.name = (doc.get("metadata") or {}).get("name", "?")

    @property
    def where(self) -> str:
        return f"{self.path}#{self.index} {self.kind}/{self.name}"


def load_objects() -> tuple[list[Obj], list[Path]]:
    objs: list[Obj] = []
    kustomizations: list[Path] = []
    for path in sorted(ROOT.rglob("*.yaml")) + sorted(ROOT.rglob("*.yml")):
        if SCHEMAS in path.parents:
            continue
        if path.name in ("kustomization.yaml", "kustomization.yml"):
            kustomizations.append(path)
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(str(path), f"YAML does not parse: {e}")
            continue
        if not docs:
            fail(str(path), "no YAML document")
        for i, d in enumerate(docs):
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                fail(f"{path}#{i}", "not a Kubernetes object (kind/apiVersion missing)")
                continue
            objs.append(Obj(path, i, d))
    return objs, kustomizations


# ---- 1 and 2: schemas ---------------------------------------------------------------------------

def check_schemas(objs: list[Obj], versions: list[str]) -> None:
    import jsonschema
    import kubernetes_validate

    print("schemas:")
    for o in objs:
        crd = CRD_SCHEMAS.get((o.api, o.kind))
        if crd:
            schema = json.loads((SCHEMAS / crd).read_text())
            validator = jsonschema.Draft7Validator(schema)
            errs = sorted(validator.iter_errors(o.doc), key=lambda e: list(e.absolute_path))
            for e in errs:
                loc = ".".join(str(p) for p in e.absolute_path) or "(root)"
                fail(o.where, f"{crd}: {loc}: {e.message}")
            if not errs:
                ok(o.where, f"valid against {SCHEMAS / crd} (CRD subset)")
            continue
        for v in versions:
            try:
                used = kubernetes_validate.validate(o.doc, v, strict=True)
                ok(o.where, f"valid against Kubernetes {used} schema (strict)")
            except kubernetes_validate.SchemaNotFoundError:
                fail(o.where, f"no schema for {o.api} {o.kind} in Kubernetes {v} (and no CRD schema)")
            except kubernetes_validate.ValidationError as e:
                # A jsonschema.ValidationError with the caught error's attributes copied over.
                loc = ".".join(str(p) for p in e.absolute_path) or "(root)"
                fail(o.where, f"Kubernetes {v} schema: {loc}: {e.message}")


# ---- 3: kustomizations ------------------------------------------------------------------------

def check_kustomizations(kustomizations: list[Path]) -> None:
    print("kustomizations:")
    for k in kustomizations:
        doc = yaml.safe_load(k.read_text()) or {}
        if doc.get("kind") != "Kustomization" or not str(doc.get("apiVersion", "")).startswith(
            "kustomize.config.k8s.io/"
        ):
            fail(str(k), "not a kustomize.config.k8s.io Kustomization")
            continue
        listed = set()
        for r in doc.get("resources", []):
            p = k.parent / r
            listed.add(p.resolve())
            if not p.is_file():
                fail(str(k), f"resource {r} does not exist")
        for p in sorted(k.parent.glob("*.yaml")):
            if p.name == k.name or p.resolve() in listed:
                continue
            first = p.read_text().splitlines()[:1]
            if first and "OPTIONAL" in first[0]:
                ok(str(k), f"{p.name} left out on purpose (OPTIONAL)")
            else:
                fail(str(k), f"{p.name} is not listed in resources (mark it OPTIONAL on line 1 if meant)")
        ok(str(k), f"{len(listed)} resource(s) listed, all present")


# ---- 4: cross-object rules ----------------------------------------------------------------------

def selector_matches(selector: dict | None, labels: dict) -> bool:
    """matchLabels / matchExpressions semantics."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec(o: Obj) -> dict:
    return o.doc.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(o: Obj) -> dict:
    return o.doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def all_containers(spec: dict) -> list[tuple[str, dict]]:
    return [("initContainer", c) for c in spec.get("initContainers", []) or []] + [
        ("container", c) for c in spec.get("containers", []) or []
    ]


def quantity_bytes(q) -> int | None:
    """A Kubernetes memory quantity (128Mi, 1G, 268435456) in bytes."""
    if q is None:
        return None
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    q = str(q)
    for u, m in units.items():
        if q.endswith(u):
            return int(float(q[: -len(u)]) * m)
    return int(float(q))


def split_hostport(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def find_port(container: dict, ref) -> dict | None:
    for p in container.get("ports", []) or []:
        if ref == p.get("name") or ref == p.get("containerPort"):
            return p
    return None


def check_security(where: str, spec: dict, kind: str, c: dict) -> None:
    psc = spec.get("securityContext", {}) or {}
    sc = c.get("securityContext", {}) or {}
    name = f"{where} {kind} {c.get('name')}"
    problems = []
    if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
        problems.append("runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities.drop lacks ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.append("capabilities.add is set")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile is not RuntimeDefault")
    if sc.get("privileged"):
        problems.append("privileged")
    res = c.get("resources", {}) or {}
    for need in ("cpu", "memory"):
        if need not in (res.get("requests") or {}):
            problems.append(f"resources.requests.{need} missing")
    if "memory" not in (res.get("limits") or {}):
        problems.append("resources.limits.memory missing")
    for p in problems:
        fail(name, p)
    if not problems:
        ok(name, "non-root, read-only root fs, no privilege escalation, caps dropped, seccomp, resources")


def gateway_config(objs: list[Obj], o: Obj, spec: dict, c: dict) -> tuple[dict | None, dict]:
    """Find the TOML the gateway container loads; return it parsed and its mounts by path."""
    where = f"{o.where} {GATEWAY_CONTAINER}"
    args = list(c.get("command", []) or []) + list(c.get("args", []) or [])
    config_path = None
    if "--config" in args:
        config_path = args[args.index("--config") + 1]
    for e in c.get("env", []) or []:
        if e.get("name") == "ETELECOM_GATEWAY_CONFIG" and config_path is None:
            config_path = e.get("value")
    if not config_path:
        config_path = "/etc/etelecom-gateway/gateway.toml"  # the image's CMD
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    mounts = {}
    for m in c.get("volumeMounts", []) or []:
        mounts[m["mountPath"].rstrip("/")] = (m, volumes.get(m["name"]))
        if m["name"] not in volumes:
            fail(where, f"volumeMount {m['name']} has no volume")
    cfg_dir, cfg_file = posixpath.split(config_path)
    mount = mounts.get(cfg_dir)
    if not mount or not mount[1] or "configMap" not in mount[1]:
        fail(where, f"--config {config_path}: {cfg_dir} is not a ConfigMap volume mount")
        return None, mounts
    m, vol = mount
    if m.get("subPath"):
        fail(where, "the config volume uses subPath: updates would never reach the pod")
    if not m.get("readOnly"):
        fail(where, "the config volume is not mounted readOnly")
    cm_name = vol["configMap"]["name"]
    cms = [x for x in objs if x.kind == "ConfigMap" and x.name == cm_name and x.path.parent == o.path.parent]
    if not cms:
        fail(where, f"ConfigMap {cm_name} is not defined next to {o.path}")
        return None, mounts
    text = (cms[0].doc.get("data") or {}).get(cfg_file)
    if text is None:
        fail(where, f"ConfigMap {cm_name} has no key {cfg_file}")
        return None, mounts
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{cms[0].where} data.{cfg_file}", f"TOML does not parse: {e}")
        return None, mounts
    ok(f"{cms[0].where} data.{cfg_file}", f"TOML parses; loaded by {o.kind}/{o.name} as {config_path}")
    return cfg, mounts


def check_gateway(objs: list[Obj], o: Obj, spec: dict, kind: str, c: dict) -> None:
    where = f"{o.where} {GATEWAY_CONTAINER}"
    if kind == "initContainer" and c.get("restartPolicy") != "Always":
        fail(where, "an init container without restartPolicy: Always is not a sidecar: it would block the pod")
    cfg, mounts = gateway_config(objs, o, spec, c)
    if cfg is None:
        return
    for s in GATEWAY_SECTIONS:
        if s not in cfg:
            fail(where, f"config lacks [{s}]")
    server, admin = cfg.get("server", {}), cfg.get("admin", {})
    shutdown = cfg.get("shutdown", {})

    # Listeners and ports.
    lhost, lport = split_hostport(server.get("listen", "127.0.0.1:8080"))
    ahost, aport = split_hostport(admin.get("listen", "127.0.0.1:9090"))
    loopback = ipaddress.ip_address(lhost).is_loopback
    if not loopback:
        p = find_port(c, lport)
        if not p:
            fail(where, f"[server] listen port {lport} is not a containerPort")
        if not server.get("allowed_callers"):
            fail(where, "[server] listens beyond loopback but allowed_callers is empty/default (loopback only)")
    elif kind != "initContainer":
        fail(where, "[server] listens on loopback but the gateway is not a sidecar: nobody can reach it")
    if ipaddress.ip_address(ahost).is_loopback:
        fail(where, f"[admin] listen {ahost}: kubelet probes and Prometheus cannot reach loopback")
    admin_port = find_port(c, aport)
    if not admin_port:
        fail(where, f"[admin] listen port {aport} is not a containerPort")
    if server.get("default_tenant") and server["default_tenant"] not in [t.get("id") for t in cfg.get("tenants", [])]:
        fail(where, f"default_tenant {server['default_tenant']} is not a tenant")
    ids = [t.get("id") for t in cfg.get("tenants", [])]
    if len(ids) != len(set(ids)):
        fail(where, "duplicate tenant ids")

    # Probes on the admin port.
    want = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in want.items():
        http = (c.get(probe) or {}).get("httpGet") or {}
        if not http:
            fail(where, f"{probe} missing (want httpGet {path} on the admin port)")
            continue
        target = find_port(c, http.get("port"))
        if http.get("path") != path or not target or target.get("containerPort") != aport:
            fail(where, f"{probe} is not httpGet {path} on the admin port {aport}")
    if all((c.get(p) or {}).get("httpGet") for p in want):
        ok(where, f"probes /readyz, /readyz, /healthz on admin port {aport}")

    # Memory: the cache is bounded by [cache] max_bytes (default 64 MiB); the limit must leave room.
    cache = cfg.get("cache", {})
    if cache.get("enabled", True):
        max_bytes = cache.get("max_bytes", 64 * 1024 * 1024)
        limit = quantity_bytes(((c.get("resources") or {}).get("limits") or {}).get("memory"))
        if limit is None or limit < CACHE_MEMORY_FACTOR * max_bytes:
            fail(where, f"memory limit {limit} bytes < {CACHE_MEMORY_FACTOR} x [cache] max_bytes {max_bytes}")
        else:
            ok(where, f"memory limit {limit // 2**20}Mi >= {CACHE_MEMORY_FACTOR} x [cache] max_bytes ({max_bytes // 2**20}Mi)")

    # Shutdown budget.
    drain = shutdown.get("drain_delay_secs", 5)
    grace = shutdown.get("grace_secs", 25)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if tgps < drain + grace + STOP_MARGIN_SECS:
        fail(where, f"terminationGracePeriodSeconds {tgps} < drain_delay_secs {drain} + grace_secs {grace} + {STOP_MARGIN_SECS}")
    else:
        ok(where, f"terminationGracePeriodSeconds {tgps} > drain {drain} + grace {grace}")

    # Secret files: each { file = ... } lives on a read-only Secret volume that has that key.
    refs = []
    if "partner" in cfg:
        refs.append(("partner.api_key", cfg["partner"].get("api_key")))
    for i, t in enumerate(cfg.get("tenants", [])):
        for k in ("api_key", "shop_key"):
            if k in t:
                refs.append((f"tenants[{i}].{k}", t[k]))
    used_keys: dict[str, set] = {}
    for key_path, ref in refs:
        if not isinstance(ref, dict) or set(ref) not in ({"file"}, {"env"}):
            fail(where, f"{key_path} is not {{ file = ... }} or {{ env = ... }}")
            continue
        if "env" in ref:
            fail(where, f"{key_path} uses env; in Kubernetes mount the Secret as files (rotation without restart)")
            continue
        d, f = posixpath.split(ref["file"])
        m = mounts.get(d)
        if not m or not m[1] or "secret" not in m[1]:
            fail(where, f"{key_path} = {ref['file']}: {d} is not a Secret volume mount")
            continue
        mnt, vol = m
        sname = vol["secret"]["secretName"]
        used_keys.setdefault(sname, set()).add(f)
        secrets = [x for x in objs if x.kind == "Secret" and x.name == sname and x.path.parent == o.path.parent]
        if secrets:
            keys = set((secrets[0].doc.get("stringData") or {})) | set((secrets[0].doc.get("data") or {}))
            if f not in keys:
                fail(where, f"{key_path}: Secret {sname} has no key {f}")
        else:
            fail(where, f"{key_path}: Secret {sname} is not defined next to {o.path}")
    for path, (mnt, vol) in mounts.items():
        if vol and "secret" in vol:
            if not mnt.get("readOnly"):
                fail(where, f"Secret volume at {path} is not mounted readOnly")
            if mnt.get("subPath"):
                fail(where, f"Secret volume at {path} uses subPath: rotated keys would never arrive")
            if vol["secret"].get("defaultMode") != 0o400:
                fail(where, f"Secret volume at {path}: defaultMode is not 0400")
    for sname, keys in used_keys.items():
        for s in [x for x in objs if x.kind == "Secret" and x.name == sname and x.path.parent == o.path.parent]:
            extra = (set((s.doc.get("stringData") or {})) | set((s.doc.get("data") or {}))) - keys
            if extra:
                fail(s.where, f"keys not used by the config: {sorted(extra)}")
    if refs:
        ok(where, f"{len(refs)} key file(s), all on read-only Secret volumes that hold them")
    if spec.get("securityContext", {}).get("fsGroup") is None:
        fail(where, "no pod fsGroup: a 0400 Secret file stays root-only and the non-root gateway cannot read it")


def check_secrets(objs: list[Obj]) -> None:
    for s in [x for x in objs if x.kind == "Secret"]:
        if s.doc.get("data"):
            fail(s.where, "use stringData placeholders in the repository, not data")
        bad = [k for k, v in (s.doc.get("stringData") or {}).items() if "REPLACE_ME" not in str(v)]
        if bad:
            fail(s.where, f"values that are not REPLACE_ME placeholders (a real key must never be committed): {bad}")
        else:
            ok(s.where, "every value is a REPLACE_ME placeholder")


def check_cross(objs: list[Obj]) -> None:
    print("deployment rules:")
    deployments = [o for o in objs if o.kind == "Deployment"]
    gateway_pods: list[tuple[Obj, dict]] = []
    for o in deployments:
        spec = pod_spec(o)
        if not selector_matches(o.doc["spec"].get("selector"), pod_labels(o)):
            fail(o.where, "spec.selector does not match the pod template labels")
        if spec.get("terminationGracePeriodSeconds") is None:
            fail(o.where, "terminationGracePeriodSeconds not set (default 30 is too short)")
        found = False
        for kind, c in all_containers(spec):
            check_security(o.where, spec, kind, c)
            if c.get("name") == GATEWAY_CONTAINER:
                found = True
                gateway_pods.append((o, c))
                check_gateway(objs, o, spec, kind, c)
        if not found:
            fail(o.where, f"no container named {GATEWAY_CONTAINER}")
    check_secrets(objs)

    def pods_selected(selector, namespace_any=False, same_dir=None):
        return [
            (d, c) for d, c in gateway_pods
            if selector_matches(selector, pod_labels(d)) and (namespace_any or same_dir is None or d.path.parent == same_dir)
        ]

    for s in [o for o in objs if o.kind == "Service"]:
        sel = s.doc["spec"].get("selector") or {}
        pods = [d for d in deployments if selector_matches({"matchLabels": sel}, pod_labels(d))]
        if not pods:
            fail(s.where, "selects no Deployment's pods")
            continue
        conts = [c for _, c in all_containers(pod_spec(pods[0]))]
        for p in s.doc["spec"].get("ports", []):
            if not any(find_port(c, p.get("targetPort", p["port"])) for c in conts):
                fail(s.where, f"port {p.get('name')}: targetPort {p.get('targetPort')} is no container port")
        ok(s.where, f"selects {pods[0].kind}/{pods[0].name}; target ports exist")
    for pdb in [o for o in objs if o.kind == "PodDisruptionBudget"]:
        pods = [d for d in deployments if selector_matches(pdb.doc["spec"].get("selector"), pod_labels(d))]
        if not pods:
            fail(pdb.where, "selects no Deployment's pods")
            continue
        mina = pdb.doc["spec"].get("minAvailable")
        reps = pods[0].doc["spec"].get("replicas", 1)
        if isinstance(mina, int) and mina >= reps:
            fail(pdb.where, f"minAvailable {mina} >= replicas {reps}: no node could ever be drained")
        else:
            ok(pdb.where, f"selects {pods[0].kind}/{pods[0].name} ({reps} replicas), minAvailable {mina}")
    for np in [o for o in objs if o.kind == "NetworkPolicy"]:
        pods = [d for d in deployments if selector_matches(np.doc["spec"].get("podSelector"), pod_labels(d))]
        if not pods:
            fail(np.where, "podSelector selects no Deployment's pods")
            continue
        conts = [c for _, c in all_containers(pod_spec(pods[0]))]
        for rule in np.doc["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str) and not any(find_port(c, p["port"]) for c in conts):
                    fail(np.where, f"port {p['port']} is no container port")
        ok(np.where, f"selects {pods[0].kind}/{pods[0].name}")
    for sm in [o for o in objs if o.kind == "ServiceMonitor"]:
        svcs = [s for s in objs if s.kind == "Service" and selector_matches(sm.doc["spec"].get("selector"), (s.doc["metadata"].get("labels") or {}))]
        if not svcs:
            fail(sm.where, "selects no Service")
            continue
        names = {p.get("name") for s in svcs for p in s.doc["spec"].get("ports", [])}
        for ep in sm.doc["spec"].get("endpoints", []):
            if ep.get("port") not in names:
                fail(sm.where, f"endpoint port {ep.get('port')} is not a port name of {[s.name for s in svcs]}")
        ok(sm.where, f"selects Service {[s.name for s in svcs]} on port(s) {[e.get('port') for e in sm.doc['spec']['endpoints']]}")
    for pm in [o for o in objs if o.kind == "PodMonitor"]:
        anyns = (pm.doc["spec"].get("namespaceSelector") or {}).get("any", False)
        pods = pods_selected(pm.doc["spec"].get("selector"), namespace_any=anyns, same_dir=pm.path.parent)
        if not pods:
            fail(pm.where, "selects no pod with an etelecom-gateway container")
            continue
        for ep in pm.doc["spec"].get("podMetricsEndpoints", []):
            for d, c in pods:
                if not find_port(c, ep.get("port") or ep.get("portNumber")):
                    fail(pm.where, f"port {ep.get('port')} is not a port of the gateway container in {d.where}")
        ok(pm.where, f"selects {[d.name for d, _ in pods]}; the gateway container has the endpoint port")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k8s-versions", default="1.29.0,1.37.0",
                    help="comma-separated Kubernetes versions to validate against (default: %(default)s)")
    args = ap.parse_args()
    versions = [v.strip() for v in args.k8s_versions.split(",") if v.strip()]
    if not ROOT.is_dir():
        print(f"{ROOT} not found: run from the repository root", file=sys.stderr)
        return 2
    objs, kustomizations = load_objects()
    print(f"{len(objs)} object(s) in {ROOT}, {len(kustomizations)} kustomization(s); Kubernetes {', '.join(versions)}")
    check_schemas(objs, versions)
    check_kustomizations(kustomizations)
    check_cross(objs)
    if errors:
        print(f"{len(errors)} problem(s) in the Kubernetes manifests")
        return 1
    print("Kubernetes manifests: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
