//! The memory-limit environment of HAMi-core: `CUDA_DEVICE_MEMORY_LIMIT_<i>` and
//! `CUDA_DEVICE_MEMORY_LIMIT`, parsed strictly *and* the way HAMi-core itself reads them.
//!
//! Why both: HAMi-core's `get_limit_from_env` takes the last character as a k/m/g suffix and then
//! `strtoul(…, base 0)`s the whole string, so `4Gi` means 4 bytes, `1.5G` means 1 GiB and `08G`
//! means 0 (no limit). A user who wrote `4Gi` believes in a 4 GiB slice; the probe must say what the
//! library will actually enforce (shared/facts/hami.md §7).

use std::collections::BTreeMap;

use crate::report::{ExpectedSlice, MIB};

pub const LIMIT_VAR: &str = "CUDA_DEVICE_MEMORY_LIMIT";

/// A limit value that cannot be trusted, with what HAMi-core will make of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name}={raw:?} is malformed: {problem}. HAMi-core reads it as {hami} bytes{meaning}. \
     Fix: write a whole number with at most one suffix letter k, m or g, e.g. {name}=8000m"
)]
pub struct LimitError {
    pub name: String,
    pub raw: String,
    pub problem: String,
    pub hami: u64,
    pub meaning: String,
}

/// Parses a limit strictly: decimal digits, then at most one of `k K m M g G`.
/// Returns bytes. The error also tells what HAMi-core would read instead.
pub fn parse_limit(name: &str, raw: &str) -> Result<u64, LimitError> {
    let hami = hami_core_reading(raw);
    let fail = |problem: &str| LimitError {
        name: name.to_owned(),
        raw: raw.to_owned(),
        problem: problem.to_owned(),
        hami,
        meaning: if hami == 0 {
            " (no limit at all)".to_owned()
        } else {
            String::new()
        },
    };
    let (digits, scale) = match raw.as_bytes().last() {
        Some(b'k' | b'K') => (&raw[..raw.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&raw[..raw.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&raw[..raw.len() - 1], 1 << 30),
        Some(_) => (raw, 1),
        None => return Err(fail("the value is empty")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("expected digits before the suffix"));
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(fail("a leading 0 makes HAMi-core read the number as octal"));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| fail("the number is too large"))?;
    let bytes = value
        .checked_mul(scale)
        .ok_or_else(|| fail("the number is too large"))?;
    debug_assert_eq!(
        bytes, hami,
        "strictly valid values must read the same in HAMi-core"
    );
    Ok(bytes)
}

/// Emulates HAMi-core's reading: scale from the last character, number from C's
/// `strtoul(s, NULL, 0)` (leading spaces, sign, `0x` hex, leading-`0` octal, stops at the first
/// character that is not a digit, saturates on overflow, wraps a minus sign).
pub fn hami_core_reading(raw: &str) -> u64 {
    let scale: u64 = match raw.as_bytes().last() {
        Some(b'g' | b'G') => 1 << 30,
        Some(b'm' | b'M') => 1 << 20,
        Some(b'k' | b'K') => 1 << 10,
        _ => 1,
    };
    strtoul_base0(raw).wrapping_mul(scale)
}

fn strtoul_base0(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i] == b' ' || (b'\t'..=b'\r').contains(&bytes[i])) {
        i += 1;
    }
    let mut negative = false;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        negative = bytes[i] == b'-';
        i += 1;
    }
    let mut radix = 10;
    if bytes.get(i) == Some(&b'0') {
        let hex_prefix = matches!(bytes.get(i + 1), Some(b'x' | b'X'))
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if hex_prefix {
            radix = 16;
            i += 2;
        } else {
            radix = 8;
        }
    }
    let mut value: u64 = 0;
    let mut overflow = false;
    while let Some(d) = bytes.get(i).and_then(|&b| (b as char).to_digit(radix)) {
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if overflow {
        return u64::MAX;
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// A human reading of a limit variable, for the mechanism section.
pub fn interpret(name: &str, raw: &str) -> String {
    match parse_limit(name, raw) {
        Ok(0) => "0: no limit".to_owned(),
        Ok(bytes) => format!("{bytes} bytes = {} MiB", fmt_mib(bytes)),
        Err(e) => e.to_string(),
    }
}

fn fmt_mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        (bytes / MIB).to_string()
    } else {
        format!("{:.2}", crate::report::mib(bytes))
    }
}

/// Where the expected slice of each device comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceRequest {
    /// `--expect-mib N`: the same slice on every device.
    Mib(u64),
    /// From the environment.
    FromEnv,
}

/// The slice expected on device `index`: `--expect-mib` wins, else `CUDA_DEVICE_MEMORY_LIMIT_<i>`,
/// else `CUDA_DEVICE_MEMORY_LIMIT`. `Ok(None)` means no slice is configured (absent or 0).
pub fn expected_slice(
    index: u32,
    request: &SliceRequest,
    env: &BTreeMap<String, String>,
) -> Result<Option<ExpectedSlice>, LimitError> {
    if let SliceRequest::Mib(mib) = request {
        return Ok(Some(ExpectedSlice {
            device: index,
            bytes: mib * MIB,
            source: "--expect-mib".to_owned(),
            raw: mib.to_string(),
        }));
    }
    let per_device = format!("{LIMIT_VAR}_{index}");
    for name in [per_device.as_str(), LIMIT_VAR] {
        if let Some(raw) = env.get(name) {
            let bytes = parse_limit(name, raw)?;
            if bytes == 0 {
                return Ok(None);
            }
            return Ok(Some(ExpectedSlice {
                device: index,
                bytes,
                source: name.to_owned(),
                raw: raw.clone(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn suffixes_as_hami_core_reads_them() {
        assert_eq!(parse_limit("X", "8000m"), Ok(8_388_608_000));
        assert_eq!(parse_limit("X", "8G"), Ok(8 << 30));
        assert_eq!(parse_limit("X", "512k"), Ok(512 << 10));
        assert_eq!(parse_limit("X", "1048576"), Ok(1 << 20));
        assert_eq!(parse_limit("X", "0"), Ok(0));
    }

    #[test]
    fn multi_letter_suffixes_are_rejected_with_what_hami_core_reads() {
        let err = parse_limit("CUDA_DEVICE_MEMORY_LIMIT_0", "4Gi").expect_err("4Gi is malformed");
        assert_eq!(err.hami, 4, "HAMi-core reads 4Gi as 4 bytes");
        let text = err.to_string();
        assert!(text.contains("4 bytes") && text.contains("8000m"), "{text}");
        assert_eq!(parse_limit("X", "4GB").expect_err("malformed").hami, 4);
        assert_eq!(
            parse_limit("X", "1.5G").expect_err("malformed").hami,
            1 << 30
        );
    }

    #[test]
    fn leading_zero_is_octal_in_hami_core() {
        let err = parse_limit("X", "08G").expect_err("octal trap");
        assert_eq!(err.hami, 0);
        assert!(err.to_string().contains("no limit at all"));
        assert_eq!(parse_limit("X", "010m").expect_err("octal").hami, 8 << 20);
        assert_eq!(hami_core_reading("0x10m"), 16 << 20);
    }

    #[test]
    fn empty_and_garbage_values() {
        assert!(parse_limit("X", "").is_err());
        assert!(parse_limit("X", "m").is_err());
        assert_eq!(parse_limit("X", "lots").expect_err("garbage").hami, 0);
        assert!(parse_limit("X", "99999999999999999999g").is_err());
        assert_eq!(hami_core_reading(" -1"), u64::MAX);
    }

    #[test]
    fn per_device_variable_wins_over_the_bare_one() {
        let e = env(&[
            ("CUDA_DEVICE_MEMORY_LIMIT_1", "2000m"),
            ("CUDA_DEVICE_MEMORY_LIMIT", "1g"),
        ]);
        let d0 = expected_slice(0, &SliceRequest::FromEnv, &e)
            .expect("ok")
            .expect("slice");
        let d1 = expected_slice(1, &SliceRequest::FromEnv, &e)
            .expect("ok")
            .expect("slice");
        assert_eq!(
            (d0.bytes, d0.source.as_str()),
            (1 << 30, "CUDA_DEVICE_MEMORY_LIMIT")
        );
        assert_eq!(
            (d1.bytes, d1.source.as_str()),
            (2000 << 20, "CUDA_DEVICE_MEMORY_LIMIT_1")
        );
    }

    #[test]
    fn expect_mib_overrides_env_and_zero_means_none() {
        let e = env(&[("CUDA_DEVICE_MEMORY_LIMIT_0", "0")]);
        assert_eq!(expected_slice(0, &SliceRequest::FromEnv, &e), Ok(None));
        let s = expected_slice(0, &SliceRequest::Mib(8000), &e)
            .expect("ok")
            .expect("slice");
        assert_eq!((s.bytes, s.source.as_str()), (8000 << 20, "--expect-mib"));
        assert_eq!(
            expected_slice(3, &SliceRequest::FromEnv, &BTreeMap::new()),
            Ok(None)
        );
    }

    #[test]
    fn malformed_env_is_an_error_not_a_guess() {
        let e = env(&[("CUDA_DEVICE_MEMORY_LIMIT_0", "8000MiB")]);
        assert!(expected_slice(0, &SliceRequest::FromEnv, &e).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_strict_agrees_with_hami(raw in "\\PC{0,24}") {
            let hami = hami_core_reading(&raw);
            if let Ok(bytes) = parse_limit("X", &raw) {
                prop_assert_eq!(bytes, hami);
            }
        }

        #[test]
        fn well_formed_values_round_trip(n in 1u64..1_000_000, s in prop::sample::select(vec!["", "k", "m", "g", "K", "M", "G"])) {
            let raw = format!("{n}{s}");
            let scale = match s.to_ascii_lowercase().as_str() { "k" => 1 << 10, "m" => 1 << 20, "g" => 1 << 30, _ => 1 };
            prop_assert_eq!(parse_limit("X", &raw), Ok(n * scale));
        }
    }
}
