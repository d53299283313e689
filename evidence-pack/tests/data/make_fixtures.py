#!/usr/bin/env python3
"""Assembles the fixture folders `cluster-run/` and `local-hami/` from copies (run once; outputs
committed). Nothing here is synthesized except `cluster-run/run.json`, which says what
`cluster-ctl run --out DIR` writes for a run in which every exercise passed:

- gpu-probe reports: the REAL reports captured under real HAMi-core on an H200
  (`lab-report/tests/data/h200`, see its README), copied byte for byte;
- Pods and Events: the constructed objects of `lab-report/tests/data/k8s` (see its README);
- `cluster/` and `manifests/`: kept as they are (constructed from shared/fixtures/hami/k8s).

evidence-pack re-judges every claim of run.json from these files, so a pass here rests on them.
"""
import json, os, shutil, sys

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "..", "..", "..", "lab-report", "tests", "data")
H200_UUID = "GPU-e0628ec7-253e-9593-877b-faac7911234e"


def copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(os.path.join(LAB, src), dst)


def main():
    local = os.path.join(HERE, "local-hami")
    shutil.rmtree(local, ignore_errors=True)
    copy("h200/h1-8000.json", os.path.join(local, "gpu-probe.json"))
    copy("h200/h1-8000.err", os.path.join(local, "gpu-probe.stderr"))

    c = os.path.join(HERE, "cluster-run")
    for sub in ("probe", "pods", "events"):
        shutil.rmtree(os.path.join(c, sub), ignore_errors=True)
    for pod in ("hami-share-a", "hami-share-b"):
        copy("h200/h1-8000.json", os.path.join(c, "probe", pod + ".json"))
        copy("h200/h1-8000.err", os.path.join(c, "probe", pod + ".stderr"))
        copy(f"k8s/pod-{pod}-running-h200.json", os.path.join(c, "pods", pod + ".json"))
    copy("k8s/pod-hami-oversubscribe-pending.json", os.path.join(c, "pods", "hami-oversubscribe.json"))
    copy("k8s/events-oversubscribe.json", os.path.join(c, "events", "hami-oversubscribe.json"))

    claims = {
        "E1": "Two share pods scheduled by hami-scheduler run on the same node and the same GPU UUID.",
        "E2": "Share pod A sees and can allocate only its slice of GPU memory: every source of its view shows at most the slice, and HAMi-core refused it at or below the slice.",
        "E3": "Share pod B sees and can allocate only its slice of GPU memory: every source of its view shows at most the slice, and HAMi-core refused it at or below the slice.",
        "E4": "A pod that fits an empty card but not beside the two slices stays Pending, refused by hami-scheduler for CardInsufficientMemory.",
        "E5": "The isolation comes from HAMi-core inside the containers: both co-resident pods are capped to their slice on one GPU.",
    }
    pods = ["pods/hami-share-a.json", "pods/hami-share-b.json"]
    probes = ["probe/hami-share-a.json", "probe/hami-share-b.json"]
    evidence = {
        "E1": pods,
        "E2": ["probe/hami-share-a.json", "probe/hami-share-a.stderr"],
        "E3": ["probe/hami-share-b.json", "probe/hami-share-b.stderr"],
        "E4": ["pods/hami-oversubscribe.json", "events/hami-oversubscribe.json", "manifests/hami-oversubscribe.yaml"],
        "E5": pods + probes,
    }
    reasons = {
        "E1": f"both pods scheduled by hami-scheduler on node gpu-vm-1 and GPU {H200_UUID}",
        "E2": "held 7482 MiB ≤ the 8000 MiB slice, then refused by HAMi-core",
        "E3": "held 7482 MiB ≤ the 8000 MiB slice, then refused by HAMi-core",
        "E4": "hami-oversubscribe is Pending; hami-scheduler FilteringFailed: 1 nodes CardInsufficientMemory(gpu-vm-1)",
        "E5": "both pods share one GPU, each held to its slice, HAMi-core preloaded and live in both",
    }
    run = {
        "schema": "hami-isolation-lab/cluster-run", "schema_version": 1,
        "started_at": "2026-11-25T10:10:00Z", "finished_at": "2026-11-25T10:16:40Z",
        "cluster": {"server_version": "v1.31.4+k3s1", "node": "gpu-vm-1",
                    "gpus": [{"uuid": H200_UUID, "type": "NVIDIA H200", "devmem_mib": 143771, "devcore": 100,
                              "mode": "hami-core", "health": True}],
                    "hami_chart_version": "2.10.0",
                    "hami_images": ["docker.io/projecthami/hami:v2.10.0"],
                    "scheduler_image": "registry.k8s.io/kube-scheduler:v1.31.4"},
        "slice_mib": 8000, "oversubscribe_mib": 75000,
        "exercises": [
            {"id": i, "claim": claims[i], "result": "pass", "reason": reasons[i],
             "numbers": {"slice_mib": 8000}, "evidence": evidence[i]}
            for i in ("E1", "E2", "E3", "E4", "E5")
        ],
    }
    with open(os.path.join(c, "run.json"), "w") as f:
        json.dump(run, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
