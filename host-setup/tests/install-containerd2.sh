#!/usr/bin/env bash
# Puts a containerd >= 2.0 (reads config version 3) at /opt/containerd2/usr/bin/containerd for the
# real-containerd tests, WITHOUT changing the system's packages: Debian bookworm ships containerd
# 1.6 (v2 only), Debian sid ships 2.x. The sid package is downloaded with a private apt state
# (its own sources list, lists and cache under a temp dir) and only unpacked (dpkg-deb -x), never
# installed. The mirror is taken from this machine's own apt sources.
# usage: install-containerd2.sh [DEST]   (default /opt/containerd2)
set -euo pipefail
dest=${1:-/opt/containerd2}
if [ -x "$dest/usr/bin/containerd" ]; then
  "$dest/usr/bin/containerd" --version
  exit 0
fi
uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $1}' | head -n1)
if [ -z "$uri" ]; then
  uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$uri" ] || { echo "no apt mirror found in /etc/apt/sources.list*" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb $uri sid main" > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${opts[@]}" update -qq
(cd "$work" && apt-get "${opts[@]}" download containerd)
mkdir -p "$dest"
dpkg-deb -x "$work"/containerd_*.deb "$dest"
"$dest/usr/bin/containerd" --version
