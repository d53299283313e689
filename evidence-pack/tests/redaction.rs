//! Plants every kind of secret the packer knows into a copy of the cluster fixture and proves that
//! none of them survives anywhere in the archive (every decompressed byte is scanned), that the
//! summary lists each redaction by kind and file, and that the redacted JSON still parses.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{copy_tree, data, files, gunzip, pack};

/// (secret value, where it is planted) — every value is unique, so a hit names the leak.
const KEY_DATA: &str = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUZha2VLZXlEYXRh";
const CERT_DATA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJrVENCK3dJSkFGYWtlQ2VydA==";
const KUBE_TOKEN: &str = "kubetoken0123456789abcdefXYZ";
const KUBE_PASSWORD: &str = "kubePassw0rd-0987";
const JSON_KEY_DATA: &str = "SlNPTktFWURBVEFzZWNyZXQxMjM0NTY3ODkw";
const JSON_TOKEN: &str = "jsontoken-ABCDEFGHIJ-123";
const PEM_KEY_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDplantedKEY";
const PEM_CERT_BODY: &str = "MIIDdzCCAl+gAwIBAgIEplantedCERTbody0123";
const BEARER: &str = "eyJhbGciOiJSUzI1NiJ9.plantedbearer.sig123";
const BASIC: &str = "cGxhbnRlZDpiYXNpY3Bhc3M=";
const YAML_ENV_PASSWORD: &str = "yamlEnvPassw0rd!";
const JSON_ENV_TOKEN: &str = "hf_jsonEnvToken0987654321";
const PROBE_ENV_SECRET: &str = "probeEnvSecretValue42";
const SHELL_SECRET: &str = "awsSecretAccessKey/ABCDEF0123";
const SHELL_TOKEN: &str = "ghp_shellTokenValue0000111";
const LOG_PASSWORD: &str = "logPasswordValue77";

const ALL: &[&str] = &[
    KEY_DATA,
    CERT_DATA,
    KUBE_TOKEN,
    KUBE_PASSWORD,
    JSON_KEY_DATA,
    JSON_TOKEN,
    PEM_KEY_BODY,
    PEM_CERT_BODY,
    BEARER,
    BASIC,
    YAML_ENV_PASSWORD,
    JSON_ENV_TOKEN,
    PROBE_ENV_SECRET,
    SHELL_SECRET,
    SHELL_TOKEN,
    LOG_PASSWORD,
];

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn append(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    let mut old = std::fs::read_to_string(&path).unwrap();
    old.push_str(text);
    std::fs::write(path, old).unwrap();
}

fn plant(dir: &Path) {
    write(
        dir,
        "cluster/kubeconfig.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.0.0.12:6443\n  name: default\nusers:\n- name: default\n  user:\n    client-certificate-data: {CERT_DATA}\n    client-key-data: {KEY_DATA}\n    token: \"{KUBE_TOKEN}\"\n    password: {KUBE_PASSWORD}\n"
        ),
    );
    write(
        dir,
        "cluster/kubeconfig.json",
        &format!(
            "{{\"users\": [{{\"name\": \"default\", \"user\": {{\"client-key-data\": \"{JSON_KEY_DATA}\", \"token\": \"{JSON_TOKEN}\"}}}}]}}\n"
        ),
    );
    append(
        dir,
        "probe/hami-share-a.stderr",
        &format!(
            "-----BEGIN PRIVATE KEY-----\n{PEM_KEY_BODY}\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n{PEM_CERT_BODY}\n-----END CERTIFICATE-----\ncurl -H \"Authorization: Bearer {BEARER}\" https://10.0.0.12:6443/version\nAuthorization: Basic {BASIC}\nretrying with {KUBE_TOKEN}\n"
        ),
    );
    append(
        dir,
        "manifests/hami-share-a.yaml",
        &format!(
            "    env:\n    - name: DB_PASSWORD\n      value: \"{YAML_ENV_PASSWORD}\"\n    - name: CUDA_DEVICE_MEMORY_LIMIT\n      value: 8000m\n"
        ),
    );
    // A pod's env in the API's JSON, name before value.
    let pods = dir.join("cluster/hami-pods.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&pods).unwrap()).unwrap();
    v[0]["spec"]["containers"][0]["env"] = serde_json::json!([{"name": "HF_TOKEN", "value": JSON_ENV_TOKEN}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]);
    std::fs::write(&pods, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    // gpu-probe's captured env, value before name (order must not matter).
    let probe = dir.join("probe/hami-share-a.json");
    let text = std::fs::read_to_string(&probe).unwrap().replacen(
        "\"env\": [",
        &format!("\"env\": [\n        {{\"value\": \"{PROBE_ENV_SECRET}\", \"name\": \"MY_API_KEY\", \"interpretation\": null}},"),
        1,
    );
    std::fs::write(&probe, text).unwrap();
    write(
        dir,
        "host/env.txt",
        &format!(
            "PATH=/usr/bin\nAWS_SECRET_ACCESS_KEY={SHELL_SECRET}\nexport GITHUB_TOKEN={SHELL_TOKEN}\nlogin ok password={LOG_PASSWORD} user=lab\n"
        ),
    );
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_planted_secret_survives_anywhere_in_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), dir.path());
    plant(dir.path());
    // Sanity: every secret really is in the inputs.
    let mut inputs = Vec::new();
    for rel in [
        "cluster/kubeconfig.yaml",
        "cluster/kubeconfig.json",
        "probe/hami-share-a.stderr",
        "manifests/hami-share-a.yaml",
        "cluster/hami-pods.json",
        "probe/hami-share-a.json",
        "host/env.txt",
    ] {
        inputs.extend(std::fs::read(dir.path().join(rel)).unwrap());
    }
    for s in ALL {
        assert!(contains(&inputs, s), "planting failed for {s}");
    }

    let out = tempfile::tempdir().unwrap();
    let tgz = pack(dir.path(), out.path());
    let stream = gunzip(&tgz);
    for s in ALL {
        assert!(
            !contains(&stream, s),
            "secret {s} survived in the tar stream"
        );
    }
    let files = files(&tgz);
    for (name, bytes) in &files {
        for s in ALL {
            assert!(!contains(bytes, s), "secret {s} survived in {name}");
        }
    }

    // The summary lists each redaction by kind and file.
    let summary: evidence_pack::model::Summary =
        serde_json::from_slice(&files["summary.json"]).unwrap();
    let listed: BTreeSet<(String, String)> = summary
        .redactions
        .iter()
        .map(|r| (r.file.clone(), r.kind.clone()))
        .collect();
    for (file, kind) in [
        ("cluster/kubeconfig.yaml", "kubeconfig-client-key-data"),
        (
            "cluster/kubeconfig.yaml",
            "kubeconfig-client-certificate-data",
        ),
        ("cluster/kubeconfig.yaml", "token"),
        ("cluster/kubeconfig.yaml", "password"),
        ("cluster/kubeconfig.json", "kubeconfig-client-key-data"),
        ("cluster/kubeconfig.json", "token"),
        ("probe/hami-share-a.stderr", "pem-private-key"),
        ("probe/hami-share-a.stderr", "pem-certificate"),
        ("probe/hami-share-a.stderr", "bearer-token"),
        ("probe/hami-share-a.stderr", "basic-auth"),
        ("probe/hami-share-a.stderr", "repeated-secret"),
        ("manifests/hami-share-a.yaml", "env-secret"),
        ("cluster/hami-pods.json", "env-secret"),
        ("probe/hami-share-a.json", "env-secret"),
        ("host/env.txt", "env-secret"),
    ] {
        assert!(
            listed.contains(&(file.to_owned(), kind.to_owned())),
            "summary does not list {kind} in {file}: {listed:?}"
        );
    }
    // Keys stay, values go; harmless env stays.
    let yaml = String::from_utf8_lossy(&files["raw/manifests/hami-share-a.yaml"]);
    assert!(
        yaml.contains("name: DB_PASSWORD") && yaml.contains("value: 8000m"),
        "{yaml}"
    );
    let env = String::from_utf8_lossy(&files["raw/host/env.txt"]);
    assert!(
        env.contains("PATH=/usr/bin") && env.contains("GITHUB_TOKEN=[REDACTED:env-secret]"),
        "{env}"
    );
    // The redacted probe report still parses: both cap searches are charted.
    assert_eq!(summary.cap_searches.len(), 2, "{:?}", summary.warnings);
    let report = String::from_utf8_lossy(&files["report.md"]);
    assert!(
        report.contains("| `raw/cluster/kubeconfig.yaml` | kubeconfig-client-key-data | 1 |"),
        "{report}"
    );
}

#[test]
fn pack_and_verify_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&data("cluster-run"), dir.path());
    plant(dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut printed = String::new();
    for args in [
        vec!["pack", dir.path().to_str().unwrap(), "--dry-run"],
        vec![
            "pack",
            dir.path().to_str().unwrap(),
            "--dry-run",
            "--output",
            "json",
        ],
        vec![
            "pack",
            dir.path().to_str().unwrap(),
            "-o",
            out.path().to_str().unwrap(),
        ],
    ] {
        let (code, stdout, stderr) = common::cli(&args);
        assert_eq!(code, 0, "{stderr}");
        printed.push_str(&stdout);
        printed.push_str(&stderr);
    }
    let tgz = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (_, stdout, stderr) = common::cli(&["verify", tgz.to_str().unwrap(), "--output", "json"]);
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    assert!(
        printed.contains("redacted 1 × kubeconfig-client-key-data in raw/cluster/kubeconfig.yaml"),
        "{printed}"
    );
    for s in ALL {
        assert!(!printed.contains(s), "secret {s} was printed");
    }
}

/// One secret of a kind, as a line (or part of a line) to plant, and the values that must not
/// survive.
struct Plant {
    kind: &'static str,
    text: String,
    secrets: Vec<String>,
}

/// Every kind of the README's redaction table, built from random values.
fn plants(v: &[String]) -> Vec<Plant> {
    let upper = |s: &str| {
        s.to_ascii_uppercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "Q")
    };
    let b64_40 = format!("{}/{}+{}", &v[0][..13], &v[1][..13], &v[2][..12]);
    let akia = format!("AKIA{}", &upper(&v[3])[..16]);
    let asia = format!("ASIA{}", &upper(&v[4])[..16]);
    let csv_secret = format!("{}+{}/{}", &v[5][..13], &v[6][..13], &v[7][..12]);
    let ghp = format!("ghp_{}{}", v[8], &v[9][..12]);
    let pat = format!("github_pat_{}_{}{}", &v[10][..22], v[11], &v[12][..11]);
    let repeated = format!("rep{}", v[13]);
    let p = |kind, text: String, secrets: Vec<&String>| Plant {
        kind,
        text,
        secrets: secrets.into_iter().cloned().collect(),
    };
    vec![
        p(
            "pem-private-key",
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n{}\n-----END OPENSSH PRIVATE KEY-----",
                v[14], v[15]
            ),
            vec![&v[14], &v[15]],
        ),
        p(
            "pem-certificate",
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----",
                v[16]
            ),
            vec![&v[16]],
        ),
        p(
            "kubeconfig-client-key-data",
            format!("    client-key-data: {}", v[17]),
            vec![&v[17]],
        ),
        p(
            "kubeconfig-client-certificate-data",
            format!("    client-certificate-data: {}", v[18]),
            vec![&v[18]],
        ),
        p("token", format!("  token: {}", v[19]), vec![&v[19]]),
        p("password", format!("password = {}", v[20]), vec![&v[20]]),
        p(
            "env-secret",
            format!("export HF_TOKEN={} && run", v[21]),
            vec![&v[21]],
        ),
        p(
            "bearer-token",
            format!("curl -H 'Authorization: Bearer {}' https://api", v[22]),
            vec![&v[22]],
        ),
        p(
            "basic-auth",
            format!("Authorization: Basic {}=", v[23]),
            vec![&v[23]],
        ),
        p(
            "github-token",
            format!("cloning with {ghp} now"),
            vec![&ghp],
        ),
        p("github-token", format!("pat={pat};"), vec![&pat]),
        p(
            "aws-access-key-id",
            format!("key id {asia} in use"),
            vec![&asia],
        ),
        p(
            "aws-secret-access-key",
            format!("aws_secret_access_key = {b64_40}"),
            vec![&b64_40],
        ),
        p(
            "aws-secret-access-key",
            format!("{akia},{csv_secret}"),
            vec![&akia, &csv_secret],
        ),
        p(
            "url-credentials",
            format!("dsn postgres://lab:{}@db.internal:5432/gpu", v[24]),
            vec![&v[24]],
        ),
        p("token", format!("    token: {repeated}"), vec![&repeated]),
        p(
            "repeated-secret",
            format!("retry {repeated} later"),
            vec![&repeated],
        ),
    ]
}

/// Files a plant may land in: ones no claim reads as evidence, and new ones.
const TARGETS: &[&str] = &[
    "cluster/daemonsets.json",
    "manifests/hami-share-b.yaml",
    "probe/hami-share-b.stderr",
    "host/env.txt",
    "logs/install.log",
    "kubeconfig.yaml",
    "notes/aws.ini",
];

fn gz_bytes(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

/// Every byte a reader of the bundle can reach: the tar stream, and each gzip file inside it
/// decompressed.
fn reachable_bytes(tgz: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut all = gunzip(tgz);
    for (name, bytes) in files(tgz) {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut plain)
                .unwrap_or_else(|e| panic!("{name} in the bundle does not decompress: {e}"));
            all.extend(plain);
        }
    }
    all
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]

    /// Every kind planted at random lines of random files (some of them gzip-compressed
    /// afterwards): no 8-byte run of any planted value survives anywhere in the bundle.
    #[test]
    fn every_kind_planted_anywhere_is_gone_from_every_decompressed_byte(
        values in proptest::collection::vec("[A-Za-z0-9]{24}", 25),
        places in proptest::collection::vec(
            (proptest::sample::select(TARGETS), proptest::prelude::any::<proptest::sample::Index>()),
            17,
        ),
        gzipped in proptest::collection::vec(proptest::prelude::any::<bool>(), TARGETS.len()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&data("cluster-run"), dir.path());
        let plants = plants(&values);
        // PEM blocks are planted last, and never inside another, so no plant lands inside one
        // (and is named by the block's kind instead of its own).
        let mut order: Vec<(&Plant, &(&str, proptest::sample::Index))> = plants.iter().zip(&places).collect();
        order.sort_by_key(|(p, _)| p.kind.starts_with("pem-"));
        for (plant, (target, at)) in order {
            let path = dir.path().join(target);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines: Vec<&str> = old.lines().collect();
            let mut i = at.index(lines.len() + 1);
            // Never inside a PEM block planted before: move past its END line.
            let open = lines[..i].iter().rposition(|l| l.starts_with("-----BEGIN"));
            let close = lines[..i].iter().rposition(|l| l.starts_with("-----END"));
            if open.is_some() && (close.is_none() || close < open) {
                i += lines[i..].iter().position(|l| l.starts_with("-----END")).map_or(0, |p| p + 1);
            }
            lines.insert(i, &plant.text);
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        }
        for (target, gz) in TARGETS.iter().zip(&gzipped) {
            let path = dir.path().join(target);
            if *gz && path.exists() {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                std::fs::write(dir.path().join(format!("{target}.gz")), gz_bytes(&bytes)).unwrap();
            }
        }
        let out = tempfile::tempdir().unwrap();
        let tgz = pack(dir.path(), out.path());
        let reachable: std::collections::HashSet<&[u8]> = {
            let bytes = reachable_bytes(&tgz);
            let leaked: Vec<u8> = bytes;
            // Leaked on purpose for the test's lifetime: the set borrows it.
            let leaked: &'static [u8] = Box::leak(leaked.into_boxed_slice());
            leaked.windows(8).collect()
        };
        for plant in &plants {
            for secret in &plant.secrets {
                for window in secret.as_bytes().windows(8) {
                    proptest::prop_assert!(
                        !reachable.contains(window),
                        "{} value {} survived (its bytes {:?})",
                        plant.kind,
                        secret,
                        String::from_utf8_lossy(window)
                    );
                }
            }
        }
        let summary: evidence_pack::model::Summary =
            serde_json::from_slice(&files(&tgz)["summary.json"]).unwrap();
        let kinds: BTreeSet<&str> = summary.redactions.iter().map(|r| r.kind.as_str()).collect();
        for plant in &plants {
            proptest::prop_assert!(kinds.contains(plant.kind), "{} not listed: {:?}", plant.kind, kinds);
        }
    }
}
