#!/usr/bin/env bash
# Deploy or upgrade Zócalo with kubectl: migrations first, then the rollout.
#
#   deploy/k8s/deploy.sh dev|prod [TAG]
#
# 1. renders the overlay (with the image TAG when given);
# 2. replaces the migration Job (Jobs are immutable) and waits for it:
#    the new schema is in place before any new pod serves;
# 3. applies everything else and waits for every Deployment to roll out.
# Migrations only add (columns, tables, indexes), so the running version
# keeps working against the new schema during the rollout.
set -euo pipefail
overlay=${1:?usage: deploy.sh dev|prod [TAG]}
tag=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT

if [ -n "$tag" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work" "$rendered"' EXIT
  cat >"$work/kustomization.yaml" <<YAML
resources: [$here/overlays/$overlay]
images:
  - {name: ghcr.io/zocalo/zocalo, newTag: "$tag"}
  - {name: ghcr.io/zocalo/zocalo-worker, newTag: "$tag"}
YAML
  kubectl kustomize --load-restrictor LoadRestrictionsNone "$work" >"$rendered"
else
  kubectl kustomize "$here/overlays/$overlay" >"$rendered"
fi
namespace=$(awk '/^kind: Namespace/{ns=1} ns && /^  name:/{print $2; exit}' "$rendered")

echo "== namespace, configuration, secrets"
kubectl apply -f "$rendered" -l 'app.kubernetes.io/component!=service,app.kubernetes.io/component!=worker,app.kubernetes.io/component!=migration'

echo "== migrations"
kubectl -n "$namespace" delete job zocalo-migrate --ignore-not-found --wait=true
kubectl apply -f "$rendered" -l app.kubernetes.io/component=migration
kubectl -n "$namespace" wait --for=condition=complete job/zocalo-migrate --timeout=600s

echo "== services and workers"
kubectl apply -f "$rendered"
for deployment in $(kubectl -n "$namespace" get deployments -l app.kubernetes.io/part-of=zocalo -o name); do
  kubectl -n "$namespace" rollout status "$deployment" --timeout=600s
done
