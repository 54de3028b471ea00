//! What a plugin may be called and versioned, checked by `const fn` so
//! that [`register_plugin!`](crate::register_plugin) rejects a bad name
//! or version when the plugin is compiled, not when a node starts.

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid plugin name: 1 to 64 bytes of lowercase ASCII
/// letters, digits, `.`, `-` and `_`, starting with a letter (so it cannot
/// clash with the gossiped `name@version,…` form).
pub const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// Reads a numeric identifier at `bytes[i..]`: digits without a leading
/// zero. Returns the index after it, or `None`.
const fn number(bytes: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == start || (bytes[start] == b'0' && i - start > 1) {
        None
    } else {
        Some(i)
    }
}

/// Reads dot-separated identifiers of `[0-9A-Za-z-]` (a pre-release or
/// build part) from `bytes[i..]`, up to `stop` or the end; numeric
/// identifiers in a pre-release must not have a leading zero.
const fn identifiers(bytes: &[u8], mut i: usize, stop: u8, numeric_rule: bool) -> Option<usize> {
    loop {
        let start = i;
        let mut all_digits = true;
        while i < bytes.len() && bytes[i] != b'.' && bytes[i] != stop {
            let b = bytes[i];
            if !(b.is_ascii_alphanumeric() || b == b'-') {
                return None;
            }
            if !b.is_ascii_digit() {
                all_digits = false;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        if numeric_rule && all_digits && bytes[start] == b'0' && i - start > 1 {
            return None;
        }
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            continue;
        }
        return Some(i);
    }
}

/// Whether `version` is a semantic version (semver.org 2.0.0):
/// `MAJOR.MINOR.PATCH`, then optionally `-pre.release` and `+build`.
pub const fn is_semver(version: &str) -> bool {
    let bytes = version.as_bytes();
    let mut i = 0;
    let mut part = 0;
    while part < 3 {
        i = match number(bytes, i) {
            Some(next) => next,
            None => return false,
        };
        part += 1;
        if part < 3 {
            if i >= bytes.len() || bytes[i] != b'.' {
                return false;
            }
            i += 1;
        }
    }
    if i < bytes.len() && bytes[i] == b'-' {
        i = match identifiers(bytes, i + 1, b'+', true) {
            Some(next) => next,
            None => return false,
        };
    }
    if i < bytes.len() && bytes[i] == b'+' {
        i = match identifiers(bytes, i + 1, 0, false) {
            Some(next) => next,
            None => return false,
        };
    }
    i == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_words_with_dots_dashes_and_underscores() {
        for good in ["echo", "json.transform", "sql-query", "a1_b", "x"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Echo",
            "1echo",
            ".x",
            "a b",
            "a@b",
            "a,b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn versions_follow_semver_and_agree_with_the_semver_crate() {
        let cases = [
            "1.0.0",
            "0.1.0",
            "10.20.30",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-0.3.7",
            "1.0.0-x.7.z.92",
            "1.0.0+20130313144700",
            "1.0.0-beta+exp.sha.5114f85",
            "1.0.0+21AF26D3---117B344092BD",
            "",
            "1",
            "1.0",
            "v1.0.0",
            "01.0.0",
            "1.00.0",
            "1.0.0-",
            "1.0.0-01",
            "1.0.0+",
            "1.0.0-a..b",
            "1.0.0 ",
            "1.0.0.0",
            "1.0.0-α",
        ];
        for case in cases {
            assert_eq!(
                is_semver(case),
                semver::Version::parse(case).is_ok(),
                "{case:?}"
            );
        }
    }
}
