#!/usr/bin/env bash
# Runs herd's whole test suite: installs what the tests need (a C compiler
# and libc headers for the test programs, make, python3, bash, a JDK for the
# Java tests, Go and node for theirs, xz and zstd (threads; xz streams files), Chromium and chromedriver
# for the dashboard test, iproute2 and util-linux for the local cluster, nftables for
# the network lock of --tcp-established, tmux for the tmux test), then
# clippy with -D warnings, then every
# test of the workspace, then the Debian package (scripts/package.sh --check).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v bash >/dev/null 2>&1 || need+=(bash)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
# Go programs (their runtime's threads, epoll and signals) checkpoint and migrate.
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# The web dashboard's test drives headless Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
fi

cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads=2
# The Debian package: built with cargo-deb, installed, checked, removed (root; SKIP otherwise).
./scripts/package.sh --check
