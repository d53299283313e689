//! Redaction of secrets from the raw outputs before anything is packed or parsed.
//!
//! Why byte-level patterns rather than parsing: the inputs are JSON, YAML, logs and captured
//! stderr, and a secret must go whatever the format (a kubeconfig pasted into a log line is still
//! a kubeconfig). Every rule replaces the secret *value* with `[REDACTED:<kind>]` and keeps the
//! key, so a reader still sees what was there. A second pass removes any redacted value that also
//! appears elsewhere, without its key, in any file.
//!
//! Invariant: a [`Redaction`] records the kind, the file and a count, never the value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

use crate::model::Redaction;
use crate::{Error, Limits};

/// The words that make a name (env variable, JSON key) secret-like.
const SECRET_WORD: &str =
    r"(?i:password|passwd|secret|token|api_?key|api-key|access_?key|private_?key|credentials?)";

/// The kubeconfig (and similar) keys whose values are credentials.
const CRED_KEYS: &str = r"(?i:client-key-data|client-certificate-data|token|id-token|refresh-token|access-token|password|client-secret|auth|identitytoken|registrytoken)";

/// Values shorter than this are not chased through other files (too likely to match by chance).
const MIN_REPEAT_LEN: usize = 8;

/// Whether a removed value is distinctive enough to chase through every file: long enough and
/// mixing letters with digits or symbols (`default` or `changeme` would match ordinary text).
fn worth_chasing(v: &[u8]) -> bool {
    let letters = v.iter().any(u8::is_ascii_alphabetic);
    let others = v.iter().any(|b| !b.is_ascii_alphabetic());
    v.len() >= MIN_REPEAT_LEN && letters && others
}

struct Rule {
    re: Regex,
    /// The capture group holding the secret value.
    group: usize,
    kind: fn(&Captures<'_>) -> &'static str,
}

fn rule(pattern: &str, group: usize, kind: fn(&Captures<'_>) -> &'static str) -> Rule {
    // The patterns are constants of this file; a test compiles every one of them.
    #[allow(clippy::unwrap_used)]
    let re = Regex::new(pattern).unwrap();
    Rule { re, group, kind }
}

fn cred_kind(caps: &Captures<'_>) -> &'static str {
    let key = caps
        .name("key")
        .map(|m| m.as_bytes().to_ascii_lowercase())
        .unwrap_or_default();
    match key.as_slice() {
        b"client-key-data" => "kubeconfig-client-key-data",
        b"client-certificate-data" => "kubeconfig-client-certificate-data",
        b"password" | b"client-secret" | b"auth" => "password",
        _ => "token",
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // PEM private keys (RSA, EC, OpenSSH, encrypted PKCS#8, PGP), also inside JSON strings
        // (`\n` escapes), also cut off before END.
        rule(
            r"(?s)(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z))",
            1,
            |_| "pem-private-key",
        ),
        rule(
            r"(?s)(-----BEGIN (?:TRUSTED )?CERTIFICATE-----.*?(?:-----END (?:TRUSTED )?CERTIFICATE-----|\z))",
            1,
            |_| "pem-certificate",
        ),
        // Secrets recognisable by their own shape, wherever they stand (before the key-based
        // rules, so they are named by what they are). GitHub: classic `ghp_`, OAuth `gho_`,
        // user-to-server `ghu_`, server-to-server `ghs_`, refresh `ghr_`; fine-grained
        // `github_pat_`.
        rule(
            r"(?:^|[^A-Za-z0-9_])((?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{30,255}))",
            1,
            |_| "github-token",
        ),
        // AWS access key IDs: long-term `AKIA`, temporary (STS) `ASIA`.
        rule(
            r"(?:^|[^A-Za-z0-9])((?:AKIA|ASIA)[A-Z0-9]{16})(?:[^A-Za-z0-9]|$)",
            1,
            |_| "aws-access-key-id",
        ),
        // AWS secret access keys by name: `aws_secret_access_key = …` (~/.aws/credentials),
        // `AWS_SECRET_ACCESS_KEY=…`, `"SecretAccessKey": "…"`, `secretAccessKey: …`.
        rule(
            r#"(?i)(?:aws_?)?secret_?access_?key["']?[ \t]*[:=][ \t]*["']?([A-Za-z0-9/+=]{16,})"#,
            1,
            |_| "aws-secret-access-key",
        ),
        // ... and without a name, as 40 characters after an access key ID on the same line
        // (the credentials CSV: `AKIA…,wJalr…`).
        rule(
            r"(?:AKIA|ASIA|\[REDACTED:aws-access-key-id\])[A-Z0-9]{0,16}[^A-Za-z0-9/+=\n]{1,8}([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
            1,
            |_| "aws-secret-access-key",
        ),
        // Credentials in a URL: `postgres://user:PASSWORD@host`, `https://x:TOKEN@git.example`
        // `redis://:PASSWORD@cache` (the user name stays).
        rule(
            r#"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/?#@"'<>\[\]]*:([^\s/?#@"'<>]+)@"#,
            1,
            |_| "url-credentials",
        ),
        // kubeconfig-like YAML: `  client-key-data: LS0t...`, `token: abc`; also ini/TOML
        // `password = abc`.
        rule(
            &format!(
                r#"(?m)^([ \t-]*(?P<key>{CRED_KEYS})[ \t]*[:=][ \t]*)("[^"\n]*"|'[^'\n]*'|[^\s#]+)"#
            ),
            3,
            cred_kind,
        ),
        // The same keys in JSON: `"token": "abc"`.
        rule(
            &format!(r#""(?P<key>{CRED_KEYS})"(\s*:\s*)"((?:[^"\\]|\\.)*)""#),
            3,
            cred_kind,
        ),
        // JSON env entries, name before value: `{"name": "DB_PASSWORD", "value": "x"}`.
        rule(
            &format!(
                r#""name"\s*:\s*"[^"]*{SECRET_WORD}[^"]*"\s*,\s*"value"\s*:\s*"((?:[^"\\]|\\.)*)""#
            ),
            1,
            |_| "env-secret",
        ),
        // ... and value before name.
        rule(
            &format!(
                r#""value"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"name"\s*:\s*"[^"]*{SECRET_WORD}[^"]*""#
            ),
            1,
            |_| "env-secret",
        ),
        // YAML env entries: `- name: DB_PASSWORD` then `value: x`.
        rule(
            &format!(
                r#"(?m)^[ \t]*-?[ \t]*name:[ \t]*["']?[A-Za-z0-9_.-]*{SECRET_WORD}[A-Za-z0-9_.-]*["']?[ \t]*\r?\n[ \t]*value:[ \t]*("[^"\n]*"|'[^'\n]*'|[^\s#]+)"#
            ),
            1,
            |_| "env-secret",
        ),
        // env-like `KEY=VALUE` (shell, .env, `env` output, log lines).
        rule(
            &format!(
                r#"(?m)(?:^|[\s"'(,;?&])(?:export[ \t]+)?[A-Za-z0-9_]*{SECRET_WORD}[A-Za-z0-9_]*=("[^"\n]*"|'[^'\n]*'|[^\s"',;&]+)"#
            ),
            1,
            |_| "env-secret",
        ),
        // HTTP bearer tokens: `Authorization: Bearer eyJ...`.
        rule(
            r"(?i)\bbearer[ \t]+([A-Za-z0-9\-._~+/]{8,}=*)",
            1,
            |_| "bearer-token",
        ),
        rule(
            r"(?i)\bauthorization:[ \t]*basic[ \t]+([A-Za-z0-9+/]{4,}=*)",
            1,
            |_| "basic-auth",
        ),
    ]
});

fn marker(kind: &str) -> Vec<u8> {
    format!("[REDACTED:{kind}]").into_bytes()
}

fn is_marker(value: &[u8]) -> bool {
    let trimmed = value
        .strip_prefix(b"\"")
        .or_else(|| value.strip_prefix(b"'"))
        .unwrap_or(value);
    trimmed.starts_with(b"[REDACTED:")
        || trimmed.is_empty()
        || trimmed == b"\"\""
        || trimmed == b"''"
}

/// Strips the quotes of a YAML/env value, so the bare secret can be chased in other files.
fn bare(value: &[u8]) -> &[u8] {
    for q in [b'"', b'\''] {
        if value.len() >= 2 && value[0] == q && value[value.len() - 1] == q {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Applies one rule to `text`; returns the new text, the count and the values removed.
fn apply(rule: &Rule, text: &[u8]) -> (Vec<u8>, usize, Vec<Vec<u8>>) {
    let mut count = 0;
    let mut values = Vec::new();
    let mut out = Vec::with_capacity(text.len());
    let mut last = 0;
    for caps in rule.re.captures_iter(text) {
        let Some(m) = caps.get(rule.group) else {
            continue;
        };
        if is_marker(m.as_bytes()) {
            continue;
        }
        out.extend_from_slice(&text[last..m.start()]);
        out.extend_from_slice(&marker((rule.kind)(&caps)));
        last = m.end();
        count += 1;
        values.push(bare(m.as_bytes()).to_vec());
    }
    out.extend_from_slice(&text[last..]);
    (out, count, values)
}

/// The gzip magic number.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// How deep gzip inside gzip is unpacked (`x.gz.gz`).
const MAX_GZIP_DEPTH: usize = 4;

/// Compressed or archive formats whose content cannot be scanned byte by byte (and that
/// evidence-pack does not unpack): (magic, name).
const UNSCANNABLE: &[(&[u8], &str)] = &[
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (b"BZh", "bzip2"),
    (b"PK\x03\x04", "zip"),
    (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c], "7z"),
];

/// Inflates one gzip stream (every member), refusing past `max` bytes while inflating.
fn gunzip_capped(name: &str, bytes: &[u8], max: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::Input {
            what: format!("{name} starts like gzip but does not decompress ({e}), so it cannot be scanned for secrets"),
            fix: "repair it or leave it out of DIR".into(),
        })?;
    if out.len() as u64 > max {
        return Err(Error::Input {
            what: format!(
                "{name} decompresses to more than {}, the limit for one file",
                crate::size_text(max)
            ),
            fix: "leave it out of DIR, or raise the limit with --max-entry-mib (verify then needs the same option)".into(),
        });
    }
    Ok(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

/// Redacts the input files in place, gzip ones too: each gzip file (by its magic number, every
/// member, gzip inside gzip up to [`MAX_GZIP_DEPTH`] levels) is inflated within
/// `limits.max_entry_bytes`, scanned with the others, and — only when something was redacted —
/// compressed again (deterministically), so it keeps its name and format. Refuses formats it
/// cannot scan (xz, zstd, bzip2, zip, 7z) and gzip that does not inflate.
pub fn redact_inputs(
    files: &mut BTreeMap<String, Vec<u8>>,
    limits: &Limits,
) -> Result<Vec<Redaction>, Error> {
    // name → (original bytes, gzip levels)
    let mut gzipped: BTreeMap<String, (Vec<u8>, usize)> = BTreeMap::new();
    for (name, bytes) in files.iter_mut() {
        for (magic, format) in UNSCANNABLE {
            if bytes.starts_with(magic) {
                return Err(Error::Input {
                    what: format!(
                        "{name} is {format}-compressed; evidence-pack cannot scan it for secrets, so it is not packed"
                    ),
                    fix: "unpack it into DIR (gzip is scanned as it is), or leave it out".into(),
                });
            }
        }
        if !bytes.starts_with(&GZIP_MAGIC) {
            continue;
        }
        let mut plain = std::mem::take(bytes);
        let original = plain.clone();
        let mut levels = 0;
        while plain.starts_with(&GZIP_MAGIC) && levels < MAX_GZIP_DEPTH {
            plain = gunzip_capped(name, &plain, limits.max_entry_bytes)?;
            levels += 1;
        }
        if plain.starts_with(&GZIP_MAGIC) {
            return Err(Error::Input {
                what: format!(
                    "{name} is gzip inside gzip more than {MAX_GZIP_DEPTH} levels deep; not scanned, not packed"
                ),
                fix: "decompress it, or leave it out of DIR".into(),
            });
        }
        *bytes = plain;
        gzipped.insert(name.clone(), (original, levels));
    }
    let redactions = redact_all(files);
    for (name, (original, levels)) in gzipped {
        let Some(bytes) = files.get_mut(&name) else {
            continue;
        };
        if redactions.iter().any(|r| r.file == name) {
            let mut out = std::mem::take(bytes);
            for _ in 0..levels {
                out = gzip(&out);
            }
            *bytes = out;
        } else {
            // Nothing to redact: the input's own bytes, unchanged.
            *bytes = original;
        }
    }
    Ok(redactions)
}

/// Redacts every file of `files` (archive path → bytes) in place and returns what was redacted.
/// Compressed files are not looked into: use [`redact_inputs`].
pub fn redact_all(files: &mut BTreeMap<String, Vec<u8>>) -> Vec<Redaction> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut secrets: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (name, bytes) in files.iter_mut() {
        for rule in RULES.iter() {
            let (out, n, values) = apply(rule, bytes);
            if n > 0 {
                // Count per kind produced (one rule may produce several kinds).
                for kind in kinds_in(&out, bytes) {
                    *counts.entry((name.clone(), kind.0)).or_default() += kind.1;
                }
                *bytes = out;
                for v in values {
                    // A secret inside a removed block (a `token:` line inside a PEM block) is
                    // chased too, though its own rule never saw it.
                    secrets.extend(inner_values(&v).into_iter().filter(|v| worth_chasing(v)));
                    if worth_chasing(&v) {
                        secrets.insert(v);
                    }
                }
            }
        }
    }
    // Second pass: a redacted value that appears anywhere else, without its key.
    for (name, bytes) in files.iter_mut() {
        for secret in &secrets {
            let (out, n) = replace_literal(bytes, secret, &marker("repeated-secret"));
            if n > 0 {
                *bytes = out;
                *counts
                    .entry((name.clone(), "repeated-secret".to_owned()))
                    .or_default() += n;
            }
        }
    }
    counts
        .into_iter()
        .map(|((file, kind), count)| Redaction { file, kind, count })
        .collect()
}

/// The values every rule would remove from `text` (one level: what a removed block holds).
fn inner_values(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for rule in RULES.iter() {
        for caps in rule.re.captures_iter(text) {
            if let Some(m) = caps.get(rule.group) {
                let v = bare(m.as_bytes());
                if v != text && !is_marker(v) {
                    out.push(v.to_vec());
                }
            }
        }
    }
    out
}

/// The markers that `after` has more of than `before`, by kind.
fn kinds_in(after: &[u8], before: &[u8]) -> Vec<(String, usize)> {
    static MARK: LazyLock<Regex> = LazyLock::new(|| {
        #[allow(clippy::unwrap_used)]
        Regex::new(r"\[REDACTED:([a-z-]+)\]").unwrap()
    });
    let tally = |text: &[u8]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for c in MARK.captures_iter(text) {
            if let Some(k) = c.get(1) {
                *m.entry(String::from_utf8_lossy(k.as_bytes()).into_owned())
                    .or_default() += 1;
            }
        }
        m
    };
    let (a, b) = (tally(after), tally(before));
    a.into_iter()
        .filter_map(|(k, n)| {
            let before_n = b.get(&k).copied().unwrap_or(0);
            (n > before_n).then(|| (k, n - before_n))
        })
        .collect()
}

fn replace_literal(text: &[u8], needle: &[u8], with: &[u8]) -> (Vec<u8>, usize) {
    if needle.is_empty() || text.len() < needle.len() {
        return (text.to_vec(), 0);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    let mut n = 0;
    while i < text.len() {
        if text[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
            n += 1;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, text: &str) -> (String, Vec<Redaction>) {
        let mut files = BTreeMap::from([(name.to_owned(), text.as_bytes().to_vec())]);
        let r = redact_all(&mut files);
        (String::from_utf8_lossy(&files[name]).into_owned(), r)
    }

    #[test]
    fn every_rule_compiles() {
        assert_eq!(RULES.len(), 15);
    }

    #[test]
    fn kubeconfig_yaml_credentials_go_keys_stay() {
        let (out, r) = one(
            "kubeconfig",
            "users:\n- name: admin\n  user:\n    client-certificate-data: LS0tQ0VSVDEyMw==\n    client-key-data: LS0tS0VZNDU2\n    token: abcdef123456\n",
        );
        assert!(!out.contains("LS0tQ0VSVDEyMw=="), "{out}");
        assert!(!out.contains("LS0tS0VZNDU2"), "{out}");
        assert!(!out.contains("abcdef123456"), "{out}");
        assert!(out.contains("client-key-data: [REDACTED:kubeconfig-client-key-data]"));
        let kinds: Vec<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "kubeconfig-client-certificate-data",
                "kubeconfig-client-key-data",
                "token"
            ]
        );
    }

    #[test]
    fn json_env_entries_with_secret_names_only() {
        let (out, r) = one(
            "pod.json",
            r#"{"env":[{"name":"DB_PASSWORD","value":"hunter2hunter2"},{"name":"CUDA_DEVICE_MEMORY_LIMIT_0","value":"8000m"},{"value":"s3cr3tvalue","name":"HF_TOKEN"}]}"#,
        );
        assert!(
            !out.contains("hunter2hunter2") && !out.contains("s3cr3tvalue"),
            "{out}"
        );
        assert!(out.contains("8000m"), "non-secret env kept: {out}");
        assert_eq!(
            r,
            vec![Redaction {
                file: "pod.json".into(),
                kind: "env-secret".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn env_lines_bearer_and_repeats() {
        let (out, r) = one(
            "log",
            "export GITHUB_TOKEN=ghp_abcdefghijkl\nDB_PASSWORD='pa ss'\ncurl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y'\necho ghp_abcdefghijkl\nPATH=/usr/bin\n",
        );
        assert!(!out.contains("ghp_abcdefghijkl"), "{out}");
        assert!(!out.contains("pa ss"), "{out}");
        assert!(!out.contains("eyJhbGciOiJIUzI1NiJ9"), "{out}");
        assert!(out.contains("PATH=/usr/bin"));
        let kinds: BTreeSet<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["bearer-token", "env-secret", "repeated-secret"])
        );
    }

    #[test]
    fn pem_blocks_even_escaped_in_json() {
        let (out, r) = one(
            "x.json",
            r#"{"key":"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----","crt":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}"#,
        );
        assert!(!out.contains("MIIEow") && !out.contains("MIIB"), "{out}");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn registry_auth_and_url_tokens() {
        let (out, r) = one(
            "x",
            "{\"auths\":{\"r.example\":{\"auth\":\"dXNlcjpwYXNzd29yZA==\"}}}\nGET /api?access_token=abcdef123456&watch=1\n",
        );
        assert!(!out.contains("dXNlcjpwYXNzd29yZA=="), "{out}");
        assert!(
            !out.contains("abcdef123456") && out.contains("&watch=1"),
            "{out}"
        );
        assert_eq!(r.len(), 2);
    }

    proptest::proptest! {
        /// Whatever the secret looks like, in whichever supported form, it does not survive.
        #[test]
        fn planted_values_never_survive(
            secret in "[A-Za-z0-9][A-Za-z0-9+/._~-]{7,40}",
            form in 0usize..8,
        ) {
            let text = match form {
                0 => format!("users:\n- user:\n    client-key-data: {secret}\n"),
                1 => format!("{{\"token\": \"{secret}\"}}"),
                2 => format!("[{{\"name\": \"APP_SECRET\", \"value\": \"{secret}\"}}]"),
                3 => format!("env:\n- name: DB_PASSWORD\n  value: {secret}\n"),
                4 => format!("x DB_PASSWORD={secret} y"),
                5 => format!("Authorization: Bearer {secret}"),
                6 => format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
                _ => format!("    password: '{secret}'\n"),
            };
            let (out, r) = one("f", &text);
            proptest::prop_assert!(!out.contains(&secret), "form {}: {}", form, out);
            proptest::prop_assert!(!r.is_empty());
        }
    }

    #[test]
    fn plain_word_values_are_not_chased_through_other_files() {
        let mut files = BTreeMap::from([
            (
                "kubeconfig".to_owned(),
                b"password: default\ntoken: s3cr3t-t0ken\n".to_vec(),
            ),
            (
                "pod.json".to_owned(),
                b"{\"namespace\": \"default\", \"x\": \"s3cr3t-t0ken\"}".to_vec(),
            ),
        ]);
        let r = redact_all(&mut files);
        let pod = String::from_utf8_lossy(&files["pod.json"]).into_owned();
        assert!(pod.contains("\"default\""), "{pod}");
        assert!(!pod.contains("s3cr3t-t0ken"), "{pod}");
        assert!(
            r.iter()
                .any(|r| r.file == "pod.json" && r.kind == "repeated-secret")
        );
    }

    #[test]
    fn tokens_known_by_their_shape_go_wherever_they_stand() {
        let ghp = "ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tV9wX1yZ3a5C";
        let pat = "github_pat_11ABCDEFG0123456789abc_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456";
        let text = format!(
            "git clone https://{ghp}@github.com/o/r\nGH={pat} ok\nkeys AKIAIOSFODNN7EXAMPLE and ASIAY34FZKBOKMUTVV7A.\n"
        );
        let (out, r) = one("x.log", &text);
        for s in [ghp, pat, "AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"] {
            assert!(!out.contains(s), "{s} survived: {out}");
        }
        assert!(
            out.contains("[REDACTED:github-token]@github.com/o/r"),
            "{out}"
        );
        let kinds: BTreeSet<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        assert!(
            kinds.contains("github-token") && kinds.contains("aws-access-key-id"),
            "{kinds:?}"
        );
        // Too short to be a GitHub token, and no secret-like name: left alone.
        let (out, _) = one("x", "branch ghp_short is fine\n");
        assert!(out.contains("ghp_short"));
    }

    #[test]
    fn aws_secret_keys_by_name_and_beside_their_key_id() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for (form, text) in [
            (
                "ini",
                format!("[default]\naws_secret_access_key = {secret}\n"),
            ),
            ("env", format!("AWS_SECRET_ACCESS_KEY={secret}\n")),
            (
                "json",
                format!("{{\"SecretAccessKey\": \"{secret}\", \"x\": 1}}"),
            ),
            ("yaml", format!("secretAccessKey: {secret}\n")),
            (
                "csv",
                format!("User,Key,Secret\nlab,AKIAIOSFODNN7EXAMPLE,{secret}\n"),
            ),
        ] {
            let (out, r) = one("creds", &text);
            assert!(!out.contains(secret), "{form}: {out}");
            assert!(
                r.iter().any(|r| r.kind == "aws-secret-access-key"),
                "{form}: {r:?}"
            );
        }
    }

    #[test]
    fn url_credentials_lose_the_password_and_keep_the_rest() {
        let (out, r) = one(
            "app.log",
            "connecting to postgres://lab:S3cr3t-pw@db.internal:5432/gpu\nredis://:onlypass123@cache:6379 and https://user@example.com/x\n",
        );
        assert!(
            !out.contains("S3cr3t-pw") && !out.contains("onlypass123"),
            "{out}"
        );
        assert!(
            out.contains("postgres://lab:[REDACTED:url-credentials]@db.internal:5432/gpu"),
            "{out}"
        );
        assert!(
            out.contains("https://user@example.com/x"),
            "no password, nothing removed"
        );
        assert_eq!(r[0].kind, "url-credentials");
    }

    #[test]
    fn pgp_and_openssh_private_key_blocks_and_ini_passwords() {
        let (out, r) = one(
            "k",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGplantedPGP\n-----END PGP PRIVATE KEY BLOCK-----\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEplanted\n-----END OPENSSH PRIVATE KEY-----\n[db]\npassword = iniPassw0rd\n",
        );
        assert!(
            !out.contains("lQOYBGplantedPGP")
                && !out.contains("b3BlbnNzaC1rZXktdjEplanted")
                && !out.contains("iniPassw0rd"),
            "{out}"
        );
        let kinds: BTreeSet<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, BTreeSet::from(["password", "pem-private-key"]));
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        super::gzip(bytes)
    }

    #[test]
    fn gzip_inputs_are_scanned_and_recompressed_only_when_redacted() {
        let secret_log = gz(b"boot ok\nDB_PASSWORD=gzHidden-s3cret\n");
        let clean = gz(b"nothing to see\n");
        let double = gz(&gz(b"token: doubleGz-t0ken\n"));
        let mut files = BTreeMap::from([
            ("a.log.gz".to_owned(), secret_log),
            ("b.log.gz".to_owned(), clean.clone()),
            ("c.gz.gz".to_owned(), double),
        ]);
        let r = redact_inputs(&mut files, &Limits::DEFAULT).unwrap();
        let plain = |b: &[u8]| {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(b)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let a = String::from_utf8(plain(&files["a.log.gz"])).unwrap();
        assert_eq!(a, "boot ok\nDB_PASSWORD=[REDACTED:env-secret]\n");
        assert_eq!(
            files["b.log.gz"], clean,
            "unredacted gzip kept byte for byte"
        );
        let c = plain(&plain(&files["c.gz.gz"]));
        assert_eq!(c, b"token: [REDACTED:token]\n");
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[test]
    fn gzip_that_inflates_past_the_limit_or_does_not_inflate_and_xz_are_refused() {
        let limits = Limits {
            max_entry_bytes: 1024 * 1024,
            ..Limits::DEFAULT
        };
        let big = gz(&vec![b'a'; 2 * 1024 * 1024]);
        let mut files = BTreeMap::from([("big.gz".to_owned(), big)]);
        let e = redact_inputs(&mut files, &limits).unwrap_err().to_string();
        assert!(
            e.contains("big.gz decompresses to more than 1 MiB") && e.contains("fix:"),
            "{e}"
        );
        let mut broken = gz(b"some text that will be cut\n");
        broken.truncate(12);
        let mut files = BTreeMap::from([("cut.gz".to_owned(), broken)]);
        let e = redact_inputs(&mut files, &limits).unwrap_err().to_string();
        assert!(
            e.contains("cut.gz starts like gzip but does not decompress"),
            "{e}"
        );
        let mut files = BTreeMap::from([(
            "logs.xz".to_owned(),
            vec![0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2],
        )]);
        let e = redact_inputs(&mut files, &limits).unwrap_err().to_string();
        assert!(e.contains("logs.xz is xz-compressed"), "{e}");
    }

    #[test]
    fn a_secret_inside_a_removed_block_is_still_chased() {
        let mut files = BTreeMap::from([
            (
                "a.log".to_owned(),
                b"-----BEGIN PRIVATE KEY-----\ntoken: inner-t0ken-value\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
            ),
            ("b.log".to_owned(), b"retrying inner-t0ken-value\n".to_vec()),
        ]);
        let r = redact_all(&mut files);
        assert_eq!(files["b.log"], b"retrying [REDACTED:repeated-secret]\n");
        assert!(
            r.iter()
                .any(|r| r.file == "b.log" && r.kind == "repeated-secret")
        );
    }

    #[test]
    fn clean_text_is_untouched() {
        let text = "Device 0 OOM 8629780480 / 8388608000\nsecretName: hami-tls\n";
        let (out, r) = one("x", text);
        assert_eq!(out, text);
        assert!(r.is_empty());
    }
}
