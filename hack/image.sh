#!/usr/bin/env bash
# The tcred container image (Dockerfile), built with buildah: no daemon, no base image to pull.
#
#   hack/image.sh build   static tcred binary + CA bundle into target/image/, then buildah bud
#                         (tag localhost/tcred:<version>)
#   hack/image.sh check   build, then check the image: user 65532:65532, entrypoint and cmd, size
#                         budget, and that /tcred runs inside the image's filesystem, with the CA
#                         bundle in place
#
# buildah comes from Debian's package (installed here when missing, as root). Storage and isolation
# default to what works as root inside a container, with no daemon and no nested namespaces
# (CI, dev machines): BUILDAH_STORAGE_DRIVER=vfs, BUILDAH_ISOLATION=chroot.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TARGET=x86_64-unknown-linux-gnu
CONTEXT=target/image
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Uncompressed image (binary + CA bundle). Measured 2026-11: binary 18.6 MB, image 18.9 MB
# (8.0 MB compressed). Budget ~30% above: a jump past it means a dependency worth a look.
IMAGE_BUDGET_BYTES=$((24500 * 1000))
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
STORAGE_DRIVER=${BUILDAH_STORAGE_DRIVER:-vfs}

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

version() {
  sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1
}
IMAGE=localhost/tcred:$(version)

bah() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }

ensure_buildah() {
  command -v buildah >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "buildah is missing: install it (Debian: apt-get install -y buildah)"
  log "installing buildah (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq buildah >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq buildah >/dev/null
  }
  command -v buildah >/dev/null || die "buildah did not install"
}

build_binary() {
  log "building a static tcred (release, $TARGET, crt-static)"
  # Only the target's objects get crt-static; build scripts and proc macros stay dynamic.
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --bin tcred --target "$TARGET"
  local bin="target/$TARGET/release/tcred"
  # An image with no libc needs a binary that loads nothing.
  if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    ldd "$bin" >&2
    die "$bin is dynamically linked"
  fi
  file "$bin" | grep -q 'static' || die "$bin is not static: $(file -b "$bin")"
  mkdir -p "$CONTEXT"
  install -m 0755 "$bin" "$CONTEXT/tcred"
  [[ -s $CA_BUNDLE ]] || die "no CA bundle at $CA_BUNDLE (Debian: apt-get install -y ca-certificates)"
  install -m 0644 "$CA_BUNDLE" "$CONTEXT/ca-certificates.crt"
}

build() {
  ensure_buildah
  build_binary
  local source_url previous
  source_url=$(git remote get-url origin 2>/dev/null || true)
  previous=$(bah images --quiet --no-trunc "$IMAGE" 2>/dev/null || true)
  log "buildah bud -t $IMAGE (storage $STORAGE_DRIVER, isolation $BUILDAH_ISOLATION)"
  bah bud --quiet --isolation "$BUILDAH_ISOLATION" --layers=false \
    --build-arg "VERSION=$(version)" --build-arg "SOURCE_URL=$source_url" \
    -f "$ROOT/Dockerfile" -t "$IMAGE" "$CONTEXT" >/dev/null
  # the image this build replaced is untagged now: remove it rather than pile up copies
  if [[ -n $previous && $previous != "$(bah images --quiet --no-trunc "$IMAGE")" ]]; then
    bah rmi "$previous" >/dev/null 2>&1 || true
  fi
  log "built $IMAGE ($(bah images --quiet "$IMAGE"))"
}

check() {
  build
  local passed=0 failed=0 mnt=""
  ok() { printf '  ok    %s\n' "$*"; passed=$((passed + 1)); }
  bad() { printf '  FAIL  %s\n' "$*"; failed=$((failed + 1)); }
  expect() { if [[ $2 == "$3" ]]; then ok "$1: $2"; else bad "$1: expected $3, got $2"; fi; }
  cleanup() {
    [[ -n ${ctr:-} ]] && { bah umount "$ctr" >/dev/null 2>&1 || true; bah rm "$ctr" >/dev/null 2>&1 || true; }
  }
  trap cleanup EXIT

  printf '\n==> %s\n' "checking $IMAGE"
  bah inspect --type image "$IMAGE" >"$CONTEXT/inspect.json"
  # field PYTHON-EXPR: evaluated on the image config `c`
  field() {
    python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["OCIv1"]["config"]; print(eval(sys.argv[2]))' \
      "$CONTEXT/inspect.json" "$1"
  }
  local user
  user=$(field 'c.get("User", "")')
  expect "user" "$user" "65532:65532"
  expect "entrypoint" "$(field 'json.dumps(c.get("Entrypoint"))')" '["/tcred"]'
  expect "cmd" "$(field 'json.dumps(c.get("Cmd"))')" '["controller"]'
  expect "exposed ports" "$(field '" ".join(sorted(c.get("ExposedPorts", {})))')" "8080/tcp"
  expect "label licenses" "$(field 'c["Labels"]["org.opencontainers.image.licenses"]')" "Apache-2.0"
  expect "label version" "$(field 'c["Labels"]["org.opencontainers.image.version"]')" "$(version)"

  ctr=$(bah from --pull-never "$IMAGE")
  mnt=$(bah mount "$ctr")
  local bin_size image_size archive_size
  bin_size=$(stat -c %s "$CONTEXT/tcred")
  # Uncompressed: what a node stores. Compressed (an OCI archive, gzip layers): what it pulls.
  image_size=$(du -sb --apparent-size "$mnt" | cut -f1)
  bah push --quiet "$IMAGE" "oci-archive:$CONTEXT/tcred-oci.tar" >/dev/null
  archive_size=$(stat -c %s "$CONTEXT/tcred-oci.tar")
  rm -f "$CONTEXT/tcred-oci.tar"
  printf '  info  binary %s bytes, image %s bytes uncompressed (%s compressed), budget %s bytes\n' \
    "$bin_size" "$image_size" "$archive_size" "$IMAGE_BUDGET_BYTES"
  if ((image_size < IMAGE_BUDGET_BYTES)); then
    ok "image size $(numfmt --to=si "$image_size")B under the budget $(numfmt --to=si "$IMAGE_BUDGET_BYTES")B"
  else
    bad "image size $image_size bytes over the budget $IMAGE_BUDGET_BYTES bytes"
  fi
  local files
  files=$(cd "$mnt" && find . -mindepth 1 \( -type f -o -type l \) | sort | tr '\n' ' ')
  expect "files in the image" "$files" "./etc/ssl/certs/ca-certificates.crt ./tcred "
  if [[ -s $mnt/etc/ssl/certs/ca-certificates.crt ]] &&
    grep -q 'BEGIN CERTIFICATE' "$mnt/etc/ssl/certs/ca-certificates.crt"; then
    ok "CA bundle at /etc/ssl/certs/ca-certificates.crt ($(grep -c 'BEGIN CERTIFICATE' "$mnt/etc/ssl/certs/ca-certificates.crt") roots)"
  else
    bad "no CA bundle at /etc/ssl/certs/ca-certificates.crt"
  fi
  local out
  if out=$("$mnt/tcred" --version 2>&1) && [[ $out == "tcred $(version)" ]]; then
    ok "<mnt>/tcred --version: $out"
  else
    bad "<mnt>/tcred --version: $out"
  fi
  # Inside the image's own filesystem (nothing but the binary and the CA bundle), as the image user.
  if out=$(bah run --isolation "$BUILDAH_ISOLATION" "$ctr" -- /tcred crd 2>&1) &&
    grep -q 'kind: CustomResourceDefinition' <<<"$out"; then
    ok "buildah run (user $user, image rootfs only): /tcred crd prints the CRDs"
  else
    bad "buildah run /tcred crd: $(head -c 400 <<<"$out")"
  fi

  printf '\nimage-check: %d passed, %d failed\n' "$passed" "$failed"
  ((failed == 0))
}

case "${1:-}" in
  build) build ;;
  check) check ;;
  *) echo "usage: $0 build|check" >&2; exit 2 ;;
esac
