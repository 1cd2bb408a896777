#!/usr/bin/env python3
"""Assert what every Zócalo workload in a rendered overlay must have.

Usage: check_manifests.py RENDERED.yaml...  (output of `kubectl kustomize`)

For every Deployment: startup, liveness and readiness probes on the admin
endpoints; CPU and memory requests and limits; a preStop pause and a grace
period longer than the drain; topology spread; a non-root, read-only
container; a HorizontalPodAutoscaler scaling it (CPU, and requests per
second for services); a PodDisruptionBudget and a NetworkPolicy selecting its
pods. For the whole overlay: ingress denied by default, only the gateway
exposed (every other Zócalo Service headless), and the migration Job.
Prints one line per failed assertion and a closing "N passed, N failed".
"""

import sys

import yaml


class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def that(self, condition, what):
        if condition:
            self.passed += 1
        else:
            self.failures.append(what)


def selects(selector, pod_labels):
    """Whether a label selector (matchLabels and In expressions) picks a pod."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if pod_labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] == "In" and pod_labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def check_deployment(checks, where, deployment, by_kind):
    name = deployment["metadata"]["name"]
    what = f"{where}: Deployment {name}"
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    for container in spec["containers"]:
        cname = f"{what} container {container['name']}"
        for probe, path in (("startupProbe", "/live"), ("livenessProbe", "/live"), ("readinessProbe", "/ready")):
            got = (container.get(probe) or {}).get("httpGet", {}).get("path")
            checks.that(got == path, f"{cname}: {probe} on {path} (has {got})")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                checks.that(resource in (resources.get(kind) or {}), f"{cname}: {kind}.{resource}")
        checks.that("preStop" in (container.get("lifecycle") or {}), f"{cname}: preStop")
        security = container.get("securityContext") or {}
        checks.that(security.get("readOnlyRootFilesystem") is True, f"{cname}: read-only root")
        checks.that(security.get("allowPrivilegeEscalation") is False, f"{cname}: no privilege escalation")
    checks.that(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{what}: runs as non-root")
    checks.that(spec.get("terminationGracePeriodSeconds", 30) > 35, f"{what}: grace period covers preStop + 30 s drain")
    checks.that(bool(spec.get("topologySpreadConstraints")), f"{what}: topology spread")

    autoscalers = [
        h for h in by_kind.get("HorizontalPodAutoscaler", [])
        if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    ]
    checks.that(len(autoscalers) == 1, f"{what}: one HorizontalPodAutoscaler")
    for hpa in autoscalers:
        hpa_spec = hpa["spec"]
        checks.that(1 <= hpa_spec["minReplicas"] < hpa_spec["maxReplicas"], f"{what}: autoscaler min < max")
        metrics = {m.get("resource", {}).get("name") or m.get("pods", {}).get("metric", {}).get("name") for m in hpa_spec["metrics"]}
        checks.that("cpu" in metrics, f"{what}: autoscales on CPU")
        if pod_labels.get("app.kubernetes.io/component") == "service":
            checks.that("http_requests_per_second" in metrics, f"{what}: autoscales on requests per second")
    budgets = [p for p in by_kind.get("PodDisruptionBudget", []) if selects(p["spec"]["selector"], pod_labels)]
    checks.that(len(budgets) == 1, f"{what}: one PodDisruptionBudget")
    policies = [
        n for n in by_kind.get("NetworkPolicy", [])
        if selects(n["spec"]["podSelector"], pod_labels) and n["spec"]["podSelector"]
    ]
    checks.that(len(policies) == 1, f"{what}: one NetworkPolicy of its own")


def check_overlay(checks, path):
    with open(path) as f:
        resources = [doc for doc in yaml.safe_load_all(f) if doc]
    by_kind = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)
    deployments = by_kind.get("Deployment", [])
    checks.that(len(deployments) >= 5, f"{path}: Deployments rendered ({len(deployments)})")
    for deployment in deployments:
        check_deployment(checks, path, deployment, by_kind)
    checks.that(
        any(n["spec"]["podSelector"] == {} and n["spec"].get("policyTypes") == ["Ingress"] for n in by_kind.get("NetworkPolicy", [])),
        f"{path}: ingress denied by default",
    )
    exposed = [
        s["metadata"]["name"] for s in by_kind.get("Service", [])
        if s["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "zocalo"
        and s["spec"].get("clusterIP") != "None"
    ]
    checks.that(exposed == ["gateway-public"], f"{path}: only gateway-public is not headless (got {exposed})")
    jobs = [j["metadata"]["name"] for j in by_kind.get("Job", [])]
    checks.that("zocalo-migrate" in jobs, f"{path}: migration Job")


def main(paths):
    checks = Checks()
    for path in paths:
        check_overlay(checks, path)
    for failure in checks.failures:
        print(f"FAIL {failure}")
    print(f"{checks.passed} passed, {len(checks.failures)} failed")
    return 1 if checks.failures or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
