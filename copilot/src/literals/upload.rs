//! Local files → literals: what the task left in its outputs folder, read
//! per the output interface, with blobs uploaded under the raw output
//! prefix. (`_ERROR` is the sidecar's to read first: [`super::error_file`].)
//!
//! Layout read (per output variable `v` of the interface):
//! - simple types: the file `v`, or the single `v.*` file; trimmed text
//!   parsed per type (`BINARY` taken as raw bytes);
//! - blob: a file (SINGLE) or a directory (MULTIPART, nested paths kept);
//!   schema: a directory; structured dataset: a file or a directory;
//! - collection: a directory of items `0..n-1`, each named `<i>` or `<i>.<ext>`;
//!   anything else in it, a gap or two entries for one index is an error;
//! - map: a directory whose entry names are the keys;
//! - union: the one variant the files fit (an absent file fits `none`);
//!   an ambiguous fit is an error.
//!
//! The folder belongs to the task, whose processes may still run: every lookup is
//! descriptor-relative and kernel-checked ([`super::beneath`]), so nothing outside
//! the folder is ever read, and what was checked is what is uploaded. Each local
//! name becomes one object-key segment unchanged ([`crate::storage::key`]): a
//! name a URL would alter is refused, never renamed or merged with another.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::{StreamExt as _, TryStreamExt as _};

use super::{
    beneath::{Beneath, BeneathError, Node},
    make,
    names::{self, NameError},
    types::describe_type,
    values::{self, ValueError},
};
use crate::{
    proto::core::{
        Binary, Error as ErrorValue, Literal, LiteralMap, LiteralType, Primitive, Schema,
        SimpleType, StructuredDataset, StructuredDatasetMetadata, TypedInterface, Union, Void,
        blob_type::BlobDimensionality, literal_type::Type as T, primitive, scalar,
    },
    storage::{Progress, StorageError, Store},
};

pub use super::error_file::ERROR_FILE;
/// Tag `flyte-copilot` gives binary outputs.
pub const BINARY_TAG: &str = "msgpack";
/// The most items a collection folder may hold.
pub const MAX_ITEMS: usize = 1_000_000;

/// Size and count limits for what is read from the outputs folder.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// A simple value's file (integer, string, struct JSON…).
    pub max_value_bytes: u64,
    /// The `_ERROR` file: longer messages are cut.
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
            max_error_bytes: 64 * 1024,
            max_blob_bytes: 5 * 1024 * 1024 * 1024 * 1024,
            max_files: 1_000_000,
        }
    }
}

/// Why outputs could not be collected; names the output and the path.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("output {var}: nothing at {path} (nor a single {path}.* file)")]
    Missing { var: String, path: PathBuf },
    #[error("output {var}: more than one file matches {path}.*: {matches:?}")]
    AmbiguousFile {
        var: String,
        path: PathBuf,
        matches: Vec<String>,
    },
    #[error("output {var}: {path} is a {found}, expected {expected}")]
    WrongKind {
        var: String,
        path: PathBuf,
        found: &'static str,
        expected: String,
    },
    #[error("output {var}: {path} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        var: String,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
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
    Escapes {
        var: String,
        path: PathBuf,
        root: PathBuf,
    },
    #[error("output {var}: refused name")]
    Name {
        var: String,
        #[source]
        source: NameError,
    },
    #[error("output {var}: cannot be stored under the raw output prefix")]
    Key {
        var: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("output {var}: {path} has a name that is not UTF-8")]
    NonUtf8Name { var: String, path: PathBuf },
    #[error(
        "output {var}: the collection in {path} is missing item {index} (items must be 0..n-1)"
    )]
    CollectionGap {
        var: String,
        path: PathBuf,
        index: usize,
    },
    #[error(
        "output {var}: {path} is not a collection item (items are named <i> or <i>.<ext>, \
         i from 0 to n-1)"
    )]
    NotAnItem { var: String, path: PathBuf },
    #[error("output {var}: {first} and {second} are both item {index} of the collection")]
    DuplicateItem {
        var: String,
        first: PathBuf,
        second: PathBuf,
        index: usize,
    },
    #[error("output {var}: {path} fits none of the union's variants ({variants})")]
    UnionNoMatch {
        var: String,
        path: PathBuf,
        variants: String,
    },
    #[error("output {var}: {path} fits more than one of the union's variants ({variants})")]
    UnionAmbiguous {
        var: String,
        path: PathBuf,
        variants: String,
    },
    #[error("output {var}: {value:?} is not one of the enum values {values:?}")]
    EnumValue {
        var: String,
        value: String,
        values: Vec<String>,
    },
    #[error("output {var}: type {what} cannot be read from files")]
    Unsupported { var: String, what: String },
    #[error("the outputs hold more than {limit} files")]
    TooManyFiles { limit: usize },
    #[error("output {var}: cannot upload {path} to {url:?}")]
    Storage {
        var: String,
        path: PathBuf,
        url: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("output {var}: reading the outputs folder")]
    Local {
        var: String,
        #[source]
        source: BeneathError,
    },
}

/// One file to upload: where it is below the folder, and its URL.
#[derive(Debug, Clone)]
struct Upload {
    var: String,
    rel: PathBuf,
    url: String,
}

/// One output (or part of one) being read: its name in messages, its path
/// below the folder, and its key segments below the raw prefix.
#[derive(Debug, Clone)]
struct Place {
    var: String,
    rel: PathBuf,
    segments: Vec<String>,
}

impl Place {
    fn child(&self, var: String, name: &str, segment: String) -> Self {
        let mut segments = self.segments.clone();
        segments.push(segment);
        Self {
            var,
            rel: self.rel.join(name),
            segments,
        }
    }
}

struct Collector<'a> {
    tree: &'a Beneath,
    store: &'a Store,
    raw_prefix: &'a str,
    limits: &'a UploadLimits,
    uploads: Vec<Upload>,
}

/// Reads the outputs in `dir` per `interface.outputs`, uploads blobs under
/// `raw_prefix` (`<raw_prefix>/<var>[/…]`), and returns the output literals.
/// Every name is checked and every file opened before the first upload starts.
pub async fn collect_outputs(
    dir: &Path,
    interface: &TypedInterface,
    store: &Store,
    raw_prefix: &str,
    limits: &UploadLimits,
    progress: &Arc<Progress>,
) -> Result<LiteralMap, UploadError> {
    let tree = Beneath::open(dir).map_err(|source| UploadError::Local {
        var: "(all)".into(),
        source,
    })?;
    let mut collector = Collector {
        tree: &tree,
        store,
        raw_prefix,
        limits,
        uploads: Vec::new(),
    };
    let mut outputs = LiteralMap::default();
    let variables: BTreeMap<&String, _> = interface
        .outputs
        .iter()
        .flat_map(|o| o.variables.iter())
        .collect();
    for (name, variable) in variables {
        let rel =
            PathBuf::from(
                names::check_component(name).map_err(|source| UploadError::Name {
                    var: name.clone(),
                    source,
                })?,
            );
        let place = Place {
            var: name.clone(),
            rel,
            segments: vec![name.clone()],
        };
        let ty = variable.r#type.clone().unwrap_or_default();
        let lit = collector.literal(&place, &ty)?;
        outputs.literals.insert(name.clone(), lit);
    }
    let uploads = std::mem::take(&mut collector.uploads);
    upload_all(&tree, store, uploads, progress).await?;
    Ok(outputs)
}

async fn upload_all(
    tree: &Beneath,
    store: &Store,
    uploads: Vec<Upload>,
    progress: &Arc<Progress>,
) -> Result<(), UploadError> {
    let concurrency = store.config().max_concurrency.max(1);
    futures::stream::iter(uploads.into_iter().map(|u| {
        let progress = progress.clone();
        async move {
            let storage = |source| UploadError::Storage {
                var: u.var.clone(),
                path: tree.display(&u.rel),
                url: u.url.clone(),
                source: Box::new(source),
            };
            // Opened again, beneath the folder: what was checked may have been
            // replaced since, and the replacement is checked the same way.
            let Some((file, _)) = tree
                .open_file(&u.rel)
                .map_err(|source| UploadError::Local {
                    var: u.var.clone(),
                    source,
                })?
            else {
                return Err(UploadError::Missing {
                    var: u.var.clone(),
                    path: tree.display(&u.rel),
                });
            };
            store
                .upload_file(file, &tree.display(&u.rel), &u.url, &progress)
                .await
                .map_err(storage)
        }
    }))
    .buffer_unordered(concurrency)
    .try_for_each(|_| async { Ok(()) })
    .await
}

impl Collector<'_> {
    fn local(&self, place: &Place) -> impl Fn(BeneathError) -> UploadError {
        let var = place.var.clone();
        let root = self.tree.root().to_path_buf();
        move |source| match source {
            BeneathError::Escapes { path, .. } => UploadError::Escapes {
                var: var.clone(),
                path,
                root: root.clone(),
            },
            BeneathError::Special { path, found } => UploadError::WrongKind {
                var: var.clone(),
                path,
                found,
                expected: "a file or directory".into(),
            },
            source => UploadError::Local {
                var: var.clone(),
                source,
            },
        }
    }

    fn url(&self, place: &Place) -> Result<String, UploadError> {
        self.store
            .child(self.raw_prefix, &place.segments)
            .map_err(|source| UploadError::Key {
                var: place.var.clone(),
                source: Box::new(source),
            })
    }

    /// What is at `place`, following a symlink only if it stays inside the folder.
    fn stat(&self, place: &Place) -> Result<Option<Node>, UploadError> {
        self.tree.stat(&place.rel).map_err(self.local(place))
    }

    /// `place` itself, or else the single `place.*` sibling (the key stays `place`'s).
    fn find(&self, place: &Place) -> Result<Option<(Place, Node)>, UploadError> {
        if let Some(node) = self.stat(place)? {
            return Ok(Some((place.clone(), node)));
        }
        let (Some(parent), Some(stem)) = (
            place.rel.parent(),
            place.rel.file_name().and_then(|n| n.to_str()),
        ) else {
            return Ok(None);
        };
        let prefix = format!("{stem}.");
        let mut matches: Vec<String> = match self.tree.list(parent) {
            Ok(names) => names
                .into_iter()
                .filter_map(|n| n.into_string().ok())
                .filter(|n| n.starts_with(&prefix) && !n.starts_with(".copilot-"))
                .collect(),
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.local(place)(e)),
        };
        match matches.len() {
            0 => Ok(None),
            1 => {
                let found = Place {
                    rel: parent.join(&matches[0]),
                    ..place.clone()
                };
                Ok(self.stat(&found)?.map(|node| (found, node)))
            }
            _ => {
                matches.sort();
                Err(UploadError::AmbiguousFile {
                    var: place.var.clone(),
                    path: self.tree.display(&place.rel),
                    matches,
                })
            }
        }
    }

    fn require(&self, place: &Place) -> Result<(Place, Node), UploadError> {
        self.find(place)?.ok_or_else(|| UploadError::Missing {
            var: place.var.clone(),
            path: self.tree.display(&place.rel),
        })
    }

    fn wrong_kind(&self, place: &Place, found: &'static str, expected: &str) -> UploadError {
        UploadError::WrongKind {
            var: place.var.clone(),
            path: self.tree.display(&place.rel),
            found,
            expected: expected.to_owned(),
        }
    }

    /// The directory `place` must be, for `what`.
    fn require_dir(&self, place: &Place, what: &str) -> Result<Place, UploadError> {
        match self.require(place)? {
            (found, Node::Dir) => Ok(found),
            (found, Node::File(_)) => Err(self.wrong_kind(&found, "file", what)),
        }
    }

    fn read_text(&self, place: &Place, what: &str) -> Result<(PathBuf, Vec<u8>), UploadError> {
        let (found, node) = self.require(place)?;
        let path = self.tree.display(&found.rel);
        let Node::File(size) = node else {
            return Err(self.wrong_kind(&found, "directory", &format!("a file holding {what}")));
        };
        let limit = self.limits.max_value_bytes;
        let too_large = |size| UploadError::TooLarge {
            var: place.var.clone(),
            path: path.clone(),
            size,
            limit,
        };
        if size > limit {
            return Err(too_large(size));
        }
        match self
            .tree
            .read_prefix(&found.rel, limit)
            .map_err(self.local(place))?
        {
            Some((bytes, false)) => Ok((path, bytes)),
            // It grew between the two looks.
            Some((_, true)) => Err(too_large(limit + 1)),
            None => Err(UploadError::Missing {
                var: place.var.clone(),
                path,
            }),
        }
    }

    fn literal(&mut self, place: &Place, ty: &LiteralType) -> Result<Literal, UploadError> {
        let unsupported = |what: String| UploadError::Unsupported {
            var: place.var.clone(),
            what,
        };
        match &ty.r#type {
            None => Err(unsupported("with no type".into())),
            Some(T::Simple(s)) => {
                let simple = SimpleType::try_from(*s)
                    .map_err(|_| unsupported(format!("simple type {s}")))?;
                self.simple(place, simple)
            }
            Some(T::EnumType(e)) => self.enum_value(place, &e.values),
            Some(T::Blob(bt)) => {
                let multipart = bt.dimensionality == BlobDimensionality::Multipart as i32;
                let url = self.blob(place, multipart)?;
                Ok(make::blob(&url, bt.format.clone(), multipart))
            }
            Some(T::Schema(st)) => {
                let found = self.require_dir(place, "a directory (schema)")?;
                let url = self.url(place)?;
                self.directory(&found)?;
                Ok(make::scalar_literal(scalar::Value::Schema(Schema {
                    uri: url,
                    r#type: Some(st.clone()),
                })))
            }
            Some(T::StructuredDatasetType(sdt)) => {
                let url = match self.require(place)? {
                    (_, Node::Dir) => self.blob(place, true)?,
                    (_, Node::File(_)) => self.blob(place, false)?,
                };
                Ok(make::scalar_literal(scalar::Value::StructuredDataset(
                    StructuredDataset {
                        uri: url,
                        metadata: Some(StructuredDatasetMetadata {
                            structured_dataset_type: Some(sdt.clone()),
                        }),
                    },
                )))
            }
            Some(T::CollectionType(inner)) => self.collection(place, inner),
            Some(T::MapValueType(inner)) => self.map(place, inner),
            Some(T::UnionType(union)) => self.union(place, &union.variants),
        }
    }

    fn enum_value(&mut self, place: &Place, values: &[String]) -> Result<Literal, UploadError> {
        let lit = self.simple(place, SimpleType::String)?;
        let value = match lit.value.as_ref() {
            Some(crate::proto::core::literal::Value::Scalar(s)) => match &s.value {
                Some(scalar::Value::Primitive(Primitive {
                    value: Some(primitive::Value::StringValue(v)),
                })) => v.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        if values.is_empty() || values.contains(&value) {
            Ok(lit)
        } else {
            Err(UploadError::EnumValue {
                var: place.var.clone(),
                value,
                values: values.to_vec(),
            })
        }
    }

    /// Queues a blob (a file, or a directory when `multipart`); returns its URL.
    fn blob(&mut self, place: &Place, multipart: bool) -> Result<String, UploadError> {
        let (found, node) = self.require(place)?;
        let url = self.url(place)?;
        match (node, multipart) {
            (Node::File(size), false) => {
                self.check_blob_size(&found, size)?;
                self.uploads.push(Upload {
                    var: place.var.clone(),
                    rel: found.rel,
                    url: url.clone(),
                });
            }
            (Node::Dir, true) => self.directory(&found)?,
            (Node::File(_), true) => {
                return Err(self.wrong_kind(&found, "file", "a directory (multipart blob)"));
            }
            (Node::Dir, false) => {
                return Err(self.wrong_kind(&found, "directory", "a file (single blob)"));
            }
        }
        Ok(url)
    }

    fn collection(&mut self, place: &Place, inner: &LiteralType) -> Result<Literal, UploadError> {
        let dir = self.require_dir(place, "a directory of items 0..n-1 (collection)")?;
        let items = self.items(&dir)?;
        let mut literals = Vec::with_capacity(items.len());
        for (i, name) in items.iter().enumerate() {
            let item = dir.child(format!("{}[{i}]", place.var), name, i.to_string());
            literals.push(self.literal(&item, inner)?);
        }
        Ok(make::collection(literals))
    }

    fn map(&mut self, place: &Place, inner: &LiteralType) -> Result<Literal, UploadError> {
        let dir = self.require_dir(place, "a directory of keys (map)")?;
        let mut items = Vec::new();
        for name in self.entry_names(&dir)? {
            let item = dir.child(format!("{}[{name:?}]", place.var), &name, name.clone());
            items.push((name, self.literal(&item, inner)?));
        }
        Ok(make::map(items))
    }

    fn union(&mut self, place: &Place, variants: &[LiteralType]) -> Result<Literal, UploadError> {
        let fits: Vec<&LiteralType> = variants.iter().filter(|v| self.fits(place, v)).collect();
        let describe = || {
            variants
                .iter()
                .map(describe_type)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let path = self.tree.display(&place.rel);
        match fits.as_slice() {
            [] => Err(UploadError::UnionNoMatch {
                var: place.var.clone(),
                path,
                variants: describe(),
            }),
            [one] => {
                let value = self.literal(place, one)?;
                Ok(make::scalar_literal(scalar::Value::Union(Box::new(
                    Union {
                        value: Some(Box::new(value)),
                        r#type: Some((*one).clone()),
                    },
                ))))
            }
            _ => Err(UploadError::UnionAmbiguous {
                var: place.var.clone(),
                path,
                variants: describe(),
            }),
        }
    }

    /// Whether the files at `place` fit `ty` (for choosing a union variant).
    fn fits(&self, place: &Place, ty: &LiteralType) -> bool {
        let found = self.find(place).ok().flatten();
        let text = |found: &Place| {
            self.tree
                .read_prefix(&found.rel, self.limits.max_value_bytes)
                .ok()
                .flatten()
                .filter(|(_, longer)| !longer)
                .map(|(bytes, _)| bytes)
        };
        match (&ty.r#type, found) {
            (Some(T::Simple(s)), None) => *s == SimpleType::None as i32,
            (Some(T::Simple(s)), Some((found, Node::File(_)))) => {
                let Ok(simple) = SimpleType::try_from(*s) else {
                    return false;
                };
                simple != SimpleType::None
                    && text(&found).is_some_and(|bytes| parse_simple(simple, &bytes).is_ok())
            }
            (Some(T::EnumType(e)), Some((found, Node::File(_)))) => text(&found)
                .and_then(|b| String::from_utf8(b).ok())
                .is_some_and(|t| e.values.iter().any(|v| v == t.trim())),
            (Some(T::Blob(bt)), Some((_, node))) => {
                (bt.dimensionality == BlobDimensionality::Multipart as i32) == (node == Node::Dir)
            }
            (
                Some(T::Schema(_) | T::CollectionType(_) | T::MapValueType(_)),
                Some((_, Node::Dir)),
            ) => true,
            (Some(T::StructuredDatasetType(_)), Some(_)) => true,
            _ => false,
        }
    }

    fn simple(&mut self, place: &Place, simple: SimpleType) -> Result<Literal, UploadError> {
        if simple == SimpleType::None {
            return Ok(make::scalar_literal(scalar::Value::NoneType(Void {})));
        }
        let what = simple.as_str_name().to_ascii_lowercase();
        let (path, bytes) = self.read_text(place, &what)?;
        parse_simple(simple, &bytes).map_err(|e| match e {
            SimpleParseError::NotText => UploadError::NotText {
                var: place.var.clone(),
                path,
            },
            SimpleParseError::Value(source) => UploadError::Parse {
                var: place.var.clone(),
                path,
                what,
                source,
            },
        })
    }

    fn check_blob_size(&self, place: &Place, size: u64) -> Result<(), UploadError> {
        if size > self.limits.max_blob_bytes {
            return Err(UploadError::TooLarge {
                var: place.var.clone(),
                path: self.tree.display(&place.rel),
                size,
                limit: self.limits.max_blob_bytes,
            });
        }
        Ok(())
    }

    /// Sorted entry names of the directory at `place`, each a checked local name
    /// (copilot's own `.copilot-*` files left out).
    fn entry_names(&self, place: &Place) -> Result<Vec<String>, UploadError> {
        let mut names = Vec::new();
        for name in self.tree.list(&place.rel).map_err(self.local(place))? {
            let name = name.into_string().map_err(|raw| UploadError::NonUtf8Name {
                var: place.var.clone(),
                path: self.tree.display(&place.rel.join(raw)),
            })?;
            if name.starts_with(".copilot-") {
                continue;
            }
            names::check_component(&name).map_err(|source| UploadError::Name {
                var: place.var.clone(),
                source,
            })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// The entry names of a collection directory, in item order: each is `<i>` or
    /// `<i>.<ext>`, the indices are exactly `0..n`, each once.
    fn items(&self, dir: &Place) -> Result<Vec<String>, UploadError> {
        let names = self.entry_names(dir)?;
        if names.len() > MAX_ITEMS {
            return Err(UploadError::TooManyFiles { limit: MAX_ITEMS });
        }
        let mut slots: Vec<Option<String>> = vec![None; names.len()];
        for name in names {
            let path = || self.tree.display(&dir.rel.join(&name));
            let index = item_index(&name, slots.len()).ok_or_else(|| UploadError::NotAnItem {
                var: dir.var.clone(),
                path: path(),
            })?;
            if let Some(first) = &slots[index] {
                return Err(UploadError::DuplicateItem {
                    var: dir.var.clone(),
                    first: self.tree.display(&dir.rel.join(first)),
                    second: path(),
                    index,
                });
            }
            slots[index] = Some(name);
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                slot.ok_or_else(|| UploadError::CollectionGap {
                    var: dir.var.clone(),
                    path: self.tree.display(&dir.rel),
                    index,
                })
            })
            .collect()
    }

    /// Queues every file below the directory at `dir` for upload, each under its
    /// relative path's segments.
    fn directory(&mut self, dir: &Place) -> Result<(), UploadError> {
        let mut stack = vec![dir.clone()];
        while let Some(current) = stack.pop() {
            let depth = current.segments.len() - dir.segments.len();
            if depth > names::MAX_DEPTH {
                return Err(UploadError::Name {
                    var: dir.var.clone(),
                    source: NameError::TooDeep {
                        key: current.rel.display().to_string(),
                        depth,
                    },
                });
            }
            for name in self.entry_names(&current)? {
                let child = current.child(dir.var.clone(), &name, name.clone());
                match self.stat(&child)? {
                    None => {}
                    Some(Node::Dir) => stack.push(child),
                    Some(Node::File(size)) => self.queue_file(child, size)?,
                }
            }
        }
        Ok(())
    }

    fn queue_file(&mut self, file: Place, size: u64) -> Result<(), UploadError> {
        self.check_blob_size(&file, size)?;
        if self.uploads.len() >= self.limits.max_files {
            return Err(UploadError::TooManyFiles {
                limit: self.limits.max_files,
            });
        }
        let url = self.url(&file)?;
        self.uploads.push(Upload {
            var: file.var,
            rel: file.rel,
            url,
        });
        Ok(())
    }
}

/// The index an item name `<i>` or `<i>.<ext>` gives, if it is below `count`.
/// Digits only (no sign, no space), at most as many as `count` has, so a huge
/// number is refused without being parsed into a huge allocation.
fn item_index(name: &str, count: usize) -> Option<usize> {
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = stem.trim_start_matches('0');
    if digits.len() > count.to_string().len() {
        return None;
    }
    let index: usize = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    (index < count).then_some(index)
}

enum SimpleParseError {
    NotText,
    Value(ValueError),
}

fn parse_simple(simple: SimpleType, bytes: &[u8]) -> Result<Literal, SimpleParseError> {
    if simple == SimpleType::Binary {
        return Ok(make::scalar_literal(scalar::Value::Binary(Binary {
            value: bytes.to_vec(),
            tag: BINARY_TAG.into(),
        })));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SimpleParseError::NotText)?;
    let text = text.trim_matches([' ', '\n', '\t', '\r']);
    let v = SimpleParseError::Value;
    Ok(match simple {
        SimpleType::Integer => make::integer(values::parse_integer(text).map_err(v)?),
        SimpleType::Float => make::float(values::parse_float(text).map_err(v)?),
        SimpleType::Boolean => make::boolean(values::parse_boolean(text).map_err(v)?),
        SimpleType::String => make::string(text),
        SimpleType::Datetime => make::primitive_literal(primitive::Value::Datetime(
            values::parse_datetime(text).map_err(v)?,
        )),
        SimpleType::Duration => make::primitive_literal(primitive::Value::Duration(
            values::parse_duration(text).map_err(v)?,
        )),
        SimpleType::Struct => make::scalar_literal(scalar::Value::Generic(
            values::json_to_struct(text).map_err(v)?,
        )),
        SimpleType::Error => make::scalar_literal(scalar::Value::Error(ErrorValue {
            failed_node_id: String::new(),
            message: text.to_owned(),
        })),
        SimpleType::None | SimpleType::Binary => make::none(),
    })
}

#[cfg(test)]
mod tests {
    use super::item_index;

    #[test]
    fn item_names_are_bounded_indices() {
        assert_eq!(item_index("0", 1), Some(0));
        assert_eq!(item_index("1.txt", 2), Some(1));
        assert_eq!(item_index("00", 2), Some(0));
        assert_eq!(item_index("1", 1), None, "past the count");
        assert_eq!(item_index("18446744073709551615", 2), None);
        assert_eq!(item_index("100000000000", 3), None);
        assert_eq!(item_index("99999999999999999999999999", 3), None);
        for bad in ["", ".txt", "-1", "+1", " 1", "1a", "x", "README"] {
            assert_eq!(item_index(bad, 10), None, "{bad:?}");
        }
    }
}
