#!/usr/bin/env bash
# Validates the deployment files offline:
#  - every manifest under deploy/kubernetes with kubernetes-validate (pinned)
#    in strict mode (unknown fields are errors) against a pinned Kubernetes
#    version, from the schemas the package bundles;
#  - every kustomization.yaml there: each resource it lists exists, and
#    every manifest is listed by exactly one kustomization;
#  - docker-compose.yml with Debian's docker-compose `config -q`
#    (apt-get installs it when missing, after apt-get update if need be), with a dummy POSTGRES_PASSWORD in
#    its environment only: the file requires one, the check needs no real one.
# Exit 0 when all pass, 1 on the first failure (its output says which).
#
# VALIDATE_VENV=DIR reuses (or creates) a virtualenv there instead of a
# temporary one; K8S_VERSION=X.Y.Z validates against another version.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
k8s_version=${K8S_VERSION:-1.34.0}
deploy_dir=deploy/kubernetes
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

venv=$(realpath -m "${VALIDATE_VENV:-$work/venv}")
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

mapfile -t manifests < <(find "$deploy_dir" -name '*.yaml' ! -name kustomization.yaml | sort)
if [ "${#manifests[@]}" -eq 0 ]; then
  echo "validate-deploy: no manifests under $deploy_dir" >&2
  exit 1
fi

echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes $k8s_version: ${#manifests[@]} files"
"$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "${manifests[@]}"

echo "kustomizations: resources exist, every manifest listed once"
"$venv/bin/python" - "$deploy_dir" <<'PY'
import pathlib
import sys

import yaml

root = pathlib.Path(sys.argv[1])
errors = []
listed = {}
for kfile in sorted(root.rglob("kustomization.yaml")):
    doc = yaml.safe_load(kfile.read_text())
    if doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or doc.get("kind") != "Kustomization":
        errors.append(f"{kfile}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    for resource in doc.get("resources") or []:
        path = (kfile.parent / resource).resolve()
        if not path.is_file():
            errors.append(f"{kfile}: resource {resource} does not exist")
        listed.setdefault(path, []).append(kfile)
for manifest in sorted(root.rglob("*.yaml")):
    if manifest.name == "kustomization.yaml":
        continue
    owners = listed.get(manifest.resolve(), [])
    if len(owners) != 1:
        errors.append(f"{manifest}: listed by {len(owners)} kustomizations, expected 1")
for error in errors:
    print(error, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

if ! command -v docker-compose >/dev/null; then
  { apt-get install -y docker-compose || { apt-get update && apt-get install -y docker-compose; }; } >"$work/apt.log" 2>&1 || {
    cat "$work/apt.log" >&2
    echo "validate-deploy: cannot install docker-compose" >&2
    exit 1
  }
fi
echo "$(docker-compose version --short 2>/dev/null || echo docker-compose) config -q: docker-compose.yml"
POSTGRES_PASSWORD=validation-only docker-compose -f docker-compose.yml config -q

echo "validate-deploy: all valid"
