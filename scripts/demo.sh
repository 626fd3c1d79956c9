#!/bin/sh
# Builds herd and herdd, then runs `herd demo` (see `herd demo --help`); run it as root.
cd "$(dirname "$0")/.." && cargo build --release -q -p herd-cli -p herd-daemon && exec target/release/herd demo "$@"
