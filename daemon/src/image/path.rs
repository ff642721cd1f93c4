//! Paths inside an image: the one canonical spelling every index key uses, and the checks that
//! keep a hostile tar member name from pointing anywhere but inside the image.
//!
//! Canonical form: relative to the image root, `/`-separated, no empty, `.` or `..`
//! components, no leading or trailing slash (`usr/bin/env`). The root itself is `""`.
//! Pure string work: nothing here touches the host filesystem, ever.

/// Longest path we accept (Linux PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component we accept (Linux NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("contains a NUL byte")]
    Nul,
    #[error("is absolute")]
    Absolute,
    #[error("contains a `..` component")]
    DotDot,
    #[error("is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("has a component longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("is not valid UTF-8")]
    NotUtf8,
}

/// Canonicalizes a tar member name. `./a//b/` becomes `a/b`; `./` becomes the root `""`.
/// Absolute names and `..` are refused outright instead of being clamped: a layer that contains
/// them was not produced by any honest image builder.
pub fn normalize_member(raw: &[u8]) -> Result<String, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let text = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    if text.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let mut out = String::with_capacity(text.len());
    for component in text.split('/') {
        match component {
            "" | "." => continue,
            ".." => return Err(PathError::DotDot),
            c if c.len() > MAX_COMPONENT_BYTES => return Err(PathError::ComponentTooLong),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok(out)
}

/// Splits a canonical path into parent and final component (`a/b/c` -> (`a/b`, `c`)).
pub fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Joins a canonical parent and a component.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Every proper ancestor of a canonical path, outermost first (`a/b/c` -> `a`, `a/b`).
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Whether `path` is `dir` or lies below it. The root `""` contains everything.
pub fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_harmless_spellings() {
        assert_eq!(normalize_member(b"./usr//bin/env").unwrap(), "usr/bin/env");
        assert_eq!(normalize_member(b"usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalize_member(b"./").unwrap(), "");
        assert_eq!(normalize_member(b"a/./b").unwrap(), "a/b");
    }

    #[test]
    fn refuses_escapes_and_garbage() {
        assert_eq!(normalize_member(b"/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(normalize_member(b"../etc"), Err(PathError::DotDot));
        assert_eq!(normalize_member(b"a/../../etc"), Err(PathError::DotDot));
        assert_eq!(normalize_member(b"a/b/.."), Err(PathError::DotDot));
        assert_eq!(normalize_member(b"a\0b"), Err(PathError::Nul));
        assert_eq!(normalize_member(b"a/\xff"), Err(PathError::NotUtf8));
        assert_eq!(
            normalize_member(&vec![b'a'; MAX_PATH_BYTES + 1]),
            Err(PathError::TooLong)
        );
        assert_eq!(
            normalize_member(&vec![b'a'; MAX_COMPONENT_BYTES + 1]),
            Err(PathError::ComponentTooLong)
        );
    }

    #[test]
    fn path_helpers() {
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("c"), ("", "c"));
        assert_eq!(join("", "c"), "c");
        assert_eq!(join("a", "c"), "a/c");
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(!is_within("ab", "a"));
        assert!(is_within("x", ""));
    }
}
