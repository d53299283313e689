//! k3s side: merge `/etc/rancher/k3s/config.yaml` key by key, read the k3s version, check the
//! containerd config k3s generates, and check user templates for the redeclaration trap.
//!
//! Why key by key: the old lab scripts appended lines with `echo >>`, giving duplicate keys on
//! every re-run. Here the file is parsed (serde_yaml_ng, the maintained fork of the archived
//! serde_yaml; its `Mapping` keeps key order), the wanted keys are merged, and the text is patched
//! only where a key changes, so comments and unknown keys survive. The patched text is re-parsed
//! and must equal the merged mapping; if it does not (exotic YAML), the whole file is
//! re-serialised instead and the plan says that comments were dropped.

use serde_yaml_ng::{Mapping, Value};

use crate::containerd;

/// Host paths k3s uses (facts/host.md §1, §2, §7).
pub const CONFIG_YAML: &str = "/etc/rancher/k3s/config.yaml";
pub const CONFIG_YAML_D: &str = "/etc/rancher/k3s/config.yaml.d";
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
pub const GENERATED_CONTAINERD: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
pub const TEMPLATE_V3: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl";
pub const TEMPLATE_V2: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl";
pub const BINARY: &str = "/usr/local/bin/k3s";
pub const SERVICE_ENV: &str = "/etc/systemd/system/k3s.service.env";
/// k3s's default `--data-dir`; its bundled binaries (containerd among them) are unpacked under
/// `<data-dir>/data/current/bin`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";

/// The data dir a config.yaml sets (`data-dir:`), else the default.
pub fn data_dir(config_yaml: Option<&str>) -> String {
    config_yaml
        .and_then(|t| parse_mapping(t).ok())
        .and_then(|m| m.get("data-dir").and_then(Value::as_str).map(str::to_owned))
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned())
}

/// What host-setup wants in k3s's config.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `default-runtime` value (`Some("nvidia")`), or `None` to leave it.
    pub default_runtime: Option<String>,
    /// SANs that must be in `tls-san` (others already there are kept).
    pub tls_san: Vec<String>,
    /// Labels `key=value` that must be in `node-label`; another value for the same key is replaced.
    pub node_labels: Vec<String>,
}

/// The merged file and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    pub changes: Vec<String>,
    /// Set when the text could not be patched in place and was re-serialised (comments lost).
    pub reserialised: bool,
}

/// Why config.yaml could not be merged. Each case has its own fix ([`YamlError::fix`]).
#[derive(Debug, PartialEq, Eq)]
pub enum YamlError {
    /// Not YAML (the parser's message says where).
    Parse(String),
    /// The top level is not a mapping; `found` says what it is.
    NotMapping { found: &'static str },
    /// A list key (`tls-san`, `node-label`, `disable`, …) holds something else.
    BadList { key: String, found: &'static str },
}

impl YamlError {
    pub fn problem(&self) -> String {
        match self {
            Self::Parse(message) => format!("{CONFIG_YAML}: not valid YAML ({message})"),
            Self::NotMapping { found } => format!(
                "{CONFIG_YAML}: the top level is {found}, but k3s reads a mapping of its flags (`key: value` lines)"
            ),
            Self::BadList { key, found } => format!(
                "{CONFIG_YAML}: `{key}` is {found}, but k3s reads a string or a list of strings there"
            ),
        }
    }

    pub fn fix(&self) -> String {
        match self {
            Self::Parse(_) => format!(
                "correct the YAML at the line and column shown (or restore a backup of {CONFIG_YAML}), then run again"
            ),
            Self::NotMapping { .. } => format!(
                "write {CONFIG_YAML} as `flag: value` lines (e.g. `write-kubeconfig-mode: \"0600\"`), one flag per line, then run again"
            ),
            Self::BadList { key, .. } => format!(
                "write it as a list of strings:\n      {key}:\n        - \"value\"\n    then run again"
            ),
        }
    }
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.problem(), self.fix())
    }
}

impl std::error::Error for YamlError {}

/// What a YAML value is, for messages.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn parse_mapping(text: &str) -> Result<Mapping, YamlError> {
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml_ng::from_str::<Value>(text).map_err(|e| YamlError::Parse(e.to_string()))? {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        other => Err(YamlError::NotMapping {
            found: kind_of(&other),
        }),
    }
}

fn as_list(map: &Mapping, key: &str) -> Result<Vec<String>, YamlError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(YamlError::BadList {
                    key: key.to_owned(),
                    found: match other {
                        Value::Sequence(_) => "a list holding a list",
                        Value::Mapping(_) => "a list holding a mapping",
                        _ => "a list holding a non-string",
                    },
                }),
            })
            .collect(),
        Some(other) => Err(YamlError::BadList {
            key: key.to_owned(),
            found: kind_of(other),
        }),
    }
}

/// `write-kubeconfig-mode` as written (string or number), if set.
fn kubeconfig_mode(map: &Mapping) -> Option<String> {
    match map.get("write-kubeconfig-mode")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a mode string lets group or others read the kubeconfig.
fn mode_is_open(mode: &str) -> bool {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8).map_or(true, |m| m & 0o077 != 0)
}

/// Merges `wanted` into the existing config.yaml text (`None` = no file yet).
pub fn merge_config_yaml(existing: Option<&str>, wanted: &Wanted) -> Result<Merged, YamlError> {
    let old_text = existing.unwrap_or("");
    let old = parse_mapping(old_text)?;
    let mut new = old.clone();
    let mut changes = Vec::new();

    if let Some(rt) = &wanted.default_runtime
        && old.get("default-runtime").and_then(Value::as_str) != Some(rt.as_str())
    {
        new.insert("default-runtime".into(), Value::String(rt.clone()));
        changes.push(format!(
                "set `default-runtime: {rt}` so k3s writes default_runtime_name = \"{rt}\" into its containerd config (HAMi pods set no runtimeClassName)"
            ));
    }

    let sans = as_list(&old, "tls-san")?;
    // A `key+:` entry appends to the key in k3s (parser.go), so what it lists is already there.
    let sans_appended = as_list(&old, "tls-san+")?;
    let missing: Vec<&String> = wanted
        .tls_san
        .iter()
        .filter(|s| !sans.contains(s) && !sans_appended.contains(s))
        .collect();
    if !missing.is_empty() {
        let mut all = sans.clone();
        all.extend(missing.iter().map(|s| (*s).clone()));
        new.insert("tls-san".into(), strings(&all));
        changes.push(format!(
            "add {} to `tls-san` so the API server certificate is valid for that address",
            join(&missing)
        ));
    }

    let labels = as_list(&old, "node-label")?;
    // `node-label+` appends: keep what it adds, but not another value of a key we set.
    let appended = as_list(&old, "node-label+")?;
    let mut appended_kept = appended.clone();
    for want in &wanted.node_labels {
        let key = want.split('=').next().unwrap_or(want);
        appended_kept.retain(|l| l == want || l.split('=').next() != Some(key));
    }
    if appended_kept != appended {
        if appended_kept.is_empty() {
            new.remove("node-label+");
        } else {
            new.insert("node-label+".into(), strings(&appended_kept));
        }
        changes.push(format!(
            "remove other values of {} from `node-label+` (k3s appends it to node-label)",
            join(&wanted.node_labels.iter().collect::<Vec<_>>())
        ));
    }
    let mut merged = labels.clone();
    for want in &wanted.node_labels {
        let key = want.split('=').next().unwrap_or(want);
        // Keep the first `want` where it is; drop duplicates and other values of the same key.
        let mut seen = false;
        merged.retain(|l| {
            if l == want {
                let keep = !seen;
                seen = true;
                keep
            } else {
                l.split('=').next() != Some(key)
            }
        });
        if !seen && !appended_kept.contains(want) {
            merged.push(want.clone());
        }
    }
    if merged != labels {
        new.insert("node-label".into(), strings(&merged));
        changes.push(format!(
            "set node label(s) {} (HAMi schedules onto gpu=on nodes; k3s applies labels at registration)",
            join(&wanted.node_labels.iter().collect::<Vec<_>>())
        ));
    }

    if let Some(mode) = kubeconfig_mode(&old)
        && mode_is_open(&mode)
    {
        new.insert("write-kubeconfig-mode".into(), Value::String("0600".into()));
        changes.push(format!(
                "set `write-kubeconfig-mode: \"0600\"` (was {mode:?}: that makes the cluster-admin credential readable by every local user; use --kubeconfig-user instead)"
            ));
    }

    let disabled = as_list(&old, "disable")?;
    if disabled.iter().any(|d| d == "runtimes") {
        let kept: Vec<String> = disabled.into_iter().filter(|d| d != "runtimes").collect();
        if kept.is_empty() {
            new.remove("disable");
        } else {
            new.insert("disable".into(), strings(&kept));
        }
        changes.push(
            "remove `runtimes` from `disable` (it deletes the nvidia RuntimeClass k3s deploys)"
                .to_owned(),
        );
    }

    if changes.is_empty() {
        return Ok(Merged {
            text: old_text.to_owned(),
            changes,
            reserialised: false,
        });
    }
    let patched = patch_text(old_text, &old, &new);
    if parse_mapping(&patched).ok().as_ref() == Some(&new) {
        return Ok(Merged {
            text: patched,
            changes,
            reserialised: false,
        });
    }
    let text = serde_yaml_ng::to_string(&Value::Mapping(new))
        .map_err(|e| YamlError::Parse(e.to_string()))?;
    Ok(Merged {
        text,
        changes,
        reserialised: true,
    })
}

fn strings(items: &[String]) -> Value {
    Value::Sequence(items.iter().cloned().map(Value::String).collect())
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One top-level `key: ...` block of the file: its line range.
#[derive(Debug)]
struct Block {
    key: String,
    start: usize,
    end: usize,
}

fn top_level_blocks(lines: &[&str]) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let starts_key = !line.is_empty()
            && !line.starts_with([' ', '\t', '#', '-'])
            && !line.starts_with("---")
            && line.contains(':');
        // `- item` at column 0 continues a block sequence (serde's style), it does not end it.
        let col0_other = !line.is_empty() && !line.starts_with([' ', '\t', '-']);
        if (starts_key || col0_other)
            && let Some(last) = blocks.last_mut()
            && last.end == usize::MAX
        {
            last.end = i;
        }
        if starts_key {
            let raw = line.split(':').next().unwrap_or("").trim();
            let key = raw.trim_matches(|c| c == '"' || c == '\'').to_owned();
            blocks.push(Block {
                key,
                start: i,
                end: usize::MAX,
            });
        }
    }
    if let Some(last) = blocks.last_mut()
        && last.end == usize::MAX
    {
        last.end = lines.len();
    }
    // A block does not own the blank lines that end it.
    for b in &mut blocks {
        while b.end > b.start + 1 && lines[b.end - 1].trim().is_empty() {
            b.end -= 1;
        }
    }
    blocks
}

/// Renders one top-level entry in the style of the k3s docs (`key:` then `  - "item"`).
fn render_entry(key: &str, value: &Value, item_indent: &str, quote: bool) -> Vec<String> {
    let scalar = |s: &str| -> String {
        if quote || needs_quotes(s) {
            serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
        } else {
            s.to_owned()
        }
    };
    match value {
        Value::Sequence(items) => {
            let mut out = vec![format!("{key}:")];
            for item in items {
                let text = match item {
                    Value::String(s) => scalar(s),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                out.push(format!("{item_indent}- {text}"));
            }
            out
        }
        Value::String(s) => vec![format!("{key}: {}", scalar(s))],
        other => vec![format!(
            "{key}: {}",
            serde_yaml_ng::to_string(other).unwrap_or_default().trim()
        )],
    }
}

/// Whether a plain scalar would be read back as something else than this string.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.starts_with(|c: char| c.is_ascii_digit() || "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        || s.contains(": ")
        || s.contains(" #")
        || matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~"
        )
}

/// Rewrites only the top-level blocks whose value changed; appends new keys at the end.
fn patch_text(text: &str, old: &Mapping, new: &Mapping) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let blocks = top_level_blocks(&lines);
    let mut out: Vec<String> = Vec::new();
    let mut cursor = 0;
    for block in &blocks {
        out.extend(lines[cursor..block.start].iter().map(|l| (*l).to_owned()));
        cursor = block.end;
        let key = Value::String(block.key.clone());
        match (old.get(&key), new.get(&key)) {
            (Some(o), Some(n)) if o == n => {
                out.extend(
                    lines[block.start..block.end]
                        .iter()
                        .map(|l| (*l).to_owned()),
                );
            }
            (_, None) => {}
            (_, Some(n)) => {
                let body = &lines[block.start..block.end];
                let item_line = body.iter().find(|l| l.trim_start().starts_with("- "));
                let indent = item_line.map_or("  ".to_owned(), |l| {
                    l[..l.len() - l.trim_start().len()].to_owned()
                });
                let quote = item_line
                    .map(|l| l.trim_start().trim_start_matches("- ").starts_with('"'))
                    .or_else(|| {
                        body.first()
                            .and_then(|l| l.split_once(':'))
                            .map(|(_, v)| v.trim().starts_with('"'))
                    })
                    .unwrap_or(true);
                out.extend(render_entry(&block.key, n, &indent, quote));
            }
        }
    }
    out.extend(lines[cursor..].iter().map(|l| (*l).to_owned()));
    for (k, v) in new {
        if old.contains_key(k) {
            continue;
        }
        if let Value::String(key) = k {
            let quote = !matches!(v, Value::String(_));
            out.extend(render_entry(key, v, "  ", quote));
        }
    }
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}

/// A problem in a k3s file host-setup does not edit, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub problem: String,
    pub fix: String,
}

fn conflict(problem: String, fix: String) -> Conflict {
    Conflict { problem, fix }
}

/// Problems found in `config.yaml.d/*.yaml` drop-ins (read after config.yaml; the last file wins).
pub fn dropin_conflicts(dropins: &[(String, String)], wanted: &Wanted) -> Vec<Conflict> {
    let mut out = Vec::new();
    for (path, text) in dropins {
        let map = match parse_mapping(text) {
            Ok(m) => m,
            Err(e) => {
                out.push(conflict(
                    format!(
                        "{path}: {} (k3s reads it after config.yaml and will refuse to start)",
                        e.problem().trim_start_matches(&format!("{CONFIG_YAML}: "))
                    ),
                    format!("correct it at the position shown, or remove {path}, then run again"),
                ));
                continue;
            }
        };
        if let (Some(want), Some(have)) = (
            &wanted.default_runtime,
            map.get("default-runtime").and_then(Value::as_str),
        ) && have != want
        {
            out.push(conflict(
                format!(
                    "{path}: sets `default-runtime: {have}`, which overrides config.yaml (drop-ins are read later)"
                ),
                format!("remove the `default-runtime: {have}` line from {path}, then run again"),
            ));
        }
        if let Some(mode) = kubeconfig_mode(&map)
            && mode_is_open(&mode)
        {
            out.push(conflict(
                format!(
                    "{path}: sets `write-kubeconfig-mode: {mode}`, making the admin kubeconfig readable by other users"
                ),
                format!(
                    "remove the `write-kubeconfig-mode` line from {path} (use --kubeconfig-user for a private copy), then run again"
                ),
            ));
        }
    }
    out
}

/// A k3s version `vMAJOR.MINOR.PATCH+k3sN` as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `k3s --version` output (`k3s version v1.33.5+k3s1 (abc)`) or a bare `v1.33.5+k3s1`.
pub fn parse_version(text: &str) -> Option<Version> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let core = word[1..].split(['+', '-']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some(Version {
        major: parts.next()??,
        minor: parts.next()??,
        patch: parts.next().flatten().unwrap_or(0),
    })
}

/// First k3s with the `default-runtime` option (PR #8936, v1.29.0+k3s1; facts §1). The Dec-2023
/// backports to 1.25–1.27 exist but their exact patch numbers are not in the facts, so older
/// minors are treated as lacking it (the plan then says to upgrade instead of guessing).
pub const DEFAULT_RUNTIME_SINCE: Version = Version {
    major: 1,
    minor: 29,
    patch: 0,
};

pub fn supports_default_runtime(v: Version) -> bool {
    v >= DEFAULT_RUNTIME_SINCE
}

/// How the default runtime can be set on this k3s.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum Method {
    /// `default-runtime: nvidia` in config.yaml (preferred).
    ConfigYaml,
    /// `config-v3.toml.tmpl` = base + the `[…cri.v1.runtime'.containerd]` table, which the v3 base
    /// emits only when `--default-runtime` is set, so adding it does not redeclare anything.
    TemplateV3,
    /// Cannot be done safely; the text says why ([`UPGRADE_FIX`] says what to do).
    Unsupported { reason: String },
}

/// The fix for [`Method::Unsupported`].
pub const UPGRADE_FIX: &str = "upgrade k3s (`host-setup install --k3s-version v1.33.5+k3s1`, or the k3s installer with INSTALL_K3S_VERSION), then run again";

/// Picks the method from the k3s version and the schema its generated config uses.
pub fn choose_method(version: Option<Version>, generated_version: Option<i64>) -> Method {
    match version {
        None => Method::ConfigYaml,
        Some(v) if supports_default_runtime(v) => Method::ConfigYaml,
        Some(v) => match generated_version {
            Some(3) | Some(4) => Method::TemplateV3,
            _ => Method::Unsupported {
                reason: format!(
                    "k3s {v} predates the default-runtime option ({DEFAULT_RUNTIME_SINCE}) and renders containerd config v2, \
                     whose base template always declares [plugins.\"io.containerd.grpc.v1.cri\".containerd]; a template that \
                     adds default_runtime_name there would redeclare that table and containerd would not start"
                ),
            },
        },
    }
}

/// The v3 template host-setup writes for [`Method::TemplateV3`].
pub fn template_v3() -> String {
    "{{ template \"base\" . }}\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"nvidia\"\n".to_owned()
}

/// Checks a user template for tables that the base already emits when `default-runtime` is set:
/// redeclaring them makes containerd refuse the config (facts §8.1). Lines with `{{` are skipped.
pub fn template_conflicts(path: &str, text: &str, default_runtime_set: bool) -> Vec<Conflict> {
    let body: String = text
        .lines()
        .filter(|l| !l.contains("{{"))
        .collect::<Vec<_>>()
        .join("\n");
    let doc = match body.parse::<toml_edit::DocumentMut>() {
        Ok(d) => d,
        Err(e) => {
            return vec![conflict(
                format!(
                    "{path}: its TOML part (without the {{{{ }}}} lines) is not valid TOML ({}), so containerd would not start",
                    e.to_string().trim().replace('\n', " ")
                ),
                format!("correct {path} at the position shown (or remove it), then run again"),
            )];
        }
    };
    let mut out = Vec::new();
    for plugin in ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"] {
        let Some(containerd) = doc
            .get("plugins")
            .and_then(|p| p.get(plugin))
            .and_then(|p| p.get("containerd"))
            .and_then(toml_edit::Item::as_table)
        else {
            continue;
        };
        if !containerd.is_implicit() && default_runtime_set {
            out.push(conflict(
                format!(
                    "{path} declares [plugins.\"{plugin}\".containerd], which k3s's base template also emits once default-runtime is set \
                     (containerd then fails: `table containerd already exists`)"
                ),
                format!(
                    "remove the [plugins.\"{plugin}\".containerd] table from {path} (k3s writes default_runtime_name itself), then run again"
                ),
            ));
        }
        if let Some(runc) = containerd
            .get("runtimes")
            .and_then(|r| r.get("runc"))
            .and_then(toml_edit::Item::as_table)
            && !runc.is_implicit()
        {
            out.push(conflict(
                format!(
                    "{path} declares runtimes.runc, which the base template already emits (`table runc already exists`)"
                ),
                format!("remove the runtimes.runc tables from {path}, then run again"),
            ));
        }
    }
    out
}

/// Result of checking the containerd config k3s generated.
pub fn check_generated(text: &str) -> Result<(), String> {
    let path = GENERATED_CONTAINERD;
    let version = containerd::file_version(text, path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{path} has no `version`"))?;
    let table = containerd::default_runtime_table(version);
    match containerd::default_runtime(text, path).map_err(|e| e.to_string())? {
        Some(rt) if rt == containerd::NVIDIA_RUNTIME => {
            if containerd::has_runtime(text, path, containerd::NVIDIA_RUNTIME).unwrap_or(false) {
                Ok(())
            } else {
                Err(format!(
                    "{path}: default_runtime_name is \"nvidia\" but no nvidia runtime is defined (was the toolkit installed before k3s started?)"
                ))
            }
        }
        Some(other) => Err(format!(
            "{path} (version {version}): [{table}] default_runtime_name = {other:?}, not \"nvidia\"; run `host-setup set-default-runtime`"
        )),
        None => Err(format!(
            "{path} (version {version}): [{table}] has no default_runtime_name (runc is the default); run `host-setup set-default-runtime`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test per message: what is wrong, and the fix for that case.

    #[test]
    fn broken_yaml_points_at_the_position_and_says_restore() {
        let err = merge_config_yaml(Some("tls-san: [a\n"), &wanted()).unwrap_err();
        assert!(matches!(err, YamlError::Parse(_)), "{err:?}");
        assert!(
            err.problem().contains("not valid YAML") && err.problem().contains("line"),
            "{err}"
        );
        assert!(err.fix().contains("line and column shown"), "{err}");
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_says_what_it_is() {
        let err = merge_config_yaml(Some("- a\n- b\n"), &wanted()).unwrap_err();
        assert_eq!(err, YamlError::NotMapping { found: "a list" });
        assert!(err.problem().contains("the top level is a list"), "{err}");
        assert!(err.fix().contains("`flag: value` lines"), "{err}");
    }

    #[test]
    fn a_list_key_with_the_wrong_type_shows_the_list_form() {
        let err = merge_config_yaml(Some("tls-san:\n  a: 1\n"), &wanted()).unwrap_err();
        assert_eq!(
            err,
            YamlError::BadList {
                key: "tls-san".into(),
                found: "a mapping"
            }
        );
        assert!(err.problem().contains("`tls-san` is a mapping"), "{err}");
        assert!(err.fix().contains("tls-san:\n        - \"value\""), "{err}");
        let err = merge_config_yaml(Some("node-label:\n  - [x]\n"), &wanted()).unwrap_err();
        assert!(err.problem().contains("a list holding a list"), "{err}");
    }

    #[test]
    fn data_dir_comes_from_config_yaml_or_the_default() {
        assert_eq!(data_dir(None), DEFAULT_DATA_DIR);
        assert_eq!(data_dir(Some("data-dir: /srv/k3s\n")), "/srv/k3s");
        assert_eq!(data_dir(Some("data-dir: relative\n")), DEFAULT_DATA_DIR);
    }

    fn wanted() -> Wanted {
        Wanted {
            default_runtime: Some("nvidia".into()),
            tls_san: vec!["10.0.0.10".into()],
            node_labels: vec!["gpu=on".into()],
        }
    }

    #[test]
    fn append_keys_count_as_present_and_lose_conflicting_values() {
        let w = Wanted {
            default_runtime: Some("nvidia".into()),
            tls_san: vec!["10.0.0.10".into()],
            node_labels: vec!["gpu=on".into()],
        };
        // Already effective through `+` keys: nothing to add.
        let done =
            "default-runtime: nvidia\ntls-san+:\n  - \"10.0.0.10\"\nnode-label+:\n  - \"gpu=on\"\n";
        let m = merge_config_yaml(Some(done), &w).unwrap();
        assert!(m.changes.is_empty(), "{:?}", m.changes);
        assert_eq!(m.text, done);
        // `node-label+: [gpu=off]` would append a second gpu label: it goes, gpu=on comes.
        let conflict = "default-runtime: nvidia\ntls-san: [\"10.0.0.10\"]\nnode-label+:\n  - \"gpu=off\"\n  - \"zone=a\"\n";
        let m = merge_config_yaml(Some(conflict), &w).unwrap();
        let map = parse_mapping(&m.text).unwrap();
        assert_eq!(as_list(&map, "node-label+").unwrap(), vec!["zone=a"]);
        assert_eq!(as_list(&map, "node-label").unwrap(), vec!["gpu=on"]);
        let again = merge_config_yaml(Some(&m.text), &w).unwrap();
        assert!(again.changes.is_empty(), "idempotent: {:?}", again.changes);
    }

    #[test]
    fn merges_docs_example_key_by_key_keeping_style() {
        let input = "# comment on top\nwrite-kubeconfig-mode: \"0644\"\ntls-san:\n  - \"foo.local\"\nnode-label:\n  - \"foo=bar\"\n  - \"something=amazing\"\ncluster-init: true\n";
        let m = merge_config_yaml(Some(input), &wanted()).unwrap();
        assert!(!m.reserialised);
        assert_eq!(
            m.text,
            "# comment on top\nwrite-kubeconfig-mode: \"0600\"\ntls-san:\n  - \"foo.local\"\n  - \"10.0.0.10\"\nnode-label:\n  - \"foo=bar\"\n  - \"something=amazing\"\n  - \"gpu=on\"\ncluster-init: true\ndefault-runtime: nvidia\n"
        );
        let again = merge_config_yaml(Some(&m.text), &wanted()).unwrap();
        assert_eq!(again.text, m.text);
        assert!(again.changes.is_empty());
    }

    #[test]
    fn replaces_other_gpu_label_and_undisables_runtimes() {
        let input = "node-label: gpu=off\ndisable:\n- traefik\n- runtimes\n";
        let input = format!("# keep\n{input}");
        let m = merge_config_yaml(Some(&input), &wanted()).unwrap();
        assert!(!m.reserialised, "{}", m.text);
        assert!(m.text.starts_with("# keep\n"));
        assert!(m.text.contains("disable:\n- traefik\n"), "{}", m.text);
        let map = parse_mapping(&m.text).unwrap();
        assert_eq!(as_list(&map, "node-label").unwrap(), vec!["gpu=on"]);
        assert_eq!(as_list(&map, "disable").unwrap(), vec!["traefik"]);
    }

    proptest::proptest! {
        /// Whatever labels and SANs a file already has, merging is idempotent, keeps every other
        /// key, and leaves exactly one `gpu=` label.
        #[test]
        fn merge_is_idempotent(
            labels in proptest::collection::vec("(gpu|zone|team)=(on|off|a1)", 0..4),
            sans in proptest::collection::vec("[a-z]{1,6}\\.local", 0..3),
            quoted in proptest::bool::ANY,
        ) {
            let q = |s: &String| if quoted { format!("\"{s}\"") } else { s.clone() };
            let mut text = String::from("# top comment\ncluster-init: true\n");
            if !labels.is_empty() {
                text.push_str("node-label:\n");
                for l in &labels { text.push_str(&format!("  - {}\n", q(l))); }
            }
            if !sans.is_empty() {
                text.push_str("tls-san:\n");
                for s in &sans { text.push_str(&format!("  - {}\n", q(s))); }
            }
            let once = merge_config_yaml(Some(&text), &wanted()).unwrap();
            let twice = merge_config_yaml(Some(&once.text), &wanted()).unwrap();
            proptest::prop_assert_eq!(&twice.text, &once.text);
            proptest::prop_assert!(twice.changes.is_empty());
            proptest::prop_assert!(!once.reserialised);
            proptest::prop_assert!(once.text.starts_with("# top comment\ncluster-init: true\n"));
            let map = parse_mapping(&once.text).unwrap();
            let gpu: Vec<String> = as_list(&map, "node-label").unwrap().into_iter().filter(|l| l.starts_with("gpu=")).collect();
            proptest::prop_assert_eq!(gpu, vec!["gpu=on".to_owned()]);
            proptest::prop_assert!(as_list(&map, "tls-san").unwrap().contains(&"10.0.0.10".to_owned()));
        }
    }

    #[test]
    fn new_file_has_only_wanted_keys() {
        let m = merge_config_yaml(None, &wanted()).unwrap();
        assert_eq!(
            m.text,
            "default-runtime: nvidia\ntls-san:\n  - \"10.0.0.10\"\nnode-label:\n  - \"gpu=on\"\n"
        );
    }

    #[test]
    fn versions_and_methods() {
        let v = parse_version("k3s version v1.33.5+k3s1 (abcdef12)\ngo version go1.24").unwrap();
        assert_eq!(v.to_string(), "v1.33.5");
        assert_eq!(choose_method(Some(v), Some(3)), Method::ConfigYaml);
        let old = parse_version("v1.28.4+k3s2").unwrap();
        assert!(matches!(
            choose_method(Some(old), Some(2)),
            Method::Unsupported { .. }
        ));
        assert_eq!(choose_method(Some(old), Some(3)), Method::TemplateV3);
    }

    #[test]
    fn template_redeclaring_containerd_is_flagged() {
        let t = "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"x\"\n";
        assert_eq!(template_conflicts("t", t, true).len(), 1);
        assert!(template_conflicts("t", t, false).is_empty());
        let docs = "{{ template \"base\" . }}\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'custom']\n  runtime_type = \"io.containerd.runc.v2\"\n";
        assert!(template_conflicts("t", docs, true).is_empty());
    }
}
