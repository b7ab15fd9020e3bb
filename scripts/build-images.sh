#!/usr/bin/env bash
# Build the project's images from this checkout:
#   modelrollout/operator:dev     docker/operator.Dockerfile (the controller, no torch)
#   modelrollout/modelserve:dev   docker/serving.Dockerfile  (modelserve with torch)
#   modelrollout/modelserve:e2e   docker/serving-e2e.Dockerfile (the above plus tiny test models)
# and, with the argument `vllm` (`make images-vllm`), after those:
#   modelrollout/vllm-cpu:dev     docker/vllm-cpu.Dockerfile (vLLM's CPU build, the pinned env)
#   modelrollout/vllm-cpu:e2e     docker/vllm-cpu-e2e.Dockerfile (the above plus tiny models)
# With docker when its daemon answers, else with podman (buildah underneath); IMAGE_BUILDER=
# docker|podman picks one. Prints each build's time and each image's size.
#
# The base image (BASE in the Dockerfiles): BASE_IMAGE if set; else python:3.11-slim when it
# is present or can be pulled; else, where no registry serves it, a Debian image made here
# with mmdebstrap (python3 from Debian: bookworm has 3.11), imported once as
# localhost/modelrollout-base:<release> and reused (DEBIAN_RELEASE, default bookworm).
#
# pip inside the build uses this machine's pip configuration: the index settings that
# `pip config list` shows and the CA bundle its `cert` names travel as build secrets
# (pip_conf, pip_cert), so they are in no layer of the images.
#
# podman on this kind of host: crun fails on hybrid cgroups (runc is used when installed,
# PODMAN_RUNTIME overrides) and podman's default rlimits exceed the host's hard limits
# (explicit lower --ulimit values; PODMAN_ULIMITS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

public_base="python:3.11-slim"
debian_release="${DEBIAN_RELEASE:-bookworm}"
local_base="localhost/modelrollout-base:$debian_release"

log() { echo "[images] $*" >&2; }

builder="${IMAGE_BUILDER:-}"
if [ -z "$builder" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    builder=docker
  elif command -v podman >/dev/null; then
    builder=podman
  else
    log "neither a docker daemon nor podman: install podman and buildah (apt-get install podman buildah)"
    exit 1
  fi
fi

build_flags=()
case "$builder" in
  docker)
    export DOCKER_BUILDKIT=1  # RUN --mount (secrets, pip's cache)
    image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
    ;;
  podman)
    runtime="${PODMAN_RUNTIME:-$(command -v runc >/dev/null && echo runc || true)}"
    [ -z "$runtime" ] || build_flags+=(--runtime "$runtime")
    if [ -n "${PODMAN_ULIMITS:-}" ]; then
      read -r -a ulimits <<<"$PODMAN_ULIMITS"
    else
      nofile="$(ulimit -Hn)"
      if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
      ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
    fi
    build_flags+=("${ulimits[@]}" --network host)
    image_exists() { podman image exists "$1"; }
    ;;
  *)
    log "IMAGE_BUILDER must be docker or podman, not $builder"
    exit 1
    ;;
esac

make_local_base() {
  command -v mmdebstrap >/dev/null || {
    log "no $public_base here and no mmdebstrap to make a base: apt-get install mmdebstrap, or set BASE_IMAGE"
    exit 1
  }
  log "making $local_base with mmdebstrap (once; minutes)"
  local rootfs started=$SECONDS
  rootfs="$(mktemp --suffix=.tar)"
  # Documentation and translations are of no use in an image.
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$debian_release" "$rootfs" >&2
  "$builder" import --change 'CMD ["/bin/bash"]' "$rootfs" "$local_base" >/dev/null
  rm -f "$rootfs"
  log "made $local_base in $((SECONDS - started)) s"
}

base="${BASE_IMAGE:-}"
if [ -z "$base" ]; then
  if image_exists "$public_base" || timeout 300 "$builder" pull -q "$public_base" >/dev/null 2>&1; then
    base="$public_base"
  else
    image_exists "$local_base" || make_local_base
    base="$local_base"
  fi
fi
log "builder $builder, base image $base"

# pip's settings for the build: the index ones from `pip config list` (host paths such as
# find-links mean nothing inside the build) and the CA bundle as a file of its own.
secrets_dir="$(mktemp -d)"
trap 'rm -rf "$secrets_dir"' EXIT
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip config list 2>/dev/null | python3 -c '
import ast, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
wanted = {"index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout",
          "retries", "proxy"}
lines = ["[global]"]
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    name = key.rpartition(".")[2]
    value = ast.literal_eval(value)
    if name == "cert":
        shutil.copyfile(value, out / "pip_cert")
    elif name in wanted:
        lines.append(f"{name} = {value}")
if (out / "pip_cert").is_file():
    lines.append("cert = /run/secrets/pip_cert")
(out / "pip_conf").write_text("\n".join(lines) + "\n")
' "$secrets_dir"
fi
for secret in pip_conf pip_cert; do
  [ ! -f "$secrets_dir/$secret" ] || build_flags+=(--secret "id=$secret,src=$secrets_dir/$secret")
done

build() {
  local image="$1" dockerfile="$2" from="$3"
  local started=$SECONDS
  log "building $image ($dockerfile on $from)"
  "$builder" build "${build_flags[@]}" --build-arg "BASE=$from" -f "$dockerfile" -t "$image" .
  log "built $image in $((SECONDS - started)) s"
}

build modelrollout/operator:dev docker/operator.Dockerfile "$base"
build modelrollout/modelserve:dev docker/serving.Dockerfile "$base"
build modelrollout/modelserve:e2e docker/serving-e2e.Dockerfile modelrollout/modelserve:dev
images=(modelrollout/operator:dev modelrollout/modelserve:dev modelrollout/modelserve:e2e)
if [ "${1:-}" = vllm ]; then
  build modelrollout/vllm-cpu:dev docker/vllm-cpu.Dockerfile "$base"
  build modelrollout/vllm-cpu:e2e docker/vllm-cpu-e2e.Dockerfile modelrollout/vllm-cpu:dev
  images+=(modelrollout/vllm-cpu:dev modelrollout/vllm-cpu:e2e)
elif [ -n "${1:-}" ]; then
  log "the only argument is vllm (also build vLLM's CPU images), not $1"
  exit 1
fi

for image in "${images[@]}"; do
  size="$("$builder" image inspect --format '{{.Size}}' "$image")"
  log "$image: $((size / 1000000)) MB"
done
