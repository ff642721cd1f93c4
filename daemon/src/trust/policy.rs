//! Image reference globs of `[[trust.policy]]`.
//!
//! Owns matching only: `*` matches any run of characters within one path component (not
//! `/`), `**` any run at all, `?` one character that is not `/`. Nothing else is special.

/// True when `glob` matches the whole of `text`. Dynamic programming over (glob position,
/// text position): O(glob x text), whatever the stars, never exponential on hostile
/// references.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Token {
        Byte(u8),
        One,
        Star,
        DoubleStar,
    }
    let g = glob.as_bytes();
    let mut tokens = Vec::with_capacity(g.len());
    let mut i = 0;
    while i < g.len() {
        match g[i] {
            b'*' if g.get(i + 1) == Some(&b'*') => {
                tokens.push(Token::DoubleStar);
                i += 2;
            }
            b'*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            b'?' => {
                tokens.push(Token::One);
                i += 1;
            }
            c => {
                tokens.push(Token::Byte(c));
                i += 1;
            }
        }
    }
    let t = text.as_bytes();
    // row[j]: the tokens so far match t[..j].
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for token in tokens {
        let mut next = vec![false; t.len() + 1];
        match token {
            Token::Star | Token::DoubleStar => {
                let crosses = matches!(token, Token::DoubleStar);
                for j in 0..=t.len() {
                    next[j] = row[j] || (j > 0 && next[j - 1] && (crosses || t[j - 1] != b'/'));
                }
            }
            Token::One => {
                for j in 1..=t.len() {
                    next[j] = row[j - 1] && t[j - 1] != b'/';
                }
            }
            Token::Byte(c) => {
                for j in 1..=t.len() {
                    next[j] = row[j - 1] && t[j - 1] == c;
                }
            }
        }
        row = next;
    }
    row[t.len()]
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
            // A `**` followed by a `*` (found in review: a one-backtrack matcher lost the `**`).
            ("reg/**/*", "reg/a/b/c:1", true),
            (
                "registry.example.com/**/*:1",
                "registry.example.com/prod/team/app:1",
                true,
            ),
            ("reg/**/b*", "reg/x/bq/by", true),
            ("reg/**/b*", "reg/x/bq/cy", false),
            ("reg/*/b", "reg/x/y/b", false),
        ] {
            assert_eq!(glob_matches(glob, text), want, "{glob} vs {text}");
        }
        // A hostile reference does not make matching explode.
        let long = "a".repeat(5000);
        assert!(!glob_matches("*a*a*a*a*a*a*b", &long));
    }
}
