//! Object keys made from local names. One local name is one key segment, written
//! into the URL verbatim, so the URL in `outputs.pb` names the very object that
//! was written, for copilot and for every other reader (flytekit's fsspec takes
//! the key from the URL as it is; object_store percent-decodes it).
//!
//! A name whose text a URL would change is refused rather than rewritten: `%`
//! (decoded: `pct%41` would become `pctA`, `%2e%2e` would become `..`), `#` and
//! `?` (a fragment or query: `a#1` would become `a`), control characters (a URL
//! parser drops tabs and newlines), `\` (a separator to URL parsers), `/`, and the
//! dot segments. The mapping is therefore one-to-one, and [`Store::child`] checks
//! each URL it builds against the key it must name, so whatever this list misses
//! is still refused, never written elsewhere.
//!
//! [`Store::child`]: super::Store::child

/// Why a name cannot be one segment of an object key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("name {name:?} is empty")]
    Empty { name: String },
    #[error("name {name:?} is `.` or `..`, which would leave its prefix")]
    Dot { name: String },
    #[error(
        "name {name:?} holds {ch:?}, which a storage URL cannot carry unchanged; \
         rename it (names may not hold / \\ % # ? or control characters)"
    )]
    Char { name: String, ch: char },
    #[error("name {name:?} is {len} bytes long, more than the {MAX_SEGMENT_BYTES} allowed")]
    TooLong { name: String, len: usize },
    #[error(
        "{url:?} does not name the object {expected:?} below the prefix; \
         one of the names {segments:?} cannot be an object key unchanged"
    )]
    NotUnder {
        url: String,
        expected: String,
        segments: Vec<String>,
    },
}

/// The longest key segment (a file name's limit on Linux).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Checks that `name` can be one key segment, unchanged.
pub fn check_segment(name: &str) -> Result<&str, KeyError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(KeyError::Empty { name: owned() });
    }
    if name == "." || name == ".." {
        return Err(KeyError::Dot { name: owned() });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '%' | '#' | '?') || c.is_control())
    {
        return Err(KeyError::Char { name: owned(), ch });
    }
    if name.len() > MAX_SEGMENT_BYTES {
        return Err(KeyError::TooLong {
            name: owned(),
            len: name.len(),
        });
    }
    Ok(name)
}

/// `prefix/segment/…` as text, every segment checked (the URL is then verified
/// by [`Store::child`](super::Store::child)).
pub fn child_url<S: AsRef<str>>(prefix: &str, segments: &[S]) -> Result<String, KeyError> {
    let mut url = prefix.trim_end_matches('/').to_owned();
    for segment in segments {
        url.push('/');
        url.push_str(check_segment(segment.as_ref())?);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_kept_verbatim() {
        assert_eq!(
            child_url("s3://b/p/", &["m", "sp ace", "naïve.csv", "..x"]).unwrap(),
            "s3://b/p/m/sp ace/naïve.csv/..x"
        );
    }

    #[test]
    fn names_a_url_would_change_are_refused() {
        for (name, ch) in [
            ("%2e%2e", '%'),
            ("pct%41", '%'),
            ("a#1", '#'),
            ("q?x=1", '?'),
            ("nl\nname", '\n'),
            ("tab\t", '\t'),
            ("a\\b", '\\'),
            ("a/b", '/'),
            ("del\u{7f}", '\u{7f}'),
        ] {
            assert_eq!(
                check_segment(name),
                Err(KeyError::Char {
                    name: name.into(),
                    ch
                }),
                "{name:?}"
            );
        }
        assert!(matches!(check_segment(".."), Err(KeyError::Dot { .. })));
        assert!(matches!(check_segment(""), Err(KeyError::Empty { .. })));
        assert!(matches!(
            check_segment(&"x".repeat(256)),
            Err(KeyError::TooLong { len: 256, .. })
        ));
    }
}
