//! `/proc/<pid>/maps` lines: which files a process has mapped.
//!
//! The mechanism check asks whether the preloaded library and the shared region file are mapped in
//! a process that has initialised CUDA (real capture: tests/data/h100-hami-core/proc-maps-libvgpu.txt).

use std::collections::BTreeSet;

/// The set of file paths mapped, from the text of a maps file.
pub fn mapped_paths(maps: &str) -> BTreeSet<String> {
    maps.lines()
        .filter_map(|line| {
            // address perms offset dev inode pathname — the path is everything after the 5th field.
            let mut rest = line.trim_start();
            for _ in 0..5 {
                let end = rest.find(char::is_whitespace)?;
                rest = rest[end..].trim_start();
            }
            let path = rest.trim_end().trim_end_matches(" (deleted)");
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// Whether `path` (or its canonical form) is among `mapped`.
pub fn is_mapped(mapped: &BTreeSet<String>, path: &str) -> bool {
    if mapped.contains(path) {
        return true;
    }
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.to_str().map(|s| mapped.contains(s)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::hami_fixture;

    #[test]
    fn finds_library_and_region_in_the_real_capture() {
        let mapped = mapped_paths(&hami_fixture("h100-hami-core/proc-maps-libvgpu.txt"));
        assert!(is_mapped(&mapped, "/usr/local/vgpu/libvgpu.so"));
        assert!(is_mapped(&mapped, "/usr/local/vgpu/fx.cache"));
        assert!(!is_mapped(&mapped, "/usr/local/vgpu/other.so"));
        assert_eq!(mapped.len(), 2);
    }

    #[test]
    fn anonymous_and_pseudo_mappings_are_ignored() {
        let text = "7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n\
                    7f00-7f01 rw-p 00000000 00:00 0 \n\
                    garbage\n\
                    7f00-7f01 r--p 00000000 fe:00 12 /lib/x.so (deleted)\n";
        let mapped = mapped_paths(text);
        assert_eq!(
            mapped.into_iter().collect::<Vec<_>>(),
            vec!["/lib/x.so".to_owned()]
        );
    }

    #[test]
    fn reads_this_process() {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("linux");
        let exe = std::env::current_exe().expect("exe");
        assert!(is_mapped(&mapped_paths(&maps), exe.to_str().expect("utf8")));
    }
}
