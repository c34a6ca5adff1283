#!/usr/bin/env python3
"""Checks the pods of Kubernetes manifests against the "restricted" Pod
Security Standard (Kubernetes 1.33, the baseline's rules included), as the
PodSecurity admission controller would: every container, init containers
too. Prints each violation and exits 1 when there is one.

usage: pss-restricted.py MANIFEST...   (needs PyYAML)
"""
import sys

import yaml

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        yield spec["template"]["spec"]


def violations(pod):
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            yield f"pod: {key} is true"
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            yield f"volume {v.get('name')}: type {sorted(kinds - ALLOWED_VOLUMES)} not allowed"
    if psc.get("runAsUser") == 0:
        yield "pod: runAsUser is 0"
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        yield f"pod: seccompProfile {pod_seccomp}"
    containers = [("initContainer", c) for c in pod.get("initContainers") or []]
    containers += [("container", c) for c in pod.get("containers") or []]
    for what, c in containers:
        name = f"{what} {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            yield f"{name}: privileged"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{name}: allowPrivilegeEscalation is not false"
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            yield f"{name}: capabilities.drop does not include ALL"
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            yield f"{name}: adds capabilities {sorted(extra)}"
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            yield f"{name}: runAsNonRoot is not true (on the container or the pod)"
        if sc.get("runAsUser") == 0:
            yield f"{name}: runAsUser is 0"
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{name}: no RuntimeDefault or Localhost seccompProfile"
        if any(p.get("hostPort") for p in c.get("ports") or []):
            yield f"{name}: hostPort"
        if sc.get("procMount", "Default") != "Default":
            yield f"{name}: procMount"


def main(paths):
    bad = 0
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                for pod in pod_specs(doc or {}):
                    for v in violations(pod):
                        print(f"{path}: {doc['kind']} {doc['metadata']['name']}: {v}")
                        bad += 1
    print(f"pss-restricted: {len(paths)} file(s), {bad} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
