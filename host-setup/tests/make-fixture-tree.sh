#!/usr/bin/env bash
# Builds a fake host tree for `host-setup --root DIR` from tests/data/host, so the tool can be
# run (dry-run or for real) without touching this machine.
#
# usage: make-fixture-tree.sh DIR SCENARIO [FIXTURE]
#   fresh-vm                  Debian + NVIDIA driver (fake nvidia-smi), no toolkit, no k3s
#   mig                       like fresh-vm, GPU in MIG mode
#   toolkit                   fresh-vm + NVIDIA Container Toolkit runtime present
#   k3s-no-default            toolkit + k3s v1.33.5 with the docs' config.yaml; k3s rendered its
#                             containerd config (v3) WITHOUT default_runtime_name
#   k3s-done                  toolkit + k3s with config.yaml already merged and nvidia default
#   containerd FIXTURE        /etc/containerd/config.toml = FIXTURE (a file of tests/data/host);
#                             for nvidia-ctk `*-toplevel.toml` files the matching `*-dropin.toml` is
#                             put where its `imports` points (/etc/containerd/conf.d/99-nvidia.toml)
#
# The fake programs inside the tree (usr/bin/nvidia-smi, usr/local/bin/k3s, ...) are tiny shell
# scripts that print what the real ones print on such a host; host-setup runs probes from the tree.
set -euo pipefail
dir=${1:?usage: make-fixture-tree.sh DIR SCENARIO [FIXTURE]}
scenario=${2:?usage: make-fixture-tree.sh DIR SCENARIO [FIXTURE]}
here=$(cd "$(dirname "$0")" && pwd)
fixtures=${HOST_FIXTURES:-$here/data/host}
[ -d "$fixtures" ] || { echo "fixtures not found at $fixtures (set HOST_FIXTURES)" >&2; exit 2; }
mkdir -p "$dir"

fake() { # fake PATH-IN-TREE SCRIPT-BODY
  mkdir -p "$dir/$(dirname "$1")"
  printf '#!/bin/sh\n# fake program of a host-setup fixture tree\n%s\n' "$2" > "$dir/$1"
  chmod 755 "$dir/$1"
}

base() { # $1 = MIG mode
  mkdir -p "$dir/etc" "$dir/sys/fs/cgroup" "$dir/var/lib" "$dir/home/lab"
  printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' > "$dir/etc/os-release"
  printf 'root:x:0:0:root:/root:/bin/bash\nlab:x:1000:1000:lab:/home/lab:/bin/bash\n' > "$dir/etc/passwd"
  echo "cpuset cpu io memory hugetlb pids rdma misc" > "$dir/sys/fs/cgroup/cgroup.controllers"
  fake usr/bin/apt-get 'echo "fake apt-get: not a real host" >&2; exit 1'
  fake usr/bin/nvidia-smi "echo '0, NVIDIA H100 80GB HBM3, 81559, $1, 570.133.20'"
}

toolkit() {
  fake usr/bin/nvidia-container-runtime 'exit 0'
  mkdir -p "$dir/etc/apt/sources.list.d"
  echo "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://nvidia.github.io/libnvidia-container/stable/deb/\$(ARCH) /" \
    > "$dir/etc/apt/sources.list.d/nvidia-container-toolkit.list"
}

k3s() { # $1 = config.yaml source, $2 = generated containerd config source (path or -)
  fake usr/local/bin/k3s 'echo "k3s version v1.33.5+k3s1 (fixture)"; echo "go version go1.24.9"'
  mkdir -p "$dir/etc/rancher/k3s" "$dir/var/lib/rancher/k3s/agent/etc/containerd"
  cp "$1" "$dir/etc/rancher/k3s/config.yaml"
  chmod 600 "$dir/etc/rancher/k3s/config.yaml"
  printf 'apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n# fixture kubeconfig: no credentials\n' > "$dir/etc/rancher/k3s/k3s.yaml"
  chmod 600 "$dir/etc/rancher/k3s/k3s.yaml"
  cat "$2" > "$dir/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
}

case "$scenario" in
  fresh-vm) base Disabled ;;
  mig) base Enabled ;;
  toolkit) base Disabled; toolkit ;;
  k3s-no-default)
    base Disabled; toolkit
    # What k3s renders without --default-runtime: the v3 fixture minus the containerd table
    # (the v3 base emits it only when default-runtime is set; facts/host.md §2).
    sed "/^\[plugins.'io.containerd.cri.v1.runtime'.containerd\]$/,/^$/d" \
      "$fixtures/k3s-containerd-v3-nvidia.toml" > "$dir/.generated.toml"
    k3s "$fixtures/k3s-config.yaml" "$dir/.generated.toml"
    rm "$dir/.generated.toml" ;;
  k3s-done)
    base Disabled; toolkit
    k3s "$fixtures/k3s-config-gpu.yaml" "$fixtures/k3s-containerd-v3-nvidia.toml"
    sed -i 's/^write-kubeconfig-mode: "0644"$/write-kubeconfig-mode: "0600"/' "$dir/etc/rancher/k3s/config.yaml" ;;
  containerd)
    fixture=${3:?containerd needs a FIXTURE file name}
    mkdir -p "$dir/etc/containerd"
    cp "$fixtures/$fixture" "$dir/etc/containerd/config.toml"
    chmod 644 "$dir/etc/containerd/config.toml"
    case "$fixture" in
      *-toplevel.toml)
        dropin="$fixtures/${fixture%-toplevel.toml}-dropin.toml"
        if [ -f "$dropin" ] && grep -q 'conf.d' "$fixtures/$fixture"; then
          mkdir -p "$dir/etc/containerd/conf.d"
          cp "$dropin" "$dir/etc/containerd/conf.d/99-nvidia.toml"
        fi ;;
    esac ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
echo "$dir"
