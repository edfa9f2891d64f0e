#!/usr/bin/env bash
# Install ironroot on a control node or witness from a source checkout:
#   deploy/install.sh            build (release) and install binaries, units, example config
# Run as root. Idempotent: an existing /etc/ironroot/ironroot.toml is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ironrootd -p ironroot
install -m 0755 target/release/ironrootd /usr/sbin/ironrootd
install -m 0755 target/release/ironroot /usr/bin/ironroot
install -d -m 0755 /etc/ironroot /usr/share/doc/ironroot
[ -e /etc/ironroot/ironroot.toml ] || install -m 0600 deploy/ironroot.toml /etc/ironroot/ironroot.toml
if [ ! -e /etc/ironroot/handle.key ]; then
    umask 077
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/ironroot/handle.key
    echo "created /etc/ironroot/handle.key: copy it to the other node (it must be identical)"
fi
install -m 0644 deploy/ironrootd.service deploy/ironroot-witness.service /etc/systemd/system/
install -m 0644 docs/operator-guide.md SECURITY.md /usr/share/doc/ironroot/
/usr/bin/ironroot completions bash > /usr/share/bash-completion/completions/ironroot 2>/dev/null || true
systemctl daemon-reload 2>/dev/null || true
echo "installed; edit /etc/ironroot/ironroot.toml, then: systemctl enable --now ironrootd (or ironroot-witness)"
