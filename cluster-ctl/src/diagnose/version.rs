//! HAMi versions: parsing `2.4.1` / `v2.4.1`, comparing, and finding the version an input shows
//! (the hami image tag, the chart name `hami-X.Y.Z` in a label or `helm list`, the issue template's
//! `HAMi version:` line), so advice can say "upgrade to ≥ X" when the bug is fixed in a later one.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Serialize, Serializer};

/// `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// `2.4.1`, `v2.4.1` (anything after the patch number is ignored); `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches(['v', 'V']);
        let mut parts = s.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch_text = parts.next()?;
        let digits: String = patch_text
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self(major, minor, digits.parse().ok()?))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

fn patterns() -> &'static [Regex] {
    static P: OnceLock<Vec<Regex>> = OnceLock::new();
    P.get_or_init(|| {
        [
            // the image every HAMi component runs
            r"projecthami/hami:v?(\d+\.\d+\.\d+)",
            // the chart: `helm.sh/chart: hami-2.4.1`, `helm list` CHART column
            r"\bhami-(\d+\.\d+\.\d+)\b",
            // the issue template / a person's note: `HAMi version: 2.5.0`, `HAMi版本2.5.0`
            r"(?i)\bhami\s*(?:version|版本)\s*[:：]?\s*v?(\d+\.\d+\.\d+)",
        ]
        .iter()
        .filter_map(|p| Regex::new(p).ok())
        .collect()
    })
}

fn bare_heading() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"(?i)\bhami\s*(?:version|版本)\s*[:：]?\s*$").ok())
        .as_ref()
}

fn list_value() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^\s*-?\s*v?(\d+\.\d+\.\d+)\s*$").ok())
        .as_ref()
}

/// The HAMi version a line shows, if any. `next` is the following line: the issue template is
/// sometimes filled in as `- HAMi version:` / `- v2.5.0`.
pub fn in_line(line: &str, next: Option<&str>) -> Option<Version> {
    for p in patterns() {
        if let Some(v) = p
            .captures(line)
            .and_then(|c| c.get(1))
            .and_then(|m| Version::parse(m.as_str()))
        {
            return Some(v);
        }
    }
    if bare_heading().is_some_and(|r| r.is_match(line)) {
        return next
            .and_then(|n| list_value()?.captures(n))
            .and_then(|c| c.get(1))
            .and_then(|m| Version::parse(m.as_str()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("v2.4.1"), Some(Version(2, 4, 1)));
        assert_eq!(Version::parse("2.10.0-rc1"), Some(Version(2, 10, 0)));
        assert_eq!(Version::parse("2.4"), None);
        assert!(Version(2, 10, 0) > Version(2, 9, 3));
    }

    #[test]
    fn versions_are_found_where_hami_shows_them() {
        assert_eq!(
            in_line("image: docker.io/projecthami/hami:v2.5.0", None),
            Some(Version(2, 5, 0))
        );
        assert_eq!(
            in_line("hami   kube-system  1  deployed  hami-2.4.1  2.4.1", None),
            Some(Version(2, 4, 1))
        );
        assert_eq!(
            in_line("- HAMi version: 2.4.1", None),
            Some(Version(2, 4, 1))
        );
        assert_eq!(in_line("HAMi版本2.5.0", None), Some(Version(2, 5, 0)));
        assert_eq!(
            in_line("- HAMi version:", Some("- v2.5.0 ")),
            Some(Version(2, 5, 0))
        );
        assert_eq!(in_line("- Kubernetes version: 1.31.7", None), None);
        assert_eq!(in_line("hami-scheduler-7bf5dd9cfb-69hrb", None), None);
    }
}
