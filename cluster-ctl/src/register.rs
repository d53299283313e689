//! Parser of HAMi's node register annotation `hami.io/node-nvidia-register`, in all three formats
//! HAMi has written (facts/hami.md §2):
//! - ≤ v2.4: 7 comma-separated fields per device, each device ended by `:`;
//! - v2.5–v2.7: 9 fields (adds `index`, `mode`);
//! - ≥ v2.8: a JSON array whose fields are all `omitempty` (so `index:0`, `numa:0`, `health:false`
//!   are absent and mean zero/false).
//!
//! Pure and panic-free on any input (property-tested): the annotation is written by a DaemonSet we
//! do not control, and a wrong value must become a clear error, never a crash.

use serde::{Deserialize, Serialize};

/// The annotation key the NVIDIA device plugin of HAMi writes its devices into.
pub const REGISTER_ANNOTATION: &str = "hami.io/node-nvidia-register";

/// One physical GPU as HAMi registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub uuid: String,
    /// NVML index; absent in the 7-field format.
    pub index: Option<u32>,
    /// Split count (`devicePlugin.deviceSplitCount`).
    pub count: u32,
    /// Device memory in MiB (NVML total × `deviceMemoryScaling`).
    pub devmem_mib: u64,
    /// 100 × `deviceCoreScaling`.
    pub devcore: u32,
    #[serde(rename = "type")]
    pub gpu_type: String,
    pub numa: u32,
    /// `hami-core`, `mig` or `mps`; absent in the 7-field format.
    pub mode: Option<String>,
    pub health: bool,
}

/// Which of the three formats a register value was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegisterFormat {
    /// HAMi ≤ 2.4: 7 fields per device.
    Legacy7,
    /// HAMi 2.5–2.7: 9 fields per device.
    Legacy9,
    /// HAMi ≥ 2.8: JSON array.
    Json,
}

/// Why a register value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "the register annotation is empty: the HAMi device plugin has not registered any GPU yet (check the hami-device-plugin pod on this node)"
    )]
    Empty,
    #[error(
        "device {device} of the register annotation has {found} comma-separated fields; HAMi writes 7 (≤ v2.4) or 9 (v2.5–v2.7) — is the value truncated or from another vendor?"
    )]
    FieldCount { device: usize, found: usize },
    #[error(
        "device {device} of the register annotation: field `{field}` is not a number: {value:?}"
    )]
    BadNumber {
        device: usize,
        field: &'static str,
        value: String,
    },
    #[error(
        "device {device} of the register annotation: health is {value:?}, expected true or false"
    )]
    BadBool { device: usize, value: String },
    #[error("device {device} of the register annotation has no GPU UUID")]
    MissingUuid { device: usize },
    #[error("the JSON register annotation (HAMi ≥ 2.8) does not parse: {0}")]
    Json(String),
}

#[derive(Debug, Deserialize)]
struct JsonDevice {
    #[serde(default)]
    id: String,
    #[serde(default)]
    index: u32,
    #[serde(default)]
    count: u32,
    #[serde(default)]
    devmem: u64,
    #[serde(default)]
    devcore: u32,
    #[serde(default, rename = "type")]
    gpu_type: String,
    #[serde(default)]
    numa: u32,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    health: bool,
}

/// Parses a register annotation value in any of the three formats.
pub fn parse_register(value: &str) -> Result<(RegisterFormat, Vec<Gpu>), RegisterError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed == "[]" {
        return Err(RegisterError::Empty);
    }
    if trimmed.starts_with('[') {
        return parse_json(trimmed).map(|gpus| (RegisterFormat::Json, gpus));
    }
    parse_legacy(trimmed)
}

fn parse_json(value: &str) -> Result<Vec<Gpu>, RegisterError> {
    let devices: Vec<JsonDevice> =
        serde_json::from_str(value).map_err(|e| RegisterError::Json(e.to_string()))?;
    if devices.is_empty() {
        return Err(RegisterError::Empty);
    }
    devices
        .into_iter()
        .enumerate()
        .map(|(device, d)| {
            if d.id.trim().is_empty() {
                return Err(RegisterError::MissingUuid { device });
            }
            Ok(Gpu {
                uuid: d.id,
                index: Some(d.index),
                count: d.count,
                devmem_mib: d.devmem,
                devcore: d.devcore,
                gpu_type: d.gpu_type,
                numa: d.numa,
                mode: d.mode.filter(|m| !m.is_empty()),
                health: d.health,
            })
        })
        .collect()
}

fn parse_legacy(value: &str) -> Result<(RegisterFormat, Vec<Gpu>), RegisterError> {
    let mut format = None;
    let mut gpus = Vec::new();
    for (device, entry) in value
        .split(':')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let fields: Vec<&str> = entry.split(',').map(str::trim).collect();
        let this_format = match fields.len() {
            7 => RegisterFormat::Legacy7,
            9 => RegisterFormat::Legacy9,
            found => return Err(RegisterError::FieldCount { device, found }),
        };
        // A mix of widths is not something HAMi writes; report the first width seen.
        format.get_or_insert(this_format);
        let uuid = fields[0].to_owned();
        if uuid.is_empty() {
            return Err(RegisterError::MissingUuid { device });
        }
        let (index, mode) = if fields.len() == 9 {
            (
                Some(number(device, "index", fields[7])?),
                Some(fields[8].to_owned()).filter(|m| !m.is_empty()),
            )
        } else {
            (None, None)
        };
        gpus.push(Gpu {
            uuid,
            index,
            count: number(device, "count", fields[1])?,
            devmem_mib: number(device, "devmem", fields[2])?,
            devcore: number(device, "devcore", fields[3])?,
            gpu_type: fields[4].to_owned(),
            numa: number(device, "numa", fields[5])?,
            mode,
            health: boolean(device, fields[6])?,
        });
    }
    match format {
        Some(format) => Ok((format, gpus)),
        None => Err(RegisterError::Empty),
    }
}

fn number<T: std::str::FromStr>(
    device: usize,
    field: &'static str,
    value: &str,
) -> Result<T, RegisterError> {
    value.parse().map_err(|_| RegisterError::BadNumber {
        device,
        field,
        value: value.to_owned(),
    })
}

fn boolean(device: usize, value: &str) -> Result<bool, RegisterError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(RegisterError::BadBool {
            device,
            value: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture_node, register_of};
    use proptest::prelude::*;

    #[test]
    fn json_format_of_v2_10_h100() {
        let (format, gpus) =
            parse_register(&register_of(&fixture_node("node-hami-v2.10-h100.json"))).unwrap();
        assert_eq!(format, RegisterFormat::Json);
        assert_eq!(gpus.len(), 1);
        let g = &gpus[0];
        assert_eq!(g.uuid, "GPU-4f7efa07-0f69-f62e-5958-365ed3785eb2");
        assert_eq!(g.devmem_mib, 81559);
        assert_eq!(g.devcore, 100);
        assert_eq!(g.count, 10);
        assert_eq!(g.gpu_type, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.mode.as_deref(), Some("hami-core"));
        assert!(g.health);
        // omitempty: index and numa absent mean 0.
        assert_eq!(g.index, Some(0));
        assert_eq!(g.numa, 0);
    }

    #[test]
    fn json_format_of_v2_9_a6000() {
        let (_, gpus) =
            parse_register(&register_of(&fixture_node("node-hami-v2.9-a6000.json"))).unwrap();
        assert_eq!(gpus[0].devmem_mib, 49140);
        assert_eq!(gpus[0].gpu_type, "NVIDIA RTX A6000");
    }

    #[test]
    fn nine_field_format_of_v2_6_l4() {
        let (format, gpus) = parse_register(&register_of(&fixture_node(
            "node-hami-v2.6-l4-legacy9.json",
        )))
        .unwrap();
        assert_eq!(format, RegisterFormat::Legacy9);
        let g = &gpus[0];
        assert_eq!(g.uuid, "GPU-8c3e2f10-77a1-4d52-b6e9-1f0a2b3c4d5e");
        assert_eq!(g.devmem_mib, 23034);
        assert_eq!(g.gpu_type, "NVIDIA L4");
        assert_eq!(g.index, Some(0));
        assert_eq!(g.mode.as_deref(), Some("hami-core"));
        assert!(g.health);
    }

    #[test]
    fn seven_field_format_of_v2_4_v100() {
        let (format, gpus) = parse_register(&register_of(&fixture_node(
            "node-hami-v2.4-v100-legacy7.json",
        )))
        .unwrap();
        assert_eq!(format, RegisterFormat::Legacy7);
        let g = &gpus[0];
        assert_eq!(g.uuid, "GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec");
        assert_eq!(g.devmem_mib, 32768);
        assert_eq!(g.devcore, 100);
        assert_eq!(g.gpu_type, "NVIDIA-Tesla V100-PCIE-32GB");
        assert_eq!(g.index, None);
        assert_eq!(g.mode, None);
        assert!(g.health);
    }

    #[test]
    fn json_omitted_health_means_unhealthy_and_several_gpus_keep_order() {
        let (_, gpus) = parse_register(
            r#"[{"id":"GPU-a","count":10,"devmem":100,"devcore":100,"type":"X","mode":"hami-core","health":true},{"id":"GPU-b","index":1,"count":10,"devmem":200,"devcore":100,"type":"X","mode":"hami-core"}]"#,
        )
        .unwrap();
        assert_eq!(gpus.len(), 2);
        assert!(gpus[0].health);
        assert!(!gpus[1].health);
        assert_eq!(gpus[1].index, Some(1));
        assert_eq!(gpus[1].devmem_mib, 200);
    }

    #[test]
    fn two_legacy_devices() {
        let (_, gpus) = parse_register(
            "GPU-a,10,1000,100,NVIDIA-T4,0,true,0,hami-core:GPU-b,10,2000,100,NVIDIA-T4,1,false,1,hami-core:",
        )
        .unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].uuid, "GPU-b");
        assert!(!gpus[1].health);
        assert_eq!(gpus[1].numa, 1);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse_register("  "), Err(RegisterError::Empty));
        assert_eq!(parse_register("[]"), Err(RegisterError::Empty));
        assert!(matches!(
            parse_register("GPU-a,10,1000:"),
            Err(RegisterError::FieldCount {
                device: 0,
                found: 3
            })
        ));
        assert!(matches!(
            parse_register("GPU-a,10,lots,100,T,0,true:"),
            Err(RegisterError::BadNumber {
                field: "devmem",
                ..
            })
        ));
        assert!(matches!(
            parse_register("GPU-a,10,1,100,T,0,yes:"),
            Err(RegisterError::BadBool { .. })
        ));
        assert!(matches!(
            parse_register("[{\"devmem\":1}]"),
            Err(RegisterError::MissingUuid { .. })
        ));
        assert!(matches!(parse_register("[{"), Err(RegisterError::Json(_))));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(s in ".{0,300}") {
            let _ = parse_register(&s);
        }

        #[test]
        fn never_panics_on_register_like_text(s in "[\\[\\]{}\":,a-zA-Z0-9 -]{0,200}") {
            let _ = parse_register(&s);
        }

        #[test]
        fn legacy_round_trip(mem in 0u64..1_000_000, core in 0u32..1000, idx in 0u32..16, health: bool) {
            let v = format!("GPU-x,10,{mem},{core},NVIDIA T,0,{health},{idx},hami-core:");
            let (_, gpus) = parse_register(&v).unwrap();
            prop_assert_eq!(gpus[0].devmem_mib, mem);
            prop_assert_eq!(gpus[0].devcore, core);
            prop_assert_eq!(gpus[0].index, Some(idx));
            prop_assert_eq!(gpus[0].health, health);
        }
    }
}
