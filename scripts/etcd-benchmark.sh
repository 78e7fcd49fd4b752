#!/usr/bin/env bash
# Builds etcd's own benchmark tool (tools/benchmark of etcd 3.4.23) into
# target/etcd-benchmark/benchmark, from Debian's etcd source package with Debian's Go
# toolchain and the package's golang-*-dev build dependencies, offline (GOPATH mode, no
# module proxy): no Debian binary package ships the tool. `make bench-etcd` runs this.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/target/etcd-benchmark"
BIN="$OUT/benchmark"
[ -x "$BIN" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# Source packages come from a deb-src entry for the same archive as the binaries.
if ! apt-cache showsrc etcd 2>/dev/null | grep -q '^Version: 3.4'; then
  echo "adding a deb-src entry for Debian's main archive"
  . /etc/os-release
  $SUDO tee /etc/apt/sources.list.d/ringkv-deb-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO apt-get update -qq
fi
if ! command -v go >/dev/null || ! dpkg -s golang-gopkg-cheggaaa-pb.v1-dev >/dev/null 2>&1; then
  echo "installing Go and etcd's build dependencies"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq etcd >/dev/null
fi

SRC="$OUT/src"
rm -rf "$SRC"
mkdir -p "$SRC"
(cd "$SRC" && apt-get source -qq etcd >/dev/null 2>&1)
TREE="$(find "$SRC" -maxdepth 1 -type d -name 'etcd-3.4*' | head -1)"
[ -n "$TREE" ] || { echo "apt-get source etcd gave no etcd-3.4 tree" >&2; exit 1; }
# GOPATH mode: the tree at its import path, Debian's Go libraries beside it.
GP="$OUT/gopath"
mkdir -p "$GP/src/go.etcd.io"
ln -sfn "$TREE" "$GP/src/go.etcd.io/etcd"
(cd "$GP/src/go.etcd.io/etcd" &&
  GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$GP:/usr/share/gocode" \
  go build -o "$BIN" ./tools/benchmark)
echo "built $BIN ($("$BIN" --help >/dev/null 2>&1 && echo runs))"
