//! Image reference globs of `[[trust.policy]]`.
//!
//! Owns matching only: `*` matches any run of characters within one path component (not
//! `/`), `**` any run at all, `?` one character that is not `/`. Nothing else is special.

/// True when `glob` matches the whole of `text`.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let g = glob.as_bytes();
    let t = text.as_bytes();
    // Iterative matching with one backtrack point per star kind, as in fnmatch: linear in
    // practice and never exponential on hostile references.
    let (mut gi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize, bool)> = None; // (glob after star, text at star, crosses '/')
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            let double = g.get(gi + 1) == Some(&b'*');
            gi += if double { 2 } else { 1 };
            star = Some((gi, ti, double));
            continue;
        }
        if gi < g.len() && (g[gi] == t[ti] || (g[gi] == b'?' && t[ti] != b'/')) {
            gi += 1;
            ti += 1;
            continue;
        }
        match star {
            Some((after, at, crosses)) if crosses || t[at] != b'/' => {
                star = Some((after, at + 1, crosses));
                gi = after;
                ti = at + 1;
            }
            _ => return false,
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn stars_match_within_or_across_components() {
        for (glob, text, want) in [
            (
                "registry.example.com/prod/*",
                "registry.example.com/prod/app:1",
                true,
            ),
            (
                "registry.example.com/prod/*",
                "registry.example.com/prod/team/app:1",
                false,
            ),
            (
                "registry.example.com/prod/**",
                "registry.example.com/prod/team/app:1",
                true,
            ),
            (
                "registry.example.com/prod/*",
                "registry.example.com/production/app",
                false,
            ),
            ("*", "alpine", true),
            ("*", "docker.io/library/alpine:latest", false),
            ("**", "docker.io/library/alpine:latest", true),
            (
                "docker.io/library/alpine:3.?",
                "docker.io/library/alpine:3.2",
                true,
            ),
            ("layerguard.test/*:1", "layerguard.test/app:1", true),
            ("layerguard.test/*:1", "layerguard.test/app:2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(glob, text), want, "{glob} vs {text}");
        }
        // A hostile reference does not make matching explode.
        let long = "a".repeat(5000);
        assert!(!glob_matches("*a*a*a*a*a*a*b", &long));
    }
}
