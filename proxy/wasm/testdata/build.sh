#!/bin/sh
# Rebuilds every test module of the proxy-wasm host from source and writes
# SHA256SUMS. Go plugins (plugins/*) are built with the standard toolchain
# for wasip1 as reactors; WAT modules (wat/*) with wat2wasm (Debian: wabt).
#
#   ./build.sh          rebuild into this directory
#   ./build.sh DIR      rebuild into DIR (the freshness test uses this)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"
cd "$here"
for dir in plugins/*/; do
	name=$(basename "$dir")
	GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOFLAGS=-mod=mod \
		go build -trimpath -buildvcs=false -buildmode=c-shared \
		-o "$out/$name.wasm" "./$dir"
done
for src in wat/*.wat; do
	name=$(basename "$src" .wat)
	wat2wasm "$src" -o "$out/$name.wasm"
done
cd "$out"
sha256sum $(ls *.wasm | LC_ALL=C sort) > SHA256SUMS
