#!/usr/bin/env bash
# Validates the deployment files offline:
#  - every manifest under deploy/kubernetes with kubernetes-validate (pinned)
#    in strict mode (unknown fields are errors) against a pinned Kubernetes
#    version, from the schemas the package bundles;
#  - every kustomization.yaml there: each resource it lists exists, and
#    every manifest is listed by exactly one kustomization;
#  - every variable set on a container that runs a workspace binary is one
#    the binary reads (or one another value references as $(NAME)), and no
#    PASSWORD/SECRET/TOKEN variable has its value written down;
#  - docker-compose.yml with Debian's docker-compose `config -q` (apt-get
#    installs it when missing, after apt-get update if need be), with a
#    dummy POSTGRES_PASSWORD in its environment only: the file requires
#    one, the check needs no real one.
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

echo "kustomizations list every manifest once; workspace binaries read every variable set; no secret written down"
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

# Every variable set on a container running a workspace binary is one that
# binary reads (as mock-api/tests/compose.rs checks docker-compose.yml), or
# one another value of it references as $(NAME); a secret's value comes
# from a Secret, never from the manifest.
repo = pathlib.Path.cwd()
binaries = {p.parent.parent.name for p in repo.glob("*/src/main.rs")}
markers = ('env = "', 'env::var("', 'env::var_os("')
def read_by(binary):
    names = set()
    for source in (repo / binary / "src").rglob("*.rs"):
        code = source.read_text()
        for marker in markers:
            for part in code.split(marker)[1:]:
                names.add(part.split('"', 1)[0])
    return names
secret_words = ("PASSWORD", "SECRET", "TOKEN")
checked = 0
for manifest in sorted(root.rglob("*.yaml")):
    if manifest.name == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(manifest.read_text()):
        pod = (doc.get("spec") or {}).get("template", {}).get("spec")
        if not pod:
            continue
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            env = container.get("env", [])
            where = f"{manifest}: {doc['kind']} {doc['metadata']['name']}, container {container['name']}"
            for var in env:
                if "value" in var and any(word in var["name"] for word in secret_words):
                    errors.append(f"{where}: {var['name']} is written down; take it from a Secret")
            command = container.get("command") or []
            if not command or command[0] not in binaries:
                continue
            read = read_by(command[0])
            referenced = {v["name"] for v in env for w in env if f"$({v['name']})" in str(w.get("value", ""))}
            unread = [v["name"] for v in env if v["name"] not in read | referenced]
            if unread:
                errors.append(f"{where}: {command[0]} reads none of {unread}")
            checked += 1
if checked < 3:
    errors.append(f"only {checked} containers run a workspace binary; expected mock-api, seed and loadgen")
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
