#!/usr/bin/env bash
# Builds herd's Debian package, target/debian/herd_VERSION_ARCH.deb, with cargo-deb
# (installed with `cargo install cargo-deb` if missing): herd and herdd in /usr/bin, the
# openMosix names as links (mosrun, migrate, mps, mosctl, native, mtop, mosmon), man pages
# and bash/zsh/fish completions generated from the CLI definitions (clap_mangen,
# clap_complete), the systemd unit herdd.service (installed, not enabled: a node needs the
# cluster key first), the Grafana dashboard.
#
#   scripts/package.sh           from a release build
#   scripts/package.sh --debug   from the debug build
#   scripts/package.sh --check   --debug, then install it (dpkg -i), check that herd, herdd,
#                                the links, the man pages, a completion and `herdd --check`
#                                work, and remove it again (root only; the test script runs it)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release check=0
case "${1:-}" in
  "") ;;
  --debug) profile=dev ;;
  --check) profile=dev check=1 ;;
  *) echo "usage: scripts/package.sh [--debug | --check]" >&2; exit 2 ;;
esac
dir=$([ "$profile" = dev ] && echo debug || echo release)

if [ "$check" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "SKIP: package check: installing a package needs root"
  exit 0
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version '^3' --quiet

cargo build --quiet --profile "$profile" -p herd-cli -p herd-daemon
out=target/package
rm -rf "$out" && mkdir -p "$out/bin" "$out/man" "$out/completions"
"target/$dir/herd" __man "$out/man"
gzip -9n "$out"/man/*.1
"target/$dir/herd" completions bash > "$out/completions/herd"
"target/$dir/herd" completions zsh > "$out/completions/_herd"
"target/$dir/herd" completions fish > "$out/completions/herd.fish"
# The openMosix and MOSIX names, each the herd command it stands for (herd looks at argv[0]).
for alias in mosrun:run migrate:migrate mps:ps mosctl:ctl native:run mtop:top mosmon:mon; do
  ln -s herd "$out/bin/${alias%%:*}"
  ln -s "herd-${alias##*:}.1.gz" "$out/man/${alias%%:*}.1.gz"
done
sed 's#/usr/local/bin/#/usr/bin/#g; /^# *install -m/d' contrib/herdd.service > "$out/herdd.service"
rm -f target/debian/herd_*.deb
cargo deb --quiet -p herd-cli --no-build --profile "$profile" --output target/debian/ >/dev/null
deb=$(ls target/debian/herd_*.deb)
echo "built $deb"
[ "$check" = 1 ] || exit 0

# --check: install it on this machine, look, remove it.
command -v man >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db; }
trap 'dpkg -r herd >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null
fail() { echo "package check failed: $*" >&2; exit 1; }
# Each output whole, then looked at: grep -q on a pipe would end the writer early.
has() { grep -q -- "$2" <<<"$1" || fail "$3"; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
has "$(/usr/bin/herd --version)" "^herd $version\$" "herd --version"
has "$(/usr/bin/herdd --version)" "^herdd $version\$" "herdd --version"
[ "$(readlink /usr/bin/mosrun)" = herd ] || fail "the mosrun link"
has "$(/usr/bin/mtop --help)" "^Usage: herd top" "mtop is herd top"
has "$(MANPAGER=cat man herd 2>&1)" "openMosix" "man herd"
has "$(MANPAGER=cat man mosrun 2>&1)" "migratable process" "man mosrun"
has "$(MANPAGER=cat man herdd 2>&1)" "--check" "man herdd"
has "$(bash -c 'source /usr/share/bash-completion/completions/herd && complete -p herd' 2>&1)" "herd" "bash completion"
[ -s /usr/share/zsh/vendor-completions/_herd ] && [ -s /usr/share/fish/vendor_completions.d/herd.fish ] || fail "zsh/fish completions"
has "$(cat /lib/systemd/system/herdd.service)" "^ExecStart=/usr/bin/herdd$" "herdd.service"
tmp=$(mktemp -d)
/usr/bin/herd keygen --output "$tmp/cluster.key" >/dev/null
printf 'name = "pkgcheck"\nkey_file = "%s"\ncontrol_socket = "%s"\n' "$tmp/cluster.key" "$tmp/herdd.sock" > "$tmp/herd.toml"
has "$(/usr/bin/herdd --check --config "$tmp/herd.toml" 2>&1)" "^configuration .*: ok" "herdd --check"
rm -rf "$tmp"
echo "package check: $deb installs; herd, herdd, the openMosix links, man pages, completions, herdd.service and herdd --check work; removed again"
