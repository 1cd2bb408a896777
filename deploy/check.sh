#!/usr/bin/env bash
# Offline validation of everything under deploy/ (no Docker engine, no
# cluster needed):
#   - the generated files match deploy/services.toml;
#   - `kubectl kustomize` renders both overlays, every rendered object passes
#     schema validation (kubernetes-validate, strict) for the oldest and the
#     newest Kubernetes version we support, and every Deployment has probes,
#     limits, an autoscaler, a disruption budget and a network policy;
#   - the compose file validates (`docker-compose config`, and the Compose
#     specification's JSON schema as vendored by check-jsonschema);
#   - the Dockerfile parses (BuildKit's parser, via the `dockerfile` package)
#     and its images run as non-root with a health check;
#   - `promtool` accepts the alert rules and the Prometheus configuration,
#     and the rules' unit tests (alerts_test.yml) pass;
#   - the dashboards are valid JSON.
#
# A missing tool fails the run when CI is set (CI must install it: see
# .ci/run) and is reported as skipped otherwise. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.32.0 1.37.0)
passed=0
failed=0
skipped=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; sed 's/^/      /' "$work/out" | tail -n 40; }

# check NAME COMMAND...: run COMMAND, count and report it.
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then pass "$name"; else fail "$name"; fi
}

# have TOOL DESCRIPTION: whether TOOL can run; a missing tool fails under CI.
have() {
  if "$@" >/dev/null 2>&1; then return 0; fi
  if [ "${CI:-}" = "true" ]; then
    failed=$((failed + 1))
    printf 'FAIL  missing tool: %s (CI must install it)\n' "$*"
  else
    skipped=$((skipped + 1))
    printf 'skip  missing tool: %s\n' "$*"
  fi
  return 1
}

check "generated files are up to date" python3 deploy/generate.py --check

if have kubectl kustomize --help; then
  for overlay in dev prod; do
    check "kustomize renders the $overlay overlay" \
      sh -c "kubectl kustomize deploy/k8s/overlays/$overlay > '$work/$overlay.yaml'"
  done
  if have python3 -c 'import kubernetes_validate'; then
    for version in "${K8S_VERSIONS[@]}"; do
      check "both overlays pass Kubernetes $version schemas (strict)" \
        kubernetes-validate --strict --quiet -k "$version" "$work/dev.yaml" "$work/prod.yaml"
    done
  fi
  if have python3 -c 'import yaml'; then
    check "every Deployment has probes, limits, HPA, PDB, NetworkPolicy" \
      python3 deploy/check_manifests.py "$work/dev.yaml" "$work/prod.yaml"
  fi
fi

if have docker-compose version; then
  check "compose file validates (docker-compose config)" \
    docker-compose --project-directory deploy/compose -f deploy/compose/compose.yaml config -q
fi
if have check-jsonschema --version; then
  check "compose file validates against the Compose specification schema" \
    check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
fi

if have python3 -c 'import dockerfile'; then
  check "Dockerfile parses; images are non-root with a health check" python3 - <<'EOF'
import dockerfile
commands = dockerfile.parse_file("deploy/Dockerfile")
stages = {None: []}
current = None
for command in commands:
    if command.cmd == "FROM":
        current = command.value[-1] if "AS" in [v.upper() for v in command.value] else None
        stages[current] = []
    else:
        stages[current].append(command)
for stage in ("runtime", "worker"):
    assert stage in stages, f"stage {stage} missing"
    users = [c.value[0] for c in stages[stage] if c.cmd == "USER"]
    assert users and not users[-1].startswith(("0", "root")), f"{stage} runs as {users}"
    assert any(c.cmd == "HEALTHCHECK" for c in stages[stage]), f"{stage} has no HEALTHCHECK"
print("stages:", ", ".join(s for s in stages if s))
EOF
fi

if have promtool --version; then
  check "alert rules pass promtool" promtool check rules deploy/prometheus/alerts.yml
  check "alert rules fire as their unit tests expect" \
    sh -c 'cd deploy/prometheus && promtool test rules alerts_test.yml'
  check "Prometheus configuration passes promtool" promtool check config deploy/prometheus/prometheus.yml
fi

check "dashboards are valid Grafana JSON" python3 -c '
import glob, json
paths = glob.glob("deploy/dashboards/*.json")
assert paths, "no dashboards"
for path in paths:
    board = json.load(open(path))
    assert board["panels"] and all(p["targets"] for p in board["panels"]), path
'

printf '\n%d passed, %d failed' "$passed" "$failed"
[ "$skipped" -gt 0 ] && printf ', %d skipped' "$skipped"
printf '\n'
[ "$failed" -eq 0 ]
