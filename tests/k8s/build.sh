#!/usr/bin/env bash
# Builds etcd + kube-apiserver + kube-controller-manager v1.20.2 from Debian's packages once and
# caches the three binaries under ~/.cache/necrocode/k8s-v1.20.2/bin (override: NECROCODE_K8S_CACHE).
# A second run finds the cache and exits at once. Needs: apt-get (Debian bookworm), make, ~2.5 GB of
# free disk under $TMPDIR and ~10 minutes on 2 cores. Nothing is installed system-wide: the
# toolchain and etcd are unpacked from their .deb files into the build and cache folders.
set -euo pipefail

K8S_VERSION=v1.20.2
DEB_SOURCE_VERSION=1.20.5+really1.20.2-1.1+deb12u1
GO_DEBS=(golang-1.19-go golang-1.19-src)
CACHE=${NECROCODE_K8S_CACHE:-$HOME/.cache/necrocode/k8s-$K8S_VERSION}
BIN=$CACHE/bin
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf '[k8s build] %s\n' "$*" >&2; }

if [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  log "cached: $BIN"
  exit 0
fi

mkdir -p "$CACHE"
# one build at a time per cache folder
exec 9>"$CACHE/.build.lock"
flock 9
if [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  log "cached (built meanwhile): $BIN"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/necrocode-k8s-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

# --- a private apt configuration with deb-src lines (the machine's sources stay untouched) ------
APT=$WORK/apt
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/cache/archives/partial"
src=/etc/apt/sources.list.d/debian.sources
if [ ! -f "$src" ]; then
  log "no $src: this script expects Debian bookworm's deb822 sources"
  exit 1
fi
sed -E 's/^Types:.*/Types: deb deb-src/' "$src" >"$APT/sources.list.d/debian.sources"
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT/sources.list.d"
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1")
log "apt-get update (private lists)"
apt-get "${apt_opts[@]}" update -qq

# --- toolchain and etcd, unpacked from their .deb files --------------------------------------
mkdir -p "$WORK/debs" "$WORK/root"
(cd "$WORK/debs" && apt-get "${apt_opts[@]}" download -qq "${GO_DEBS[@]}" etcd-server)
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
# golang-1.19-go links /usr/lib/go-1.19/src to /usr/share/go-1.19/src: relink inside the unpack
GOROOT=$WORK/root/usr/lib/go-1.19
for d in src pkg/include; do
  if [ -L "$GOROOT/$d" ]; then
    target=$(readlink "$GOROOT/$d")
    case "$target" in /*) ln -sfn "$WORK/root$target" "$GOROOT/$d" ;; esac
  fi
done
export GOROOT PATH="$GOROOT/bin:$PATH"
# the build copies its outputs with `rsync -pc SRC DEST` (its only use of rsync): a stand-in
# where rsync is not installed
if ! command -v rsync >/dev/null 2>&1; then
  mkdir -p "$WORK/shim"
  printf '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec cp -p "$@"\n' >"$WORK/shim/rsync"
  chmod +x "$WORK/shim/rsync"
  PATH="$WORK/shim:$PATH"
fi
go version >&2

# --- the Kubernetes source (the full upstream tree with vendor/) ------------------------------
log "apt-get source kubernetes=$DEB_SOURCE_VERSION"
mkdir -p "$WORK/src"
(cd "$WORK/src" && apt-get "${apt_opts[@]}" source --download-only -qq "kubernetes=$DEB_SOURCE_VERSION")
orig=$(ls "$WORK"/src/kubernetes_*.orig.tar.* | head -1)
mkdir -p "$WORK/kubernetes"
tar -xf "$orig" -C "$WORK/kubernetes" --strip-components=1
rm -rf "$WORK/src"
cd "$WORK/kubernetes"

# --- the one fix: vendored reflect2 v1.0.1 crashes under Go >= 1.18 --------------------------
log "patching vendored reflect2 for Go 1.18+ (mapiterinit takes the iterator)"
patch -p1 --forward <"$HERE/reflect2-go118.patch"

# --- build --------------------------------------------------------------------------------------
log "make kube-apiserver kube-controller-manager (about 10 minutes on 2 cores)"
export GOFLAGS=-mod=vendor GOPROXY=off GOCACHE=$WORK/gocache GOPATH=$WORK/gopath
KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_TREE_STATE=clean CGO_ENABLED=0 \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2

mkdir -p "$BIN.new"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN.new/"
cp "$WORK/root/usr/bin/etcd" "$BIN.new/"
rm -rf "$BIN" && mv "$BIN.new" "$BIN"
"$BIN/kube-apiserver" --version >&2
log "built in $(( $(date +%s) - start )) s: $BIN"
