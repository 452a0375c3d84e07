//! Names that become paths: variable names, map keys, collection entries,
//! blob basenames and multipart keys. A name never escapes the directory it
//! is joined to: `..`, `.`, empty names, absolute paths, separators inside a
//! single component, NUL and overly long names are rejected.
use std::path::{Path, PathBuf};

/// The longest file name most Linux filesystems accept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// The most components a multipart key may have.
pub const MAX_DEPTH: usize = 64;

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name {name:?} is empty")]
    Empty { name: String },
    #[error("name {name:?} is `.` or `..`, which would leave its directory")]
    DotName { name: String },
    #[error("name {name:?} contains a path separator")]
    Separator { name: String },
    #[error("name {name:?} contains a NUL byte")]
    Nul { name: String },
    #[error("name {name:?} is {len} bytes long, more than the {MAX_NAME_BYTES} a file name may have")]
    TooLong { name: String, len: usize },
    #[error("key {key:?} is absolute; it must be relative to its prefix")]
    Absolute { key: String },
    #[error("key {key:?} has {depth} levels, more than {MAX_DEPTH}")]
    TooDeep { key: String, depth: usize },
    #[error("name {name:?} is reserved for copilot's own files")]
    Reserved { name: String },
}

/// Checks that `name` is a single, harmless path component.
pub fn check_component(name: &str) -> Result<&str, NameError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(NameError::Empty { name: owned() });
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName { name: owned() });
    }
    if name.contains('\0') {
        return Err(NameError::Nul { name: owned() });
    }
    if name.contains('/') || name.contains('\\') {
        return Err(NameError::Separator { name: owned() });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { name: owned(), len: name.len() });
    }
    Ok(name)
}

/// `dir/name` once `name` has passed [`check_component`].
pub fn join_component(dir: &Path, name: &str) -> Result<PathBuf, NameError> {
    Ok(dir.join(check_component(name)?))
}

/// Checks a `/`-separated relative key (a multipart blob's object below its
/// prefix) and returns it as a relative path whose every component passed
/// [`check_component`].
pub fn check_relative_key(key: &str) -> Result<PathBuf, NameError> {
    if key.starts_with('/') {
        return Err(NameError::Absolute { key: key.to_owned() });
    }
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(NameError::TooDeep { key: key.to_owned(), depth: parts.len() });
    }
    let mut path = PathBuf::new();
    for part in parts {
        path.push(check_component(part)?);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        assert_eq!(check_component("x"), Ok("x"));
        assert_eq!(check_component("my_input.csv"), Ok("my_input.csv"));
        assert_eq!(check_component("..hidden"), Ok("..hidden"));
    }

    #[test]
    fn escaping_names_are_refused() {
        assert!(matches!(check_component(""), Err(NameError::Empty { .. })));
        assert!(matches!(check_component(".."), Err(NameError::DotName { .. })));
        assert!(matches!(check_component("."), Err(NameError::DotName { .. })));
        assert!(matches!(check_component("../etc"), Err(NameError::Separator { .. })));
        assert!(matches!(check_component("/etc"), Err(NameError::Separator { .. })));
        assert!(matches!(check_component("a\\b"), Err(NameError::Separator { .. })));
        assert!(matches!(check_component("a\0b"), Err(NameError::Nul { .. })));
        let long = "a".repeat(256);
        assert!(matches!(check_component(&long), Err(NameError::TooLong { len: 256, .. })));
    }

    #[test]
    fn relative_keys_keep_nesting_and_refuse_escapes() {
        assert_eq!(check_relative_key("a/b/c.txt"), Ok(PathBuf::from("a/b/c.txt")));
        assert!(matches!(check_relative_key("/abs"), Err(NameError::Absolute { .. })));
        assert!(matches!(check_relative_key("a/../../x"), Err(NameError::DotName { .. })));
        assert!(matches!(check_relative_key("a//b"), Err(NameError::Empty { .. })));
        let deep = vec!["d"; 65].join("/");
        assert!(matches!(check_relative_key(&deep), Err(NameError::TooDeep { .. })));
    }
}
