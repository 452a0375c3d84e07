//! Local files → literals: what the task left in its outputs folder, read
//! per the output interface, with blobs uploaded under the raw output
//! prefix. `_ERROR` in the folder turns into a user error document instead.
//!
//! Layout read (per output variable `v` of the interface):
//! - simple types: the file `v`, or the single `v.*` file; trimmed text
//!   parsed per type (`BINARY` taken as raw bytes);
//! - blob: a file (SINGLE) or a directory (MULTIPART, nested paths kept);
//!   schema: a directory; structured dataset: a file or a directory;
//! - collection: a directory of `0..n-1` (each may carry an extension);
//!   map: a directory whose entry names are the keys;
//! - union: the one variant the files fit (an absent file fits `none`);
//!   an ambiguous fit is an error.
//!
//! Nothing outside the folder is read: symlinks must resolve inside it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::{StreamExt as _, TryStreamExt as _};

use super::{
    error_document::{ErrorKind, ErrorOrigin, error_document},
    make,
    names::{self, NameError},
    types::describe_type,
    values::{self, ValueError},
};
use crate::{
    proto::core::{
        Binary, Error as ErrorValue, ErrorDocument, Literal, LiteralMap, LiteralType, Primitive, Schema, SimpleType,
        StructuredDataset, StructuredDatasetMetadata, TypedInterface, Union, Void, blob_type::BlobDimensionality,
        literal_type::Type as T, primitive, scalar,
    },
    storage::{Progress, Store, StorageError, join_url},
};

/// The file a task writes to report its own failure.
pub const ERROR_FILE: &str = "_ERROR";
/// Tag `flyte-copilot` gives binary outputs.
pub const BINARY_TAG: &str = "msgpack";

/// Size and count limits for what is read from the outputs folder.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// A simple value's file (integer, string, struct JSON…).
    pub max_value_bytes: u64,
    /// The `_ERROR` file.
    pub max_error_bytes: u64,
    /// One blob file.
    pub max_blob_bytes: u64,
    /// Files in all multipart outputs together.
    pub max_files: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_error_bytes: 1024 * 1024,
            max_blob_bytes: 5 * 1024 * 1024 * 1024 * 1024,
            max_files: 1_000_000,
        }
    }
}

/// What the outputs folder held.
#[derive(Debug, Clone, PartialEq)]
pub enum Collected {
    /// The outputs, blob URIs pointing at the uploaded objects.
    Outputs(LiteralMap),
    /// The task wrote `_ERROR`: a user error (NON_RECOVERABLE, origin USER).
    UserError(ErrorDocument),
}

/// Why outputs could not be collected; names the output and the path.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("output {var}: nothing at {path} (nor a single {path}.* file)")]
    Missing { var: String, path: PathBuf },
    #[error("output {var}: more than one file matches {path}.*: {matches:?}")]
    AmbiguousFile { var: String, path: PathBuf, matches: Vec<String> },
    #[error("output {var}: {path} is a {found}, expected {expected}")]
    WrongKind { var: String, path: PathBuf, found: &'static str, expected: String },
    #[error("output {var}: {path} is {size} bytes, more than the {limit} allowed")]
    TooLarge { var: String, path: PathBuf, size: u64, limit: u64 },
    #[error("output {var}: {path} is not valid {what}")]
    Parse {
        var: String,
        path: PathBuf,
        what: String,
        #[source]
        source: ValueError,
    },
    #[error("output {var}: {path} is not UTF-8 text")]
    NotText { var: String, path: PathBuf },
    #[error("output {var}: {path} is a symlink that leads outside the outputs folder {root}")]
    Escapes { var: String, path: PathBuf, root: PathBuf },
    #[error("output {var}: refused name")]
    Name {
        var: String,
        #[source]
        source: NameError,
    },
    #[error("output {var}: {path} has a name that is not UTF-8")]
    NonUtf8Name { var: String, path: PathBuf },
    #[error("output {var}: the collection in {path} is missing item {index} (items must be 0..n-1)")]
    CollectionGap { var: String, path: PathBuf, index: usize },
    #[error("output {var}: {path} fits none of the union's variants ({variants})")]
    UnionNoMatch { var: String, path: PathBuf, variants: String },
    #[error("output {var}: {path} fits more than one of the union's variants ({variants})")]
    UnionAmbiguous { var: String, path: PathBuf, variants: String },
    #[error("output {var}: {value:?} is not one of the enum values {values:?}")]
    EnumValue { var: String, value: String, values: Vec<String> },
    #[error("output {var}: type {what} cannot be read from files")]
    Unsupported { var: String, what: String },
    #[error("the outputs hold more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("the _ERROR file {path} is {problem}")]
    BadErrorFile { path: PathBuf, problem: String },
    #[error("output {var}: cannot upload {path} to {url:?}")]
    Storage {
        var: String,
        path: PathBuf,
        url: String,
        #[source]
        source: StorageError,
    },
    #[error("{op} {path}")]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file to upload.
#[derive(Debug, Clone)]
struct Upload {
    var: String,
    src: PathBuf,
    url: String,
}

struct Collector<'a> {
    root: PathBuf,
    limits: &'a UploadLimits,
    uploads: Vec<Upload>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    File(u64),
    Dir,
}

/// Reads the outputs in `dir` per `interface.outputs`, uploads blobs under
/// `raw_prefix` (`<raw_prefix>/<var>[/…]`), and returns the output literals,
/// or the user's error document if the task wrote `_ERROR`.
pub async fn collect_outputs(
    dir: &Path,
    interface: &TypedInterface,
    store: &Store,
    raw_prefix: &str,
    limits: &UploadLimits,
    progress: &Arc<Progress>,
) -> Result<Collected, UploadError> {
    let root = std::fs::canonicalize(dir).map_err(|source| UploadError::Local { op: "open the outputs folder", path: dir.to_path_buf(), source })?;
    if let Some(doc) = read_user_error(&root, limits)? {
        return Ok(Collected::UserError(doc));
    }
    let mut collector = Collector { root: root.clone(), limits, uploads: Vec::new() };
    let mut outputs = LiteralMap::default();
    let variables: BTreeMap<&String, _> =
        interface.outputs.iter().flat_map(|o| o.variables.iter()).collect();
    for (name, variable) in variables {
        let path = names::join_component(&root, name).map_err(|source| UploadError::Name { var: name.clone(), source })?;
        let ty = variable.r#type.clone().unwrap_or_default();
        let lit = collector.literal(name, &path, &ty, &join_url(raw_prefix, name))?;
        outputs.literals.insert(name.clone(), lit);
    }
    let uploads = std::mem::take(&mut collector.uploads);
    let concurrency = store.config().max_concurrency;
    futures::stream::iter(uploads.into_iter().map(|u| {
        let progress = progress.clone();
        async move {
            store.upload_file(&u.src, &u.url, &progress).await.map_err(|source| UploadError::Storage {
                var: u.var.clone(),
                path: u.src.clone(),
                url: u.url.clone(),
                source,
            })
        }
    }))
    .buffer_unordered(concurrency)
    .try_for_each(|_| async { Ok(()) })
    .await?;
    Ok(Collected::Outputs(outputs))
}

/// The `_ERROR` file as a user error document, if the task wrote one.
pub fn read_user_error(root: &Path, limits: &UploadLimits) -> Result<Option<ErrorDocument>, UploadError> {
    let path = root.join(ERROR_FILE);
    let bad = |problem: String| UploadError::BadErrorFile { path: path.clone(), problem };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("unreadable: {e}"))),
    };
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > limits.max_error_bytes {
        return Err(bad(format!("{} bytes, more than {}", meta.len(), limits.max_error_bytes)));
    }
    let bytes = std::fs::read(&path).map_err(|e| bad(format!("unreadable: {e}")))?;
    let message = String::from_utf8_lossy(&bytes).trim().to_owned();
    Ok(Some(error_document("UserError", &message, ErrorKind::NonRecoverable, ErrorOrigin::User)))
}

impl Collector<'_> {
    /// What is at `path`, following a symlink only if it stays inside the root.
    fn stat(&self, var: &str, path: &Path) -> Result<Option<(PathBuf, Kind)>, UploadError> {
        let local = |source| UploadError::Local { op: "inspect", path: path.to_path_buf(), source };
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(local(e)),
        };
        let (real, meta) = if meta.file_type().is_symlink() {
            let real = match std::fs::canonicalize(path) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(local(e)),
            };
            if !real.starts_with(&self.root) {
                return Err(UploadError::Escapes { var: var.to_owned(), path: path.to_path_buf(), root: self.root.clone() });
            }
            let meta = std::fs::metadata(&real).map_err(local)?;
            (real, meta)
        } else {
            (path.to_path_buf(), meta)
        };
        if meta.is_dir() {
            Ok(Some((real, Kind::Dir)))
        } else if meta.is_file() {
            Ok(Some((real, Kind::File(meta.len()))))
        } else {
            Err(UploadError::WrongKind { var: var.to_owned(), path: path.to_path_buf(), found: "special file", expected: "a file or directory".into() })
        }
    }

    /// `path` itself, or else the single `path.*` sibling.
    fn find(&self, var: &str, path: &Path) -> Result<Option<(PathBuf, Kind)>, UploadError> {
        if let Some(found) = self.stat(var, path)? {
            return Ok(Some(found));
        }
        let (Some(parent), Some(stem)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
            return Ok(None);
        };
        let prefix = format!("{stem}.");
        let mut matches = Vec::new();
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(UploadError::Local { op: "list", path: parent.to_path_buf(), source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| UploadError::Local { op: "list", path: parent.to_path_buf(), source })?;
            if let Some(name) = entry.file_name().to_str() {
                if name.starts_with(&prefix) && !name.starts_with(".copilot-") {
                    matches.push(name.to_owned());
                }
            }
        }
        match matches.len() {
            0 => Ok(None),
            1 => self.stat(var, &parent.join(&matches[0])),
            _ => {
                matches.sort();
                Err(UploadError::AmbiguousFile { var: var.to_owned(), path: path.to_path_buf(), matches })
            }
        }
    }

    fn require(&self, var: &str, path: &Path) -> Result<(PathBuf, Kind), UploadError> {
        self.find(var, path)?.ok_or_else(|| UploadError::Missing { var: var.to_owned(), path: path.to_path_buf() })
    }

    fn read_text(&self, var: &str, path: &Path, what: &str) -> Result<(PathBuf, Vec<u8>), UploadError> {
        let (real, kind) = self.require(var, path)?;
        let Kind::File(size) = kind else {
            return Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "directory", expected: format!("a file holding {what}") });
        };
        if size > self.limits.max_value_bytes {
            return Err(UploadError::TooLarge { var: var.to_owned(), path: real, size, limit: self.limits.max_value_bytes });
        }
        let bytes = std::fs::read(&real).map_err(|source| UploadError::Local { op: "read", path: real.clone(), source })?;
        Ok((real, bytes))
    }

    fn literal(&mut self, var: &str, path: &Path, ty: &LiteralType, url: &str) -> Result<Literal, UploadError> {
        let unsupported = |what: String| UploadError::Unsupported { var: var.to_owned(), what };
        match &ty.r#type {
            None => Err(unsupported("with no type".into())),
            Some(T::Simple(s)) => {
                let simple = SimpleType::try_from(*s).map_err(|_| unsupported(format!("simple type {s}")))?;
                self.simple(var, path, simple)
            }
            Some(T::EnumType(e)) => {
                let lit = self.simple(var, path, SimpleType::String)?;
                let value = match lit.value.as_ref() {
                    Some(crate::proto::core::literal::Value::Scalar(s)) => match &s.value {
                        Some(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::StringValue(v)) })) => v.clone(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                if e.values.is_empty() || e.values.contains(&value) {
                    Ok(lit)
                } else {
                    Err(UploadError::EnumValue { var: var.to_owned(), value, values: e.values.clone() })
                }
            }
            Some(T::Blob(bt)) => {
                let (real, kind) = self.require(var, path)?;
                let declared_multipart = bt.dimensionality == BlobDimensionality::Multipart as i32;
                match (kind, declared_multipart) {
                    (Kind::File(size), false) => {
                        self.check_blob_size(var, &real, size)?;
                        self.uploads.push(Upload { var: var.to_owned(), src: real, url: url.to_owned() });
                        Ok(make::blob(url, bt.format.clone(), false))
                    }
                    (Kind::Dir, true) => {
                        self.directory(var, &real, url)?;
                        Ok(make::blob(url, bt.format.clone(), true))
                    }
                    (Kind::File(_), true) => Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "file", expected: "a directory (multipart blob)".into() }),
                    (Kind::Dir, false) => Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "directory", expected: "a file (single blob)".into() }),
                }
            }
            Some(T::Schema(st)) => {
                let (real, kind) = self.require(var, path)?;
                if kind != Kind::Dir {
                    return Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "file", expected: "a directory (schema)".into() });
                }
                self.directory(var, &real, url)?;
                Ok(make::scalar_literal(scalar::Value::Schema(Schema { uri: url.to_owned(), r#type: Some(st.clone()) })))
            }
            Some(T::StructuredDatasetType(sdt)) => {
                let (real, kind) = self.require(var, path)?;
                match kind {
                    Kind::Dir => self.directory(var, &real, url)?,
                    Kind::File(size) => {
                        self.check_blob_size(var, &real, size)?;
                        self.uploads.push(Upload { var: var.to_owned(), src: real, url: url.to_owned() });
                    }
                }
                Ok(make::scalar_literal(scalar::Value::StructuredDataset(StructuredDataset {
                    uri: url.to_owned(),
                    metadata: Some(StructuredDatasetMetadata { structured_dataset_type: Some(sdt.clone()) }),
                })))
            }
            Some(T::CollectionType(inner)) => {
                let (real, kind) = self.require(var, path)?;
                if kind != Kind::Dir {
                    return Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "file", expected: "a directory of items 0..n-1 (collection)".into() });
                }
                let count = self.count_items(var, &real)?;
                let mut items = Vec::with_capacity(count);
                for i in 0..count {
                    let item_var = format!("{var}[{i}]");
                    let item_path = real.join(i.to_string());
                    if self.find(&item_var, &item_path)?.is_none() {
                        return Err(UploadError::CollectionGap { var: var.to_owned(), path: real, index: i });
                    }
                    items.push(self.literal(&item_var, &item_path, inner, &join_url(url, &i.to_string()))?);
                }
                Ok(make::collection(items))
            }
            Some(T::MapValueType(inner)) => {
                let (real, kind) = self.require(var, path)?;
                if kind != Kind::Dir {
                    return Err(UploadError::WrongKind { var: var.to_owned(), path: real, found: "file", expected: "a directory of keys (map)".into() });
                }
                let mut items = Vec::new();
                for name in self.entry_names(var, &real)? {
                    let item_var = format!("{var}[{name:?}]");
                    let item_path = real.join(&name);
                    items.push((name.clone(), self.literal(&item_var, &item_path, inner, &join_url(url, &name))?));
                }
                Ok(make::map(items))
            }
            Some(T::UnionType(union)) => {
                let fits: Vec<&LiteralType> = union.variants.iter().filter(|v| self.fits(var, path, v)).collect();
                let describe = || union.variants.iter().map(describe_type).collect::<Vec<_>>().join(", ");
                match fits.as_slice() {
                    [] => Err(UploadError::UnionNoMatch { var: var.to_owned(), path: path.to_path_buf(), variants: describe() }),
                    [one] => {
                        let value = self.literal(var, path, one, url)?;
                        Ok(make::scalar_literal(scalar::Value::Union(Box::new(Union {
                            value: Some(Box::new(value)),
                            r#type: Some((*one).clone()),
                        }))))
                    }
                    _ => Err(UploadError::UnionAmbiguous { var: var.to_owned(), path: path.to_path_buf(), variants: describe() }),
                }
            }
        }
    }

    /// Whether the files at `path` fit `ty` (for choosing a union variant).
    fn fits(&self, var: &str, path: &Path, ty: &LiteralType) -> bool {
        let found = self.find(var, path).ok().flatten();
        match (&ty.r#type, found) {
            (Some(T::Simple(s)), None) => *s == SimpleType::None as i32,
            (Some(T::Simple(s)), Some((real, Kind::File(size)))) => {
                let Ok(simple) = SimpleType::try_from(*s) else { return false };
                simple != SimpleType::None
                    && size <= self.limits.max_value_bytes
                    && std::fs::read(&real).ok().is_some_and(|bytes| parse_simple(simple, &bytes).is_ok())
            }
            (Some(T::EnumType(e)), Some((real, Kind::File(size)))) => {
                size <= self.limits.max_value_bytes
                    && std::fs::read_to_string(&real).ok().is_some_and(|t| e.values.iter().any(|v| v == t.trim()))
            }
            (Some(T::Blob(bt)), Some((_, kind))) => (bt.dimensionality == BlobDimensionality::Multipart as i32) == (kind == Kind::Dir),
            (Some(T::Schema(_) | T::CollectionType(_) | T::MapValueType(_)), Some((_, Kind::Dir))) => true,
            (Some(T::StructuredDatasetType(_)), Some(_)) => true,
            _ => false,
        }
    }

    fn simple(&mut self, var: &str, path: &Path, simple: SimpleType) -> Result<Literal, UploadError> {
        if simple == SimpleType::None {
            return Ok(make::scalar_literal(scalar::Value::NoneType(Void {})));
        }
        let what = simple.as_str_name().to_ascii_lowercase();
        let (real, bytes) = self.read_text(var, path, &what)?;
        parse_simple(simple, &bytes).map_err(|e| match e {
            SimpleParseError::NotText => UploadError::NotText { var: var.to_owned(), path: real },
            SimpleParseError::Value(source) => UploadError::Parse { var: var.to_owned(), path: real, what, source },
        })
    }

    fn check_blob_size(&self, var: &str, path: &Path, size: u64) -> Result<(), UploadError> {
        if size > self.limits.max_blob_bytes {
            return Err(UploadError::TooLarge { var: var.to_owned(), path: path.to_path_buf(), size, limit: self.limits.max_blob_bytes });
        }
        Ok(())
    }

    /// Sorted entry names of a directory, each a checked component.
    fn entry_names(&self, var: &str, dir: &Path) -> Result<Vec<String>, UploadError> {
        let list_err = |source| UploadError::Local { op: "list", path: dir.to_path_buf(), source };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name().into_string().map_err(|_| UploadError::NonUtf8Name { var: var.to_owned(), path: entry.path() })?;
            names::check_component(&name).map_err(|source| UploadError::Name { var: var.to_owned(), source })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// Items of a collection directory: entries named `<i>` or `<i>.<ext>`.
    fn count_items(&self, var: &str, dir: &Path) -> Result<usize, UploadError> {
        let mut max: Option<usize> = None;
        for name in self.entry_names(var, dir)? {
            let stem = name.split('.').next().unwrap_or_default();
            if let Ok(i) = stem.parse::<usize>() {
                max = Some(max.map_or(i, |m| m.max(i)));
            }
        }
        Ok(max.map_or(0, |m| m + 1))
    }

    /// Queues every file below `dir` for upload to `url/<relative path>`.
    fn directory(&mut self, var: &str, dir: &Path, url: &str) -> Result<(), UploadError> {
        let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
        while let Some((current, rel, depth)) = stack.pop() {
            if depth > names::MAX_DEPTH {
                return Err(UploadError::Name { var: var.to_owned(), source: NameError::TooDeep { key: rel, depth } });
            }
            for name in self.entry_names(var, &current)? {
                let child = current.join(&name);
                let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                match self.stat(var, &child)? {
                    None => {}
                    Some((real, Kind::Dir)) => stack.push((real, child_rel, depth + 1)),
                    Some((real, Kind::File(size))) => {
                        self.check_blob_size(var, &real, size)?;
                        if self.uploads.len() >= self.limits.max_files {
                            return Err(UploadError::TooManyFiles { limit: self.limits.max_files });
                        }
                        self.uploads.push(Upload { var: var.to_owned(), src: real, url: join_url(url, &child_rel) });
                    }
                }
            }
        }
        Ok(())
    }
}

enum SimpleParseError {
    NotText,
    Value(ValueError),
}

fn parse_simple(simple: SimpleType, bytes: &[u8]) -> Result<Literal, SimpleParseError> {
    if simple == SimpleType::Binary {
        return Ok(make::scalar_literal(scalar::Value::Binary(Binary { value: bytes.to_vec(), tag: BINARY_TAG.into() })));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SimpleParseError::NotText)?;
    let text = text.trim_matches([' ', '\n', '\t', '\r']);
    let v = SimpleParseError::Value;
    Ok(match simple {
        SimpleType::Integer => make::integer(values::parse_integer(text).map_err(v)?),
        SimpleType::Float => make::float(values::parse_float(text).map_err(v)?),
        SimpleType::Boolean => make::boolean(values::parse_boolean(text).map_err(v)?),
        SimpleType::String => make::string(text),
        SimpleType::Datetime => make::primitive_literal(primitive::Value::Datetime(values::parse_datetime(text).map_err(v)?)),
        SimpleType::Duration => make::primitive_literal(primitive::Value::Duration(values::parse_duration(text).map_err(v)?)),
        SimpleType::Struct => make::scalar_literal(scalar::Value::Generic(values::json_to_struct(text).map_err(v)?)),
        SimpleType::Error => make::scalar_literal(scalar::Value::Error(ErrorValue { failed_node_id: String::new(), message: text.to_owned() })),
        SimpleType::None | SimpleType::Binary => make::none(),
    })
}
