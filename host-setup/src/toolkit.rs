//! `host-setup harden`: the NVIDIA Container Toolkit settings that stop device requests by
//! environment variable from unprivileged containers, in `/etc/nvidia-container-runtime/config.toml`
//! (edited with `toml_edit`: comments, order and the other settings kept):
//!
//! ```toml
//! accept-nvidia-visible-devices-envvar-when-unprivileged = false
//! accept-nvidia-visible-devices-as-volume-mounts = true
//! ```
//!
//! Both are top-level keys of the toolkit's config (`api/config/v1/config.go`, `Config` struct
//! tags, NVIDIA/nvidia-container-toolkit d34b3046 = v1.20.0+27); their defaults are `true` and
//! `false` (`GetDefault`). With them, `NVIDIA_VISIBLE_DEVICES` from a pod's spec or its image is
//! ignored unless the container is privileged (the toolkit counts CAP_SYS_ADMIN in the bounding
//! set as privileged: `internal/config/image/privileged.go`), and devices are taken from the
//! `/dev/null` mounts under `/var/run/nvidia-container-devices/` that a device plugin asks the
//! kubelet for (`internal/config/image/cuda_image.go` `VisibleDevices`). HAMi's device plugin must
//! then use that strategy: `devicePlugin.deviceListStrategy=volume-mounts`.
//!
//! The runtime reads the file at every container start: nothing is restarted, and running
//! containers keep what they have.

use std::path::Path;

use toml_edit::{DocumentMut, Item, value};

use crate::checks::{Finding, Level};
use crate::plan::{Check, FileChange, Plan, PlannedStep, Step};
use crate::root::HostRoot;

/// The toolkit's config file (`api/config/v1/config.go`: `/etc` + `RelativeFilePath`).
pub const CONFIG: &str = "/etc/nvidia-container-runtime/config.toml";
/// The runtime whose config it is; without it there is nothing to harden.
pub const RUNTIME_BIN: &str = "/usr/bin/nvidia-container-runtime";
pub const ENVVAR_WHEN_UNPRIVILEGED: &str = "accept-nvidia-visible-devices-envvar-when-unprivileged";
pub const AS_VOLUME_MOUNTS: &str = "accept-nvidia-visible-devices-as-volume-mounts";

/// Each setting: key, the value `harden` sets, the toolkit's default, and why.
pub const SETTINGS: [(&str, bool, bool, &str); 2] = [
    (
        ENVVAR_WHEN_UNPRIVILEGED,
        false,
        true,
        "an unprivileged container's NVIDIA_VISIBLE_DEVICES (from its spec or its image) is ignored, so a pod cannot name GPUs the scheduler never gave it",
    ),
    (
        AS_VOLUME_MOUNTS,
        true,
        false,
        "devices come from the /dev/null mounts under /var/run/nvidia-container-devices that the device plugin asks the kubelet for (HAMi: deviceListStrategy=volume-mounts)",
    ),
];

/// What the HAMi chart must be given once the host is hardened.
pub const HAMI_SETTING: &str = "devicePlugin.deviceListStrategy=volume-mounts";

/// Why the toolkit config cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolkitError {
    #[error(
        "{CONFIG} is not valid TOML ({0}); fix or remove it first (the toolkit would not read it either)"
    )]
    Parse(String),
    #[error("{CONFIG}: `{key}` is {found}, not a boolean; set it to true or false by hand first")]
    NotBool { key: &'static str, found: String },
}

/// The value the toolkit uses for `key`: the file's, else the default.
fn effective(doc: &DocumentMut, key: &'static str, default: bool) -> Result<bool, ToolkitError> {
    match doc.get(key) {
        None => Ok(default),
        Some(item) => item.as_bool().ok_or_else(|| ToolkitError::NotBool {
            key,
            found: item.to_string().trim().to_owned(),
        }),
    }
}

fn parse(text: &str) -> Result<DocumentMut, ToolkitError> {
    text.parse::<DocumentMut>()
        .map_err(|e| ToolkitError::Parse(e.to_string().trim().to_owned()))
}

/// The settings not yet in effect, as `(key, wanted, effective now)`.
pub fn missing(text: Option<&str>) -> Result<Vec<(&'static str, bool, bool)>, ToolkitError> {
    let doc = parse(text.unwrap_or_default())?;
    let mut out = Vec::new();
    for (key, want, default, _) in SETTINGS {
        let now = effective(&doc, key, default)?;
        if now != want {
            out.push((key, want, now));
        }
    }
    Ok(out)
}

/// The file with both settings in effect, and one line per change; `None` when they already are.
/// A key already in the file is changed in place; a missing one is added among the top-level
/// keys (before the first table).
pub fn harden(text: Option<&str>) -> Result<Option<(String, Vec<String>)>, ToolkitError> {
    let todo = missing(text)?;
    if todo.is_empty() {
        return Ok(None);
    }
    let mut doc = parse(text.unwrap_or_default())?;
    let mut changes = Vec::new();
    for (key, want, now) in todo {
        let why = SETTINGS
            .iter()
            .find(|s| s.0 == key)
            .map(|s| s.3)
            .unwrap_or_default();
        match doc.get_mut(key) {
            Some(item) => {
                // Keep the key's position and surrounding comments; replace only the value.
                let decor = item.as_value().map(|v| v.decor().clone());
                *item = value(want);
                if let (Some(d), Some(v)) = (decor, item.as_value_mut()) {
                    *v.decor_mut() = d;
                }
            }
            None => {
                doc.insert(key, Item::Value(want.into()));
            }
        }
        changes.push(format!("set `{key} = {want}` (was {now}): {why}"));
    }
    let after = doc.to_string();
    check(&after).map_err(ToolkitError::Parse)?;
    Ok(Some((after, changes)))
}

/// The check `apply` runs on the rendered file before anything is written: it parses, and both
/// settings are in effect.
pub fn check(text: &str) -> Result<(), String> {
    match missing(Some(text)) {
        Ok(m) if m.is_empty() => Ok(()),
        Ok(m) => Err(format!(
            "{} not in effect after the edit",
            m.iter().map(|(k, _, _)| *k).collect::<Vec<_>>().join(", ")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The plan of `host-setup harden`: one file write, or nothing when the host is hardened, or a
/// blocker when there is no toolkit or its config cannot be read.
pub fn plan_harden(root: &HostRoot) -> Plan {
    let mut plan = Plan::default();
    if !root.exists(Path::new(RUNTIME_BIN)) {
        plan.blockers.push(crate::plan::Blocker {
            problem: format!("the NVIDIA Container Toolkit is not installed ({RUNTIME_BIN} is missing)"),
            fix: "install it first: `host-setup install` (or apt-get install nvidia-container-toolkit), then run `host-setup harden`".into(),
        });
        return plan;
    }
    let file = match root.read_text(Path::new(CONFIG)) {
        Ok(file) => file,
        Err(e) => {
            plan.blockers.push(crate::plan::Blocker {
                problem: format!("cannot read {CONFIG}: {e}"),
                fix: "run as root, or fix the file's permissions; nothing is written over a file that could not be read".into(),
            });
            return plan;
        }
    };
    let before = file.as_ref().map(|f| f.text.clone());
    let link_target = file
        .as_ref()
        .and_then(|f| f.resolved.via_link.as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    match harden(before.as_deref()) {
        Ok(None) => {}
        Ok(Some((after, changes))) => {
            plan.steps.push(PlannedStep {
                step: Step::WriteFile(FileChange {
                    path: CONFIG.to_owned(),
                    before,
                    after,
                    mode: 0o644,
                    check: Check::ToolkitConfig,
                    changes,
                    link_target,
                    validation: None,
                }),
                why: "the NVIDIA runtime (containerd's default runtime here) reads this file at every container start; no restart is needed, running containers keep their devices".into(),
            });
            plan.warnings.push(format!(
                "HAMi's device plugin must now pass devices as volume mounts, or HAMi pods get no GPU: `cluster-ctl install-hami --set {HAMI_SETTING}` (chart default: envvar)"
            ));
            plan.warnings.push(
                "privileged containers (and those with CAP_SYS_ADMIN) still get every GPU they name: refuse them with `cluster-ctl harden` (manifests/policy.yaml)".into(),
            );
        }
        Err(e) => plan.blockers.push(crate::plan::Blocker {
            problem: e.to_string(),
            fix: format!("edit {CONFIG} by hand so it parses, then run `host-setup harden` again"),
        }),
    }
    plan
}

/// Read-only check after `harden`: the file on disk has both settings in effect.
pub fn verify(root: &HostRoot) -> Vec<Finding> {
    let finding = |level, what: String, fix: Option<String>| Finding { level, what, fix };
    match root.read_text(Path::new(CONFIG)).map(|f| f.map(|f| f.text)) {
        Err(e) => vec![finding(
            Level::Fail,
            format!("{CONFIG} cannot be read: {e}"),
            Some("run as root".into()),
        )],
        Ok(text) => match missing(text.as_deref()) {
            Ok(m) if m.is_empty() => SETTINGS
                .iter()
                .map(|(key, want, _, _)| {
                    finding(Level::Ok, format!("{CONFIG}: {key} = {want}"), None)
                })
                .collect(),
            Ok(m) => m
                .into_iter()
                .map(|(key, want, now)| {
                    finding(
                        Level::Fail,
                        format!("{CONFIG}: {key} is {now}, not {want}"),
                        Some("run `host-setup harden`".into()),
                    )
                })
                .collect(),
            Err(e) => vec![finding(Level::Fail, e.to_string(), None)],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_the_defaults_so_both_keys_are_added() {
        let (after, changes) = harden(None).unwrap().unwrap();
        assert_eq!(
            after,
            "accept-nvidia-visible-devices-envvar-when-unprivileged = false\naccept-nvidia-visible-devices-as-volume-mounts = true\n"
        );
        assert_eq!(changes.len(), 2);
        assert!(changes[0].contains("(was true)"), "{changes:?}");
        assert_eq!(harden(Some(&after)).unwrap(), None);
    }

    #[test]
    fn a_key_in_the_file_is_changed_in_place_with_its_comment() {
        let text = "# mine\naccept-nvidia-visible-devices-envvar-when-unprivileged = true # open\n\n[nvidia-container-cli]\nload-kmods = true\n";
        let (after, _) = harden(Some(text)).unwrap().unwrap();
        assert_eq!(
            after,
            "# mine\naccept-nvidia-visible-devices-envvar-when-unprivileged = false # open\naccept-nvidia-visible-devices-as-volume-mounts = true\n\n[nvidia-container-cli]\nload-kmods = true\n"
        );
        check(&after).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_the_fix() {
        assert!(matches!(harden(Some("[x")), Err(ToolkitError::Parse(_))));
        let e = harden(Some(
            "accept-nvidia-visible-devices-as-volume-mounts = \"yes\"\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not a boolean"), "{e}");
        assert!(check("accept-nvidia-visible-devices-as-volume-mounts = true\n").is_err());
    }
}
