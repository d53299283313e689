#!/usr/bin/env python3
"""Writes the synthesized fixture inputs of evidence-pack's tests (run once; outputs committed).

The gpu-probe reports follow gpu-probe/src/report.rs field for field. Their numbers come from
shared/facts (H100 NVML total 81559 MiB, an 8000 MiB slice, a halving search from 1 GiB to 2 MiB
that took 22 cuMemAlloc_v2 calls and reached 7482 MiB under HAMi-core). They are synthesized, not
captured; the real H100 reports live in gpu-probe/tests/data on main.
"""
import calendar, json, os, shutil, sys

HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.join(HERE, "..", "..", "..", "cluster-ctl", "tests", "data", "k8s")
MIB = 1024 * 1024
CARD_MIB = 81559
SLICE_MIB = 8000
UUID = "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2"
SCOPE = ("HAMi-core enforces the slice in software, by intercepting CUDA and NVML calls inside the process; "
         "it is not a security boundary like MIG. This report covers the cuMemAlloc_v2 path of this process "
         "(and its child) only; other allocation paths, other processes and compute limits are not measured here unless listed.")


def t(s):
    return calendar.timegm(__import__("time").strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def search(avail_mib, ceiling_mib, pid):
    steps, held, step, oom = [], 0, 1024, []
    first = None
    while step >= 2:
        if held + step > ceiling_mib:
            step //= 2
            continue
        ok = held + step <= avail_mib
        if ok:
            held += step
        else:
            first = first or {"code": 2, "name": "CUDA_ERROR_OUT_OF_MEMORY"}
            used = (held + step + (SLICE_MIB - avail_mib)) * MIB
            oom.append({"pid": pid, "device": 0, "requested_total_bytes": used, "limit_bytes": SLICE_MIB * MIB,
                        "raw": f"[HAMI-core ERROR (pid:{pid} thread={pid} allocator.c:54)]: Device 0 OOM {used} / {SLICE_MIB * MIB}"})
        steps.append({"request_bytes": step * MIB, "ok": ok, "code": 0 if ok else 2, "held_after_bytes": held * MIB})
        if not ok:
            step //= 2
    return steps, held, first, oom


def probe_report(hostname, pid, started, enforced=True):
    ctx = 517
    avail = SLICE_MIB - ctx if enforced else CARD_MIB - ctx
    ceiling = SLICE_MIB if enforced else CARD_MIB - 1024
    steps, held, first, oom = search(avail, ceiling, pid)
    slice_b = SLICE_MIB * MIB
    total = slice_b if enforced else CARD_MIB * MIB
    view_dev = {
        "index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": UUID,
        "nvml": {"total": total, "free": total - ctx * MIB, "used": ctx * MIB},
        "cuda_total_mem": slice_b if enforced else CARD_MIB * MIB,
        "cuda_mem_info": {"total": total, "free": total - ctx * MIB, "used": ctx * MIB},
        "nvidia_smi_total_mib": SLICE_MIB if enforced else CARD_MIB,
        "expected_bytes": slice_b,
        "outcome": "shows-slice" if enforced else "shows-full-card",
        "reasons": ["nvml: total 8000 MiB = the slice", "cuda: cuDeviceTotalMem_v2 8000 MiB = the slice",
                    "nvidia-smi: 8000 MiB = the slice"] if enforced else
                   ["nvml: total 81559 MiB > slice 8000 MiB", "cuda: total 81559 MiB > slice 8000 MiB"],
    }
    cap_dev = {
        "index": 0, "expected_bytes": slice_b, "ceiling_bytes": ceiling * MIB,
        "ceiling_source": "expected slice" if enforced else "device total minus 1 GiB",
        "resolution_bytes": 2 * MIB, "held_bytes": held * MIB,
        "start_mem_info": {"total": total, "free": total - ctx * MIB, "used": ctx * MIB},
        "context_overhead_bytes": ctx * MIB, "steps": steps, "alloc_calls": len(steps),
        "stopped_because": "resolution-reached", "first_refusal": first, "hami_oom_lines": oom if enforced else [],
        "other_stderr": [], "all_freed": True, "search_seconds": 0.31,
        "outcome": "enforced" if enforced else "not-enforced",
        "reasons": [f"held {held} MiB <= slice 8000 MiB; refused with CUDA_ERROR_OUT_OF_MEMORY" if enforced
                    else f"held {held} MiB > slice 8000 MiB"],
    }
    env = [{"name": "CUDA_DEVICE_MEMORY_LIMIT_0", "value": "8000m", "interpretation": "8000 MiB"},
           {"name": "CUDA_DEVICE_MEMORY_SHARED_CACHE", "value": "/usr/local/vgpu/" + UUID + ".cache", "interpretation": None}] if enforced else []
    mech = {
        "env": env,
        "ld_so_preload": {"path": "/etc/ld.so.preload", "exists": enforced,
                          "entries": ["/usr/local/vgpu/libvgpu.so"] if enforced else [], "error": None},
        "libraries": [{"path": "/usr/local/vgpu/libvgpu.so", "named_in": "/etc/ld.so.preload", "exists": True,
                       "mapped_after_cuda_init": True,
                       "symbols": [{"name": "cuMemAlloc_v2", "exported": True, "resolved_in": "/usr/local/vgpu/libvgpu.so"},
                                   {"name": "nvmlDeviceGetMemoryInfo", "exported": True, "resolved_in": "/usr/local/vgpu/libvgpu.so"}],
                       "error": None}] if enforced else [],
        "shared_region": {"path": "/usr/local/vgpu/" + UUID + ".cache" if enforced else "/tmp/cudevshr.cache",
                          "path_source": "CUDA_DEVICE_MEMORY_SHARED_CACHE" if enforced else "default",
                          "exists": enforced, "mapped_after_cuda_init": enforced or None,
                          "region": {"initialized": True, "major_version": 1, "minor_version": 2, "owner_pid": pid,
                                     "device_num": 1, "uuids": [UUID], "limits": [slice_b], "sm_limits": [0],
                                     "proc_num": 1, "procs": [{"slot": 0, "pid": pid, "hostpid": 200000 + pid, "status": 1,
                                                               "used": [{"context": ctx * MIB, "module": 0, "data": 0, "total": ctx * MIB}]}],
                                     "charged_bytes": [ctx * MIB], "torn_slots": 0} if enforced else None,
                          "error": None},
        "outcome": "hami-core-active" if enforced else "absent",
        "reasons": ["/etc/ld.so.preload names /usr/local/vgpu/libvgpu.so, mapped after cuInit, exports the hooks",
                    "CUDA_DEVICE_MEMORY_LIMIT_0=8000m"] if enforced else ["no /etc/ld.so.preload and no LD_PRELOAD"],
    }
    def chk(i, claim, ok, reason):
        return {"id": i, "claim": claim, "status": "passed" if ok else "failed", "reason": reason, "environment": False}
    checks = [
        chk("view.device0", "Device 0 reports the 8000 MiB slice as its total memory (NVML, CUDA, nvidia-smi).", enforced, view_dev["reasons"][0]),
        chk("cap.device0", "Device 0 refuses allocations beyond the 8000 MiB slice.", enforced, cap_dev["reasons"][0]),
        chk("mechanism", "HAMi-core is preloaded, mapped and configured with a limit in this process.", enforced, mech["reasons"][0]),
    ]
    ok = enforced
    return {
        "schema": "hami-isolation-lab/gpu-probe-report", "schema_version": 1, "tool_version": "0.1.0",
        "command": "all", "started_at_unix": started,
        "host": {"hostname": hostname, "pid": pid, "kernel": "6.8.0-49-generic", "in_container": True},
        "driver": {"driver_version": "580.159.04", "cuda_driver_version": 13000, "nvml_error": None, "cuda_error": None},
        "expected": [{"device": 0, "bytes": slice_b, "source": "CUDA_DEVICE_MEMORY_LIMIT_0", "raw": "8000m"}],
        "view": {"devices": [view_dev], "nvidia_smi": None},
        "cap": {"devices": [cap_dev]},
        "mechanism": mech,
        "checks": checks,
        "verdict": {"outcome": "verified" if ok else "not-verified", "exit_code": 0 if ok else 1,
                    "summary": "VERIFIED: all 3 checks passed" if ok else "NOT VERIFIED: 3 failed (view.device0, cap.device0, mechanism)"},
        "scope_note": SCOPE,
    }


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main():
    # Local mode: one report of a process under HAMi-core.
    local = os.path.join(HERE, "local-hami")
    shutil.rmtree(local, ignore_errors=True)
    dump(os.path.join(local, "gpu-probe.json"), probe_report("probe-pod", 41, t("2026-11-25T10:12:07Z")))

    # Cluster mode: what `cluster-ctl run --out DIR` writes.
    c = os.path.join(HERE, "cluster-run")
    shutil.rmtree(c, ignore_errors=True)
    a = probe_report("hami-share-a", 41, t("2026-11-25T10:14:02Z"))
    b = probe_report("hami-share-b", 43, t("2026-11-25T10:14:09Z"))
    dump(os.path.join(c, "probe", "hami-share-a.json"), a)
    dump(os.path.join(c, "probe", "hami-share-b.json"), b)
    for name, rep in (("hami-share-a", a), ("hami-share-b", b)):
        with open(os.path.join(c, "probe", name + ".stderr"), "w") as f:
            for line in rep["cap"]["devices"][0]["hami_oom_lines"]:
                f.write(line["raw"] + "\n")
            f.write(f"[HAMI-core Msg({rep['host']['pid']}:{rep['host']['pid']}:multiprocess_memory_limit.c:497)]: Cleanup on exit for PID {rep['host']['pid']}\n")
    copies = {
        "version.json": "version-k3s.json",
        "events.json": "events-share-a.json",
        "daemonsets.json": "daemonsets-hami-only.json",
    }
    for dst, src in copies.items():
        os.makedirs(os.path.join(c, "cluster"), exist_ok=True)
        shutil.copy(os.path.join(K8S, src), os.path.join(c, "cluster", dst))
    for p in ("cluster/version.json", "cluster/events.json", "cluster/daemonsets.json"):
        os.chmod(os.path.join(c, p), 0o644)
    node = json.load(open(os.path.join(K8S, "node-hami-v2.10-h100.json")))
    # cluster-ctl writes plain arrays of objects (Vec<Node>, Vec<Pod>) and {"releases": [...]}.
    dump(os.path.join(c, "cluster", "nodes.json"), [node])
    pods = [json.load(open(os.path.join(K8S, f))) for f in
            ("pod-hami-share-a-running.json", "pod-hami-share-b-running.json", "pod-hami-oversubscribe-pending.json")]
    dump(os.path.join(c, "cluster", "hami-pods.json"), pods)
    dump(os.path.join(c, "cluster", "helm-status.json"),
         {"releases": json.load(open(os.path.join(K8S, "helm-list-deployed.json")))})
    os.makedirs(os.path.join(c, "manifests"), exist_ok=True)
    for name in ("hami-share-a", "hami-share-b"):
        with open(os.path.join(c, "manifests", name + ".yaml"), "w") as f:
            f.write(f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: localhost/gpu-probe:0.1.0
    command: ["/gpu-probe", "all", "--output", "json"]
    resources:
      limits:
        nvidia.com/gpu: 1
        nvidia.com/gpumem: {SLICE_MIB}
""")
    with open(os.path.join(c, "manifests", "hami-oversubscribe.yaml"), "w") as f:
        f.write("""apiVersion: v1
kind: Pod
metadata:
  name: hami-oversubscribe
  namespace: default
spec:
  containers:
  - name: probe
    image: localhost/gpu-probe:0.1.0
    resources:
      limits:
        nvidia.com/gpu: 1
        nvidia.com/gpumem: 75000
""")
    held_a = a["cap"]["devices"][0]["held_bytes"] // MIB
    held_b = b["cap"]["devices"][0]["held_bytes"] // MIB
    run = {
        "schema": "hami-isolation-lab/cluster-run", "schema_version": 1,
        "started_at": "2026-11-25T10:10:00Z", "finished_at": "2026-11-25T10:16:40Z",
        "cluster": {"server_version": "v1.31.4+k3s1", "node": "gpu-vm-1",
                    "gpus": [{"uuid": UUID, "type": "NVIDIA H100 80GB HBM3", "devmem_mib": CARD_MIB, "devcore": 100,
                              "mode": "hami-core", "health": True}],
                    "hami_chart_version": "2.10.0",
                    "hami_images": ["docker.io/projecthami/hami:v2.10.0"],
                    "scheduler_image": "registry.k8s.io/kube-scheduler:v1.31.4"},
        "slice_mib": SLICE_MIB, "oversubscribe_mib": 75000,
        "exercises": [
            {"id": "E1", "claim": "A pod asking nvidia.com/gpumem 8000 sees an 8000 MiB GPU.", "result": "pass",
             "reason": "NVML, CUDA and nvidia-smi all report 8000 MiB in hami-share-a",
             "numbers": {"slice_mib": SLICE_MIB, "nvml_total_mib": SLICE_MIB, "card_mib": CARD_MIB},
             "evidence": ["probe/hami-share-a.json", "manifests/hami-share-a.yaml"]},
            {"id": "E2", "claim": "The pod cannot allocate more than its 8000 MiB slice.", "result": "pass",
             "reason": f"held at most {held_a} MiB; the next request was refused with CUDA_ERROR_OUT_OF_MEMORY",
             "numbers": {"slice_mib": SLICE_MIB, "held_mib": held_a, "alloc_calls": len(a['cap']['devices'][0]['steps'])},
             "evidence": ["probe/hami-share-a.json", "probe/hami-share-a.stderr"]},
            {"id": "E3", "claim": "Two 8000 MiB pods share one H100, each held to its own slice.", "result": "pass",
             "reason": "both pods ran on GPU-4f7efa07 at the same time; each held at most its slice",
             "numbers": {"pods": 2, "held_a_mib": held_a, "held_b_mib": held_b},
             "evidence": ["probe/hami-share-a.json", "probe/hami-share-b.json", "cluster/hami-pods.json", "cluster/events.json"]},
            {"id": "E4", "claim": "A 75000 MiB pod is not scheduled beside the two 8000 MiB pods.", "result": "pass",
             "reason": "hami-scheduler: FilteringFailed, CardInsufficientMemory; the pod stayed Pending",
             "numbers": {"requested_mib": 75000, "free_mib": CARD_MIB - 2 * SLICE_MIB},
             "evidence": ["cluster/hami-pods.json", "manifests/hami-oversubscribe.yaml"]},
            {"id": "E5", "claim": "The HAMi-core shared region charges each pod for its own use only.", "result": "not-run",
             "reason": "skipped with --skip E5", "numbers": {}, "evidence": []},
        ],
    }
    dump(os.path.join(c, "run.json"), run)


if __name__ == "__main__":
    sys.exit(main())
