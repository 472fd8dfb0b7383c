#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and kubectl 1.20.2 from Debian
# bookworm's `kubernetes` source package (DESIGN.md §9), and install Debian's etcd-server.
#
# The binaries are cached outside the repository, in $LLMFLEET_K8S_BIN
# (default ~/.cache/llmfleet/kubernetes-1.20.2/bin); a second run with the binaries present
# only checks the Debian packages and exits. About 10 minutes on 2 cores the first time.
#
# Facts this script relies on (measured on this kind of machine, see issue 4):
# - `apt-get source` needs a deb-src entry for the mirror apt already uses; we add one.
# - the tree vendors its dependencies, but vendored github.com/modern-go/reflect2 1.0.1
#   crashes under Go 1.19 ("fatal error: fault"); Debian's golang-github-modern-go-reflect2-dev
#   (1.0.2) replaces it.
# - build in GOPATH mode, as debian/rules does, with CGO_ENABLED=0.
set -euo pipefail

BIN_DIR="${LLMFLEET_K8S_BIN:-$HOME/.cache/llmfleet/kubernetes-1.20.2/bin}"
WORK_DIR="$(dirname "$BIN_DIR")/src"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in etcd-server openssl; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done

all_built=1
for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || all_built=0; done

if [ "$all_built" = 1 ] && [ "${#need_pkgs[@]}" = 0 ]; then
  echo "control plane: cached binaries in $BIN_DIR"
  exit 0
fi

if [ "$all_built" = 0 ]; then
  need_pkgs+=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev rsync)
fi
# kubectl is built from the same tree (Debian's kubernetes-client would clash with a kubectl
# that another package may already have installed).

if [ "$all_built" = 0 ] && ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Reuse the mirror and suite of the first Debian `deb` entry for a deb-src entry.
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -m1 '/debian$' | awk '{print $2}')
  uri="${uri:-http://deb.debian.org/debian}"
  echo "control plane: adding a deb-src entry for $uri bookworm"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
    | $SUDO tee /etc/apt/sources.list.d/llmfleet-deb-src.sources >/dev/null
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

[ "$all_built" = 1 ] && { echo "control plane: cached binaries in $BIN_DIR"; exit 0; }

mkdir -p "$WORK_DIR" "$BIN_DIR"
cd "$WORK_DIR"
if ! ls -d kubernetes-1.20*/ >/dev/null 2>&1; then
  echo "control plane: fetching Debian's kubernetes source package"
  apt-get source -qq kubernetes >/dev/null
fi
SRC="$(cd "$(ls -d kubernetes-1.20*/ | head -1)" && pwd)"

# GOPATH layout, as debian/rules builds it.
GOPATH_DIR="$WORK_DIR/gopath"
mkdir -p "$GOPATH_DIR/src/k8s.io"
ln -sfn "$SRC" "$GOPATH_DIR/src/k8s.io/kubernetes"

echo "control plane: replacing vendored reflect2 1.0.1 with Debian's 1.0.2"
rsync -a --delete --exclude '*_test.go' /usr/share/gocode/src/github.com/modern-go/reflect2/ \
  "$SRC/vendor/github.com/modern-go/reflect2/"

echo "control plane: building ${BINARIES[*]} (about 10 minutes on 2 cores)"
cd "$GOPATH_DIR/src/k8s.io/kubernetes"
export GOPATH="$GOPATH_DIR" GO111MODULE=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GOCACHE="$WORK_DIR/gocache"
unset GOFLAGS
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl" >"$WORK_DIR/build.log" 2>&1 \
  || { tail -40 "$WORK_DIR/build.log"; exit 1; }
for b in "${BINARIES[@]}"; do
  install -m 0755 "_output/local/bin/linux/amd64/$b" "$BIN_DIR/$b" 2>/dev/null \
    || install -m 0755 "$(find _output -type f -name "$b" | head -1)" "$BIN_DIR/$b"
done
echo "control plane: built into $BIN_DIR"
