//! containerd `config.toml` editing with `toml_edit`: add the `nvidia` runtime (copying runc's
//! settings) and make it the CRI default, for config versions 2, 3 and 4, keeping comments, key
//! order, quoting and indentation of everything else.
//!
//! Why `toml_edit` and not `nvidia-ctk`: nvidia-ctk re-serialises the whole file (comments and order
//! lost, no backup) and mishandles files without `version` (facts/host.md §5). Here every decision
//! is a pure function over text, so the same code serves `--dry-run` diffs, golden tests and apply.
//!
//! Schema rule (facts §4.1): the table is chosen from the file's own `version` key, never from the
//! containerd binary: v2 → `plugins."io.containerd.grpc.v1.cri".containerd`, v3/v4 →
//! `plugins."io.containerd.cri.v1.runtime".containerd`.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Key, Table, Value};

/// The runtime name HAMi needs as default (k3s and nvidia-ctk use the same).
pub const NVIDIA_RUNTIME: &str = "nvidia";
/// Where `nvidia-container-toolkit-base` installs the runtime (facts §6).
pub const NVIDIA_BINARY: &str = "/usr/bin/nvidia-container-runtime";
/// The runtime type used when no runtime exists to copy from.
const RUNC_V2: &str = "io.containerd.runc.v2";

/// Why a containerd config could not be edited. Each case has its own fix ([`ConfigError::fix`]).
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not TOML at all (truncated, garbage, a typo).
    Parse { path: String, message: String },
    /// No `version` key but a `[plugins]` table: containerd reads it as version 1.
    Version1 { path: String },
    /// `version = 1` written out.
    ExplicitVersion1 { path: String },
    /// `version` is there but not an integer (e.g. the string `"2"`).
    VersionNotInteger {
        path: String,
        /// What it is, e.g. `a string`.
        found: String,
        /// The value as written, e.g. `"2"`.
        written: String,
    },
    /// An integer version containerd does not have (0, 5, 99, …).
    UnsupportedVersion {
        path: String,
        version: i64,
        /// The version whose tables the file holds, when that can be told.
        tables_of: Option<i64>,
    },
    /// A key containerd expects to be a table holds something else.
    Shape {
        path: String,
        /// Dotted key, e.g. `plugins."io.containerd.grpc.v1.cri".containerd`.
        key: String,
        /// What it is, e.g. `an integer` or `an inline table`.
        found: String,
    },
}

impl ConfigError {
    /// What is wrong, naming the file.
    pub fn problem(&self) -> String {
        match self {
            Self::Parse { path, message } => format!("{path}: not valid TOML ({message})"),
            Self::Version1 { path } => format!(
                "{path}: no `version` key but a [plugins] table, so containerd reads it as config version 1, which host-setup does not edit"
            ),
            Self::ExplicitVersion1 { path } => format!(
                "{path}: `version = 1` is containerd's legacy config schema ([plugins.cri]), which host-setup does not edit"
            ),
            Self::VersionNotInteger {
                path,
                found,
                written,
            } => format!(
                "{path}: `version = {written}` is {found}, but containerd needs an integer there"
            ),
            Self::UnsupportedVersion { path, version, .. } => format!(
                "{path}: `version = {version}` is not a containerd config version (there are 2 and 3, and 4 from containerd 2.3 on; 1 is the legacy schema)"
            ),
            Self::Shape { path, key, found } => {
                format!("{path}: `{key}` is {found}, but containerd expects a table there")
            }
        }
    }

    /// How to fix this case.
    pub fn fix(&self) -> String {
        match self {
            Self::Parse { path, .. } => format!(
                "correct the TOML at the line and column shown (or restore a backup of {path}), then run again"
            ),
            Self::Version1 { path } | Self::ExplicitVersion1 { path } => format!(
                "regenerate it with `containerd config default > {path}` (version 2 on containerd 1.x, 3 on 2.x), re-apply your own settings, then run again"
            ),
            Self::VersionNotInteger { written, .. } => {
                let bare = written.trim_matches(['"', '\'']);
                let number = bare.parse::<i64>().ok().or_else(|| {
                    bare.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && (1.0..=9.0).contains(f))
                        .map(|f| f as i64)
                });
                match number {
                    Some(n) => format!("write it as a bare integer: `version = {n}` (no quotes)"),
                    None => "write `version = 2` for `io.containerd.grpc.v1.cri` tables or `version = 3` for `io.containerd.cri.v1.runtime` tables (a bare integer)".to_owned(),
                }
            }
            Self::UnsupportedVersion { tables_of, .. } => match tables_of {
                Some(v) => format!(
                    "its tables are written for version {v} ({}): set `version = {v}`, then run again",
                    cri_runtime_plugin(*v).unwrap_or("?")
                ),
                None => "set `version` to what `containerd config default | grep ^version` prints for your containerd, then run again".to_owned(),
            },
            Self::Shape { key, found, .. } if found == "an inline table" => format!(
                "rewrite `{key} = {{ … }}` as a `[{key}]` section (host-setup edits sections, not inline tables), then run again"
            ),
            Self::Shape { key, .. } => format!(
                "remove that `{key} = …` value or replace it with a `[{key}]` section, then run again"
            ),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.problem(), self.fix())
    }
}

impl std::error::Error for ConfigError {}

/// What a TOML item is, for messages (`an integer`, `an inline table`, …).
fn kind_of(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

/// The version whose CRI tables a file holds: 3 when it has `io.containerd.cri.v1.runtime`,
/// 2 when it has `io.containerd.grpc.v1.cri` with a `containerd` table, else `None`.
fn version_of_tables(doc: &DocumentMut) -> Option<i64> {
    let plugins = doc.get("plugins")?.as_table_like()?;
    if plugins.contains_key("io.containerd.cri.v1.runtime") {
        Some(3)
    } else if plugins
        .get("io.containerd.grpc.v1.cri")
        .and_then(Item::as_table_like)
        .is_some_and(|t| t.contains_key("containerd"))
    {
        Some(2)
    } else {
        None
    }
}

/// The CRI plugin for a file's version, or the error for that version.
fn plugin_for(version: i64, doc: &DocumentMut, path: &str) -> Result<&'static str, ConfigError> {
    cri_runtime_plugin(version).ok_or_else(|| {
        if version == 1 {
            ConfigError::ExplicitVersion1 {
                path: path.to_owned(),
            }
        } else {
            ConfigError::UnsupportedVersion {
                path: path.to_owned(),
                version,
                tables_of: version_of_tables(doc),
            }
        }
    })
}

/// The CRI plugin that holds `containerd.runtimes` and `default_runtime_name` for a config version.
pub fn cri_runtime_plugin(version: i64) -> Option<&'static str> {
    match version {
        2 => Some("io.containerd.grpc.v1.cri"),
        3 | 4 => Some("io.containerd.cri.v1.runtime"),
        _ => None,
    }
}

/// Human name of the table holding `default_runtime_name` for a version, for messages.
pub fn default_runtime_table(version: i64) -> String {
    cri_runtime_plugin(version).map_or_else(
        || "plugins.cri.containerd".to_owned(),
        |p| format!("plugins.\"{p}\".containerd"),
    )
}

/// Reads the `version` key: `Ok(None)` when absent.
fn version_of(doc: &DocumentMut, path: &str) -> Result<Option<i64>, ConfigError> {
    match doc.get("version") {
        None => Ok(None),
        Some(item) => item
            .as_integer()
            .map(Some)
            .ok_or_else(|| ConfigError::VersionNotInteger {
                path: path.to_owned(),
                found: kind_of(item).to_owned(),
                written: item.to_string().trim().to_owned(),
            }),
    }
}

/// The effective config version of a parsed file (`None` = empty file, no version yet).
pub fn file_version(text: &str, path: &str) -> Result<Option<i64>, ConfigError> {
    let doc = parse(text, path)?;
    effective_version(&doc, path)
}

fn effective_version(doc: &DocumentMut, path: &str) -> Result<Option<i64>, ConfigError> {
    match version_of(doc, path)? {
        Some(v) => Ok(Some(v)),
        None if doc.contains_key("plugins") => Err(ConfigError::Version1 {
            path: path.to_owned(),
        }),
        None => Ok(None),
    }
}

fn parse(text: &str, path: &str) -> Result<DocumentMut, ConfigError> {
    text.parse::<DocumentMut>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// What kind of file is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `/etc/containerd/config.toml`: always made to carry the nvidia runtime and default.
    Root {
        /// Version written into an empty or version-less file (3 when containerd ≥ 2, else 2).
        version_if_missing: i64,
    },
    /// A file pulled in by `imports`: edited only when it declares the CRI plugin, because then
    /// it overrides the root file (containerd 1.7 replaces the whole plugin section, 2.x merges
    /// deeply and the later file wins; facts §4.4).
    DropIn,
}

/// The result of editing one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// One line per change, for the plan's `why`.
    pub changes: Vec<String>,
    /// The config version the file has after the edit (`None` for a drop-in left alone).
    pub version: Option<i64>,
}

impl Edited {
    pub fn changed(&self, before: &str) -> bool {
        self.text != before
    }
}

/// Makes `nvidia` the default CRI runtime in one containerd config file.
///
/// Idempotent: feeding the output back in returns it unchanged.
pub fn set_nvidia_default(
    text: &str,
    path: &str,
    role: Role,
    binary: &str,
) -> Result<Edited, ConfigError> {
    let mut doc = parse(text, path)?;
    let style = Style::detect(&doc);
    let mut changes = Vec::new();
    let version = match (effective_version(&doc, path)?, role) {
        (Some(v), _) => v,
        (None, Role::DropIn) => {
            return Ok(Edited {
                text: text.to_owned(),
                changes,
                version: None,
            });
        }
        (None, Role::Root { version_if_missing }) => {
            doc.insert("version", toml_edit::value(version_if_missing));
            changes.push(format!(
                "set `version = {version_if_missing}` (the file had none; without it containerd would read it as version 1)"
            ));
            version_if_missing
        }
    };
    let plugin = plugin_for(version, &doc, path)?;
    if role == Role::DropIn && !declares_plugin(&doc, plugin) {
        return Ok(Edited {
            text: text.to_owned(),
            changes,
            version: Some(version),
        });
    }

    enable_cri(&mut doc, version, &mut changes);

    let cri_key = format!("plugins.\"{plugin}\"");
    let containerd_key = format!("{cri_key}.containerd");
    let runtimes_key = format!("{containerd_key}.runtimes");
    let plugins = child_table(doc.as_table_mut(), "plugins", true, path, "plugins")?;
    let cri = child_table(plugins, plugin, true, path, &cri_key)?;
    let containerd = child_table(cri, "containerd", false, path, &containerd_key)?;

    let current_default = containerd
        .get("default_runtime_name")
        .and_then(Item::as_str)
        .map(str::to_owned);

    // Runtime whose settings the nvidia runtime copies, in nvidia-ctk's order (facts §5.2).
    let runtimes = child_table(containerd, "runtimes", true, path, &runtimes_key)?;
    if !runtimes.contains_key(NVIDIA_RUNTIME) {
        let source_name = [current_default.as_deref(), Some("runc"), Some("crun")]
            .into_iter()
            .flatten()
            .find(|n| !n.starts_with("nvidia") && runtimes.get(n).is_some_and(Item::is_table))
            .map(str::to_owned);
        let nvidia = match &source_name {
            Some(name) => copy_runtime(runtimes, name, binary, style.blank_before),
            None => fresh_runtime(binary),
        };
        runtimes.insert(NVIDIA_RUNTIME, Item::Table(nvidia));
        changes.push(match source_name {
            Some(name) => format!(
                "add runtime `{NVIDIA_RUNTIME}` ({binary}) with the settings of `{name}` (SystemdCgroup and the rest copied)"
            ),
            None => format!(
                "add runtime `{NVIDIA_RUNTIME}` ({binary}, {RUNC_V2}); no runc/crun table to copy settings from"
            ),
        });
    } else {
        let nvidia_key = format!("{runtimes_key}.{NVIDIA_RUNTIME}");
        let nvidia = child_table(runtimes, NVIDIA_RUNTIME, false, path, &nvidia_key)?;
        if nvidia.get("runtime_type").and_then(Item::as_str).is_none() {
            set_str(nvidia, "runtime_type", RUNC_V2);
            changes.push(format!(
                "set the missing `runtime_type = \"{RUNC_V2}\"` of runtime `nvidia` (containerd 2.3 rejects runtimes without it)"
            ));
        }
        let options = child_table(
            nvidia,
            "options",
            false,
            path,
            &format!("{nvidia_key}.options"),
        )?;
        let has_binary = options
            .get("BinaryName")
            .and_then(Item::as_str)
            .is_some_and(|b| !b.is_empty());
        if !has_binary {
            set_str(options, "BinaryName", binary);
            changes.push(format!(
                "set `BinaryName = \"{binary}\"` of runtime `nvidia`"
            ));
        }
    }

    let containerd = doc["plugins"][plugin]["containerd"]
        .as_table_mut()
        .ok_or_else(|| ConfigError::Shape {
            path: path.to_owned(),
            key: containerd_key.clone(),
            found: "not a table".to_owned(),
        })?;
    if current_default.as_deref() != Some(NVIDIA_RUNTIME) {
        set_str(containerd, "default_runtime_name", NVIDIA_RUNTIME);
        changes.push(format!(
            "set `default_runtime_name = \"nvidia\"` in [{}] (was {})",
            default_runtime_table(version),
            current_default.map_or_else(|| "unset, i.e. runc".to_owned(), |d| format!("\"{d}\""))
        ));
    }

    style.apply(doc.as_table_mut(), 0);
    Ok(Edited {
        text: doc.to_string(),
        changes,
        version: Some(version),
    })
}

/// The layout of a file, so new tables and keys look like their neighbours: nested files indent
/// headers two spaces per level (`containerd config default`), flat ones do not (k3s).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Style {
    /// Header indentation per nesting level beyond the first.
    unit: String,
    /// Key indentation relative to its header.
    extra: String,
    /// A blank line before each table header.
    blank_before: bool,
}

impl Style {
    fn detect(doc: &DocumentMut) -> Self {
        let mut headers: Vec<(usize, String, Option<String>)> = Vec::new();
        collect_headers(doc.as_table(), 0, &mut headers);
        let indent_of =
            |prefix: &str| -> String { prefix.rsplit('\n').next().unwrap_or("").to_owned() };
        let unit = headers
            .iter()
            .filter(|(depth, _, _)| *depth >= 2)
            .find_map(|(depth, prefix, _)| {
                let indent = indent_of(prefix);
                (!indent.is_empty()).then(|| " ".repeat(indent.len() / (depth - 1)))
            })
            .unwrap_or_default();
        let extra = headers
            .iter()
            .find_map(|(_, prefix, key)| {
                let key = key.as_ref()?;
                let header = indent_of(prefix);
                Some(" ".repeat(key.len().saturating_sub(header.len())))
            })
            .unwrap_or_else(|| "  ".to_owned());
        let later = headers.iter().skip(1);
        let blank = later.clone().filter(|(_, p, _)| p.contains('\n')).count();
        let blank_before = headers.len() < 2 || blank * 2 >= later.count();
        Self {
            unit,
            extra,
            blank_before,
        }
    }

    fn header_indent(&self, depth: usize) -> String {
        self.unit.repeat(depth.saturating_sub(1))
    }

    /// Gives new tables (no decor yet) and new keys the file's layout.
    fn apply(&self, table: &mut Table, depth: usize) {
        let header = self.header_indent(depth);
        let key_indent = format!("{header}{}", if depth == 0 { "" } else { &self.extra });
        let keys: Vec<String> = table
            .iter()
            .filter(|(_, item)| item.is_value())
            .map(|(k, _)| k.to_owned())
            .collect();
        for k in keys {
            if let Some(mut key) = table.key_mut(&k)
                && key.leaf_decor().prefix().is_none()
            {
                key.leaf_decor_mut().set_prefix(key_indent.clone());
            }
        }
        for (_, item) in table.iter_mut() {
            if let Some(child) = item.as_table_mut() {
                if child.decor().prefix().is_none() {
                    let blank = if self.blank_before { "\n" } else { "" };
                    child
                        .decor_mut()
                        .set_prefix(format!("{blank}{}", self.header_indent(depth + 1)));
                }
                self.apply(child, depth + 1);
            }
        }
    }
}

/// (depth, header prefix, indentation of its first key) of every explicit table.
fn collect_headers(table: &Table, depth: usize, out: &mut Vec<(usize, String, Option<String>)>) {
    if depth > 0 && !table.is_implicit() {
        let prefix = table
            .decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_owned();
        let key = table
            .iter()
            .filter(|(_, item)| item.is_value())
            .find_map(|(k, _)| table.key(k))
            .and_then(|k| k.leaf_decor().prefix().and_then(|p| p.as_str()))
            .map(str::to_owned);
        out.push((depth, prefix, key));
    }
    for (_, item) in table.iter() {
        if let Some(child) = item.as_table() {
            collect_headers(child, depth + 1, out);
        }
    }
}

/// Whether the document declares `plugins.<plugin>` (a drop-in that does overrides the root).
fn declares_plugin(doc: &DocumentMut, plugin: &str) -> bool {
    doc.get("plugins")
        .and_then(Item::as_table_like)
        .is_some_and(|p| p.contains_key(plugin))
}

/// Removes the CRI plugins from `disabled_plugins` (Docker's containerd.io ships `["cri"]`).
fn enable_cri(doc: &mut DocumentMut, version: i64, changes: &mut Vec<String>) {
    let cri_names: &[&str] = if version == 2 {
        &["cri", "io.containerd.grpc.v1.cri"]
    } else {
        &[
            "cri",
            "io.containerd.grpc.v1.cri",
            "io.containerd.cri.v1.runtime",
            "io.containerd.cri.v1.images",
        ]
    };
    let Some(array) = doc.get_mut("disabled_plugins").and_then(Item::as_array_mut) else {
        return;
    };
    let before = array.len();
    array.retain(|v| v.as_str().is_none_or(|s| !cri_names.contains(&s)));
    if array.len() != before {
        changes.push(
            "remove the CRI plugin from `disabled_plugins` (Kubernetes needs CRI)".to_owned(),
        );
    }
}

/// Gets (or creates) the sub-table `key`. New intermediate tables are implicit (no header of
/// their own) and take their indentation from a sibling table. An existing `key` that is not a
/// table is a [`ConfigError::Shape`] naming `dotted` and what it is instead.
fn child_table<'a>(
    parent: &'a mut Table,
    key: &str,
    implicit: bool,
    path: &str,
    dotted: &str,
) -> Result<&'a mut Table, ConfigError> {
    if !parent.contains_key(key) {
        let mut table = Table::new();
        table.set_implicit(implicit);
        parent.insert(key, Item::Table(table));
    }
    let found = parent.get(key).map_or("nothing", kind_of);
    parent
        .get_mut(key)
        .and_then(Item::as_table_mut)
        .ok_or_else(|| ConfigError::Shape {
            path: path.to_owned(),
            key: dotted.to_owned(),
            found: found.to_owned(),
        })
}

/// A copy of runtime `name` (settings, options, comments and indentation) with `BinaryName`
/// pointing at the NVIDIA runtime, placed right after the copied runtime.
fn copy_runtime(runtimes: &Table, name: &str, binary: &str, blank_before: bool) -> Table {
    let mut copy = runtimes
        .get(name)
        .and_then(Item::as_table)
        .cloned()
        .unwrap_or_default();
    // Same indentation as the original header, and the file's blank-line habit.
    let indent = copy
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .map(|p| p.rsplit('\n').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    copy.decor_mut()
        .set_prefix(format!("{}{indent}", if blank_before { "\n" } else { "" }));
    // Place the copy after the last table of the original: position = max position of its
    // subtree; children inherit it (no position) so they print right after the copy's header.
    if let Some(last) = max_position(&copy) {
        set_positions(&mut copy, last);
    }
    if copy.get("runtime_type").and_then(Item::as_str).is_none() {
        set_str(&mut copy, "runtime_type", RUNC_V2);
    }
    let has_options = copy.get("options").is_some_and(Item::is_table);
    if !has_options {
        copy.insert("options", Item::Table(Table::new()));
    }
    if let Some(options) = copy.get_mut("options").and_then(Item::as_table_mut) {
        set_str(options, "BinaryName", binary);
        // The v1-schema `Runtime` option names the OCI binary too; keep it consistent if copied.
        if options.contains_key("Runtime") {
            set_str(options, "Runtime", binary);
        }
    }
    copy
}

fn max_position(table: &Table) -> Option<usize> {
    let own = table.position();
    table
        .iter()
        .filter_map(|(_, item)| item.as_table())
        .map(max_position)
        .fold(own, |acc, p| match (acc, p) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        })
}

/// Gives a table and all its sub-tables the same position: the sort that prints tables is
/// stable, so they print in tree order right after the tables they were copied from.
fn set_positions(table: &mut Table, position: usize) {
    table.set_position(position);
    for (_, item) in table.iter_mut() {
        if let Some(child) = item.as_table_mut() {
            set_positions(child, position);
        }
    }
}

/// The runtime written when nothing can be copied (same as nvidia-ctk's fallback, minus the
/// empty legacy keys).
fn fresh_runtime(binary: &str) -> Table {
    let mut runtime = Table::new();
    set_str(&mut runtime, "runtime_type", RUNC_V2);
    let mut options = Table::new();
    set_str(&mut options, "BinaryName", binary);
    runtime.insert("options", Item::Table(options));
    runtime
}

/// Sets a string value, keeping the old value's comments and quote style; a new key gets the
/// indentation of its sibling keys.
fn set_str(table: &mut Table, key: &str, new: &str) {
    if let Some(old) = table.get(key).and_then(Item::as_value) {
        let decor = old.decor().clone();
        let literal = old
            .as_str()
            .is_some()
            .then(|| old.to_string())
            .is_some_and(|repr| repr.trim_start().starts_with('\''))
            && !new.contains('\'');
        let mut value = if literal {
            format!("'{new}'")
                .parse::<Value>()
                .unwrap_or_else(|_| Value::from(new))
        } else {
            Value::from(new)
        };
        *value.decor_mut() = decor;
        table.insert(key, Item::Value(value));
        return;
    }
    let k = Key::new(key);
    table.insert_formatted(&k, toml_edit::value(new));
}

/// Where `default_runtime_name` points in one parsed file, by its own version; `None` when unset.
pub fn default_runtime(text: &str, path: &str) -> Result<Option<String>, ConfigError> {
    let doc = parse(text, path)?;
    let Some(version) = effective_version(&doc, path)? else {
        return Ok(None);
    };
    let plugin = plugin_for(version, &doc, path)?;
    Ok(doc
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("default_runtime_name"))
        .and_then(Item::as_str)
        .map(str::to_owned))
}

/// Whether the file defines runtime `name` under its schema's CRI plugin.
pub fn has_runtime(text: &str, path: &str, name: &str) -> Result<bool, ConfigError> {
    let doc = parse(text, path)?;
    let Some(version) = effective_version(&doc, path)? else {
        return Ok(false);
    };
    let Some(plugin) = cri_runtime_plugin(version) else {
        return Ok(false);
    };
    Ok(doc
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(name))
        .is_some())
}

/// The `imports` patterns of a file (absolute, or relative to the file's directory).
pub fn imports(text: &str, path: &str) -> Result<Vec<String>, ConfigError> {
    let doc = parse(text, path)?;
    Ok(doc
        .get("imports")
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// An import pattern as a host path: relative patterns are resolved against the importing
/// file's directory (containerd does the same).
pub fn import_host_pattern(importer: &Path, pattern: &str) -> PathBuf {
    let p = Path::new(pattern);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        importer.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// Rewrites the `imports` of a config so they point into `mirror` (a temp dir mirroring the host
/// tree), for validating a rendered set of files with `containerd config dump`.
pub fn rewrite_imports_into(text: &str, path: &str, mirror: &Path) -> Result<String, ConfigError> {
    let mut doc = parse(text, path)?;
    if let Some(array) = doc.get_mut("imports").and_then(Item::as_array_mut) {
        for v in array.iter_mut() {
            if let Some(s) = v.as_str()
                && Path::new(s).is_absolute()
            {
                let moved = mirror.join(s.trim_start_matches('/'));
                *v = Value::from(moved.to_string_lossy().into_owned());
            }
        }
    }
    Ok(doc.to_string())
}

/// The effective default runtime of a root file plus its drop-ins (in import order), the way
/// containerd resolves it: a later file that sets it wins; on containerd 1.x a later file that
/// declares the CRI plugin at all replaces the whole section (so an unset value means `runc`).
pub fn effective_default_runtime(
    files: &[(String, String)],
    containerd_major: Option<u32>,
) -> Result<Option<String>, ConfigError> {
    let mut current = None;
    for (path, text) in files {
        let doc = parse(text, path)?;
        let Some(version) = effective_version(&doc, path)? else {
            continue;
        };
        let Some(plugin) = cri_runtime_plugin(version) else {
            continue;
        };
        if !declares_plugin(&doc, plugin) {
            continue;
        }
        let value = default_runtime(text, path)?;
        match (value, containerd_major.is_some_and(|m| m < 2)) {
            (Some(v), _) => current = Some(v),
            (None, true) => current = None,
            (None, false) => {}
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT2: Role = Role::Root {
        version_if_missing: 2,
    };

    #[test]
    fn v2_debian_file_gets_runtime_and_default_in_v2_table() {
        let input = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n";
        let out = set_nvidia_default(input, "c.toml", ROOT2, NVIDIA_BINARY).unwrap();
        assert_eq!(
            default_runtime(&out.text, "c.toml").unwrap().as_deref(),
            Some("nvidia")
        );
        assert!(has_runtime(&out.text, "c.toml", "nvidia").unwrap());
        assert!(out.text.starts_with(input.trim_end()), "{}", out.text);
        let again = set_nvidia_default(&out.text, "c.toml", ROOT2, NVIDIA_BINARY).unwrap();
        assert_eq!(again.text, out.text);
        assert!(again.changes.is_empty());
    }

    #[test]
    fn v3_copies_runc_options_and_keeps_literal_quotes_and_comments() {
        let input = "version = 3\n# keep me\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc' # trailing\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n";
        let out = set_nvidia_default(input, "c.toml", ROOT2, NVIDIA_BINARY).unwrap();
        let t = &out.text;
        assert!(t.contains("# keep me"));
        assert!(
            t.contains("default_runtime_name = 'nvidia' # trailing"),
            "{t}"
        );
        let runc_opts = t.find("runtimes.runc.options]").unwrap();
        let nvidia = t.find("runtimes.nvidia]").unwrap();
        let nvidia_opts = t.find("runtimes.nvidia.options]").unwrap();
        let images = t.find("cri.v1.images']").unwrap();
        assert!(
            runc_opts < nvidia && nvidia < nvidia_opts && nvidia_opts < images,
            "{t}"
        );
        let after = &t[nvidia_opts..images];
        assert!(after.contains("SystemdCgroup = true"), "{t}");
        assert!(
            after.contains("BinaryName = \"/usr/bin/nvidia-container-runtime\""),
            "{t}"
        );
    }

    #[test]
    fn empty_file_gets_version_and_tables() {
        let out = set_nvidia_default(
            "",
            "c.toml",
            Role::Root {
                version_if_missing: 3,
            },
            NVIDIA_BINARY,
        )
        .unwrap();
        assert_eq!(file_version(&out.text, "c").unwrap(), Some(3));
        assert_eq!(
            default_runtime(&out.text, "c").unwrap().as_deref(),
            Some("nvidia")
        );
    }

    #[test]
    fn docker_cri_disabled_file_is_upgraded_and_cri_enabled() {
        let input = "#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = [\"cri\"]\n";
        let out = set_nvidia_default(input, "c.toml", ROOT2, NVIDIA_BINARY).unwrap();
        assert!(out.text.contains("Copyright"));
        assert!(out.text.contains("disabled_plugins = []"), "{}", out.text);
        assert_eq!(file_version(&out.text, "c").unwrap(), Some(2));
    }

    #[test]
    fn version1_file_is_refused_with_a_fix() {
        let err =
            set_nvidia_default("[plugins.cri]\n", "c.toml", ROOT2, NVIDIA_BINARY).unwrap_err();
        assert!(matches!(err, ConfigError::Version1 { .. }));
        assert!(err.problem().contains("no `version` key"), "{err}");
        assert!(
            err.fix().contains("containerd config default > c.toml"),
            "{err}"
        );
    }

    fn refused(text: &str) -> ConfigError {
        set_nvidia_default(text, "c.toml", ROOT2, NVIDIA_BINARY).unwrap_err()
    }

    // One test per message: each error says what is wrong and the fix for that case.

    #[test]
    fn explicit_version_1_says_so_and_to_regenerate() {
        let err = refused("version = 1\n[plugins.cri.containerd]\n");
        assert_eq!(
            err,
            ConfigError::ExplicitVersion1 {
                path: "c.toml".into()
            }
        );
        assert!(
            err.problem()
                .contains("`version = 1` is containerd's legacy"),
            "{err}"
        );
        assert!(!err.problem().contains("no `version` key"), "{err}");
        assert!(
            err.fix().contains("containerd config default > c.toml"),
            "{err}"
        );
    }

    #[test]
    fn version_as_a_string_is_told_to_drop_the_quotes() {
        let err = refused("version = \"2\"\n");
        assert_eq!(
            err,
            ConfigError::VersionNotInteger {
                path: "c.toml".into(),
                found: "a string".into(),
                written: "\"2\"".into()
            }
        );
        assert!(
            err.problem().contains("`version = \"2\"` is a string"),
            "{err}"
        );
        assert_eq!(
            err.fix(),
            "write it as a bare integer: `version = 2` (no quotes)"
        );
        assert!(!err.to_string().contains("[table]"), "{err}");
        let err = refused("version = 'three'\n");
        assert!(
            err.fix()
                .contains("`version = 3` for `io.containerd.cri.v1.runtime`"),
            "{err}"
        );
        let err = refused("version = 2.0\n");
        assert!(err.problem().contains("is a float"), "{err}");
        assert_eq!(
            err.fix(),
            "write it as a bare integer: `version = 2` (no quotes)"
        );
    }

    #[test]
    fn unknown_version_suggests_the_version_of_the_files_tables() {
        let err = refused("version = 99\n[plugins.\"io.containerd.cri.v1.runtime\".containerd]\n");
        assert!(
            matches!(
                err,
                ConfigError::UnsupportedVersion {
                    version: 99,
                    tables_of: Some(3),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.problem()
                .contains("`version = 99` is not a containerd config version"),
            "{err}"
        );
        assert!(err.fix().contains("set `version = 3`"), "{err}");
        let err = refused("version = 99\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n");
        assert!(err.fix().contains("set `version = 2`"), "{err}");
        // Without CRI tables it cannot tell: it says how to find out, and never suggests a list.
        let err = refused("version = 0\n");
        assert!(
            err.fix()
                .contains("containerd config default | grep ^version"),
            "{err}"
        );
        assert!(!err.fix().contains("2 or 3"), "{err}");
    }

    #[test]
    fn a_scalar_where_a_table_belongs_names_the_key_and_what_it_is() {
        let err = refused("version = 2\nplugins = 5\n");
        assert_eq!(
            err,
            ConfigError::Shape {
                path: "c.toml".into(),
                key: "plugins".into(),
                found: "an integer".into()
            }
        );
        assert!(err.problem().contains("`plugins` is an integer"), "{err}");
        assert!(
            err.fix().contains("replace it with a `[plugins]` section"),
            "{err}"
        );
        let err =
            refused("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = \"x\"\n");
        assert!(
            err.problem()
                .contains("`plugins.\"io.containerd.grpc.v1.cri\".containerd` is a string"),
            "{err}"
        );
    }

    #[test]
    fn an_inline_table_is_told_to_become_a_section() {
        let err = refused(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = { snapshotter = \"overlayfs\" }\n",
        );
        assert!(err.problem().contains("is an inline table"), "{err}");
        assert!(
            err.fix().contains(
                "rewrite `plugins.\"io.containerd.grpc.v1.cri\".containerd = { … }` as a `[plugins.\"io.containerd.grpc.v1.cri\".containerd]` section"
            ),
            "{err}"
        );
    }

    #[test]
    fn broken_toml_points_at_the_position() {
        let err = refused("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n");
        let ConfigError::Parse { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("line 2"), "{message}");
        assert!(err.fix().contains("line and column shown"), "{err}");
        assert!(err.fix().contains("restore a backup of c.toml"), "{err}");
    }

    #[test]
    fn import_patterns_resolve_like_containerd() {
        let root = Path::new("/etc/containerd/config.toml");
        assert_eq!(
            import_host_pattern(root, "conf.d/*.toml"),
            Path::new("/etc/containerd/conf.d/*.toml")
        );
        assert_eq!(
            import_host_pattern(root, "/x/*.toml"),
            Path::new("/x/*.toml")
        );
        let m = rewrite_imports_into(
            "imports = [\"/etc/containerd/conf.d/*.toml\", \"rel/*.toml\"]\nversion = 2\n",
            "c",
            Path::new("/tmp/m"),
        )
        .unwrap();
        assert!(m.contains("\"/tmp/m/etc/containerd/conf.d/*.toml\""), "{m}");
        assert!(m.contains("\"rel/*.toml\""), "{m}");
    }

    #[test]
    fn dropin_without_cri_is_left_alone() {
        let input = "version = 2\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/x\"\n";
        let out = set_nvidia_default(input, "d.toml", Role::DropIn, NVIDIA_BINARY).unwrap();
        assert_eq!(out.text, input);
    }

    proptest::proptest! {
        /// Over many shapes of config (version, runc present or not, containerd table present or
        /// not, current default, quote style, nested or flat layout): the result parses, has the
        /// nvidia runtime and default in the right table, keeps the comment, and is a fixed point.
        #[test]
        fn edit_is_correct_and_idempotent(
            version in 2i64..=3,
            runc in proptest::bool::ANY,
            containerd_table in proptest::bool::ANY,
            default in proptest::option::of("(runc|crun|nvidia)"),
            literal in proptest::bool::ANY,
            nested in proptest::bool::ANY,
        ) {
            let plugin = cri_runtime_plugin(version).unwrap();
            let q = |s: &str| if literal { format!("'{s}'") } else { format!("\"{s}\"") };
            let ind = |n: usize| if nested { "  ".repeat(n) } else { String::new() };
            let mut t = format!("# my comment\nversion = {version}\n\n[plugins]\n");
            t.push_str(&format!("{}[plugins.\"{plugin}\"]\n{}enable_cdi = true\n", ind(1), ind(2)));
            if containerd_table || default.is_some() {
                t.push_str(&format!("{}[plugins.\"{plugin}\".containerd]\n", ind(2)));
                if let Some(d) = &default {
                    t.push_str(&format!("{}  default_runtime_name = {}\n", ind(2), q(d)));
                }
            }
            if runc {
                t.push_str(&format!("{}[plugins.\"{plugin}\".containerd.runtimes.runc]\n{}  runtime_type = {}\n", ind(4), ind(4), q("io.containerd.runc.v2")));
                t.push_str(&format!("{}[plugins.\"{plugin}\".containerd.runtimes.runc.options]\n{}  SystemdCgroup = true\n", ind(5), ind(5)));
            }
            let once = set_nvidia_default(&t, "c", ROOT2, NVIDIA_BINARY).unwrap();
            proptest::prop_assert!(once.text.contains("# my comment"));
            proptest::prop_assert_eq!(file_version(&once.text, "c").unwrap(), Some(version));
            let dflt = default_runtime(&once.text, "c").unwrap();
            proptest::prop_assert_eq!(dflt.as_deref(), Some("nvidia"));
            proptest::prop_assert!(has_runtime(&once.text, "c", "nvidia").unwrap());
            if runc && default.as_deref() != Some("crun") {
                let doc: DocumentMut = once.text.parse().unwrap();
                let sc = doc["plugins"][plugin]["containerd"]["runtimes"]["nvidia"]["options"]["SystemdCgroup"].as_bool();
                proptest::prop_assert_eq!(sc, Some(true));
            }
            let twice = set_nvidia_default(&once.text, "c", ROOT2, NVIDIA_BINARY).unwrap();
            proptest::prop_assert_eq!(&twice.text, &once.text);
            proptest::prop_assert!(twice.changes.is_empty());
        }
    }

    #[test]
    fn effective_default_follows_merge_rules() {
        let root = ("r".to_owned(), "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"nvidia\"\n".to_owned());
        let dropin = (
            "d".to_owned(),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/x\"\n"
                .to_owned(),
        );
        let files = [root, dropin];
        assert_eq!(effective_default_runtime(&files, Some(1)).unwrap(), None);
        assert_eq!(
            effective_default_runtime(&files, Some(2))
                .unwrap()
                .as_deref(),
            Some("nvidia")
        );
    }
}
