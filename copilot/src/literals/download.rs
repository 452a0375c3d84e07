//! Literal → local files: materialises a task's input LiteralMap in a
//! directory the way `flyte-copilot download` does, and writes the metadata
//! (`inputs.pb` with blob URIs rewritten to local paths, plus `inputs.json`
//! or `inputs.yaml`).
//!
//! Work happens in three steps: offloaded literals are fetched; a pure
//! [`plan`] turns the literals into directories, small files and transfers
//! (all names checked); the plan runs inside a staging directory next to
//! the target, and only a complete result is renamed into place, metadata
//! last. A failure leaves the target directory as it was.
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _};
use prost::Message as _;

use super::{
    budget::{Budget, Message as WireMessage, OverBudget},
    names::{self, NameError},
    values::{self, ValueError},
};
use crate::{
    proto::core::{
        Blob, BlobMetadata, Literal, LiteralCollection, LiteralMap, Primitive, Schema,
        StructuredDataset, Union, blob_type::BlobDimensionality, literal, primitive, scalar,
    },
    storage::{Progress, StorageError, Store, is_local_file},
};

/// The metadata file names, as Flyte's pod plugin expects them.
pub const INPUTS_PB: &str = "inputs.pb";
pub const INPUTS_JSON: &str = "inputs.json";
pub const INPUTS_YAML: &str = "inputs.yaml";
/// How deep offloaded literals may point at further offloaded literals.
pub const MAX_OFFLOAD_DEPTH: usize = 4;

/// How single-file inputs are laid out (FlyteIDL `DataLoadingConfig.FileInputLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// `<var>` is the file itself; collection items are `<var>/<i>`.
    #[default]
    #[value(name = "DIRECT")]
    Direct,
    /// A single blob goes to `<var>/<basename>`; collection blobs keep their
    /// basenames (`<i>_<basename>` on a collision).
    #[value(name = "NAMED_DIR")]
    NamedDir,
}

/// Which metadata file is written next to `inputs.pb` (FlyteIDL `DataLoadingConfig.LiteralMapFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MetadataFormat {
    #[default]
    #[value(name = "JSON")]
    Json,
    #[value(name = "YAML")]
    Yaml,
    /// `inputs.pb` only.
    #[value(name = "PROTO")]
    Proto,
}

/// How inputs are materialised.
#[derive(Debug, Clone)]
pub struct Options {
    pub layout: Layout,
    pub format: MetadataFormat,
    /// Whether literals may name files of this machine (`file://…`, a plain path).
    /// Only inputs read from a local store may: a literal another task wrote to a
    /// remote store has no business copying the downloader's own files
    /// (`file:///proc/self/environ` holds its credentials).
    pub local_uris: bool,
    /// The memory offloaded literals may still take (what `inputs.pb` took is
    /// already spent), see [`budget`](super::budget).
    pub budget: Budget,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            layout: Layout::default(),
            format: MetadataFormat::default(),
            local_uris: false,
            budget: Budget::new(DEFAULT_BUDGET, "copilot's own bound of 4 GiB"),
        }
    }
}

/// The memory literals may take where no memory limit is known.
pub const DEFAULT_BUDGET: u64 = 4 << 30;

/// Materialised directories are 0755; files 0644, or 0755 where the source was
/// executable. No setuid, setgid or sticky bit survives a download.
pub const DIR_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;
pub const EXEC_MODE: u32 = 0o755;

/// A download failure, naming the input and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("input {path}: refused name")]
    Name {
        path: String,
        #[source]
        source: NameError,
    },
    #[error("input {path}: cannot be written as text")]
    Value {
        path: String,
        #[source]
        source: ValueError,
    },
    #[error("input {path}: {what} is not supported")]
    Unsupported { path: String, what: String },
    #[error("input {path}: the offloaded literal at {uri:?} cannot be read")]
    Offloaded {
        path: String,
        uri: String,
        #[source]
        source: Box<DownloadError>,
    },
    #[error("input {path}: offloaded literals nest deeper than {MAX_OFFLOAD_DEPTH}")]
    OffloadDepth { path: String },
    #[error("{uri:?} is not a valid serialized {message}")]
    Decode {
        uri: String,
        message: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("input {path}: cannot fetch {uri:?}")]
    Storage {
        path: String,
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error(
        "input {path}: the multipart blob {uri:?} holds an object whose key is not a safe relative path"
    )]
    ObjectKey {
        path: String,
        uri: String,
        #[source]
        source: NameError,
    },
    #[error(
        "input {path}: {uri:?} names a file of the downloader's own filesystem, refused because the inputs come from a remote store"
    )]
    LocalUri { path: String, uri: String },
    #[error("input {path}: the offloaded literal {uri:?} does not fit in memory")]
    OverBudget {
        path: String,
        uri: String,
        #[source]
        source: OverBudget,
    },
    #[error("input {path}: two inputs would both be written to {file}")]
    Collision { path: String, file: PathBuf },
    #[error("{op} {path}")]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {file}")]
    Serialize {
        file: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What was written: the rewritten literal map (as in `inputs.pb`) and the
/// plain values (as in `inputs.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Materialized {
    pub literals: LiteralMap,
    pub values: serde_json::Map<String, serde_json::Value>,
    pub files: u64,
    pub bytes: u64,
}

/// One thing to do on disk; paths are relative to the target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Mkdir(PathBuf),
    Write(PathBuf, Vec<u8>),
    /// One object → one file.
    Single {
        input: String,
        uri: String,
        rel: PathBuf,
    },
    /// Every object under a prefix → a directory (nested keys kept).
    Multipart {
        input: String,
        uri: String,
        rel: PathBuf,
    },
    /// A structured dataset: a directory of objects, or else one object.
    Dataset {
        input: String,
        uri: String,
        rel: PathBuf,
    },
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub literals: LiteralMap,
    pub values: serde_json::Map<String, serde_json::Value>,
}

struct Planner<'a> {
    root: &'a Path,
    layout: Layout,
    local_uris: bool,
    actions: Vec<Action>,
    claimed: HashSet<PathBuf>,
}

/// Turns `inputs` (offloaded literals already resolved) into actions under
/// `root`: pure, no I/O. Rewritten blob URIs are paths below `root`.
pub fn plan(inputs: &LiteralMap, root: &Path, options: &Options) -> Result<Plan, DownloadError> {
    let mut planner = Planner {
        root,
        layout: options.layout,
        local_uris: options.local_uris,
        actions: Vec::new(),
        claimed: HashSet::new(),
    };
    for reserved in [INPUTS_PB, INPUTS_JSON, INPUTS_YAML] {
        planner.claimed.insert(PathBuf::from(reserved));
    }
    let mut literals = LiteralMap::default();
    let mut values = serde_json::Map::new();
    // Sorted, so that plans (and collisions) are deterministic.
    let sorted: BTreeMap<&String, &Literal> = inputs.literals.iter().collect();
    for (name, lit) in sorted {
        let rel =
            PathBuf::from(
                names::check_component(name).map_err(|source| DownloadError::Name {
                    path: name.clone(),
                    source,
                })?,
            );
        let (lit2, value) = planner.literal(lit, rel, name, true)?;
        literals.literals.insert(name.clone(), lit2);
        values.insert(name.clone(), value);
    }
    Ok(Plan {
        actions: planner.actions,
        literals,
        values,
    })
}

fn unsupported(path: &str, what: &str) -> DownloadError {
    DownloadError::Unsupported {
        path: path.to_owned(),
        what: what.to_owned(),
    }
}

fn single_blob(lit: &Literal) -> Option<&Blob> {
    match &lit.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Blob(b)) if !is_multipart(b) => Some(b),
            _ => None,
        },
        _ => None,
    }
}

fn is_multipart(b: &Blob) -> bool {
    b.metadata
        .as_ref()
        .and_then(|m| m.r#type.as_ref())
        .is_some_and(|t| t.dimensionality == BlobDimensionality::Multipart as i32)
}

/// The last path segment of a URI, if it is a usable file name.
fn basename(uri: &str) -> Option<&str> {
    let without_query = uri.split(['?', '#']).next().unwrap_or(uri);
    let base = without_query.trim_end_matches('/').rsplit('/').next()?;
    names::check_component(base).ok()
}

impl Planner<'_> {
    fn claim(&mut self, rel: &Path, path: &str) -> Result<(), DownloadError> {
        if self.claimed.insert(rel.to_path_buf()) {
            Ok(())
        } else {
            Err(DownloadError::Collision {
                path: path.to_owned(),
                file: self.root.join(rel),
            })
        }
    }

    /// Refuses a source URI that names a local file unless local files are allowed.
    fn source(&self, uri: &str, path: &str) -> Result<String, DownloadError> {
        if !self.local_uris && is_local_file(uri) {
            return Err(DownloadError::LocalUri {
                path: path.to_owned(),
                uri: uri.to_owned(),
            });
        }
        Ok(uri.to_owned())
    }

    fn local_uri(&self, rel: &Path) -> String {
        self.root.join(rel).to_string_lossy().into_owned()
    }

    /// `top` is true for the map's own variables (NAMED_DIR's per-input dir).
    fn literal(
        &mut self,
        lit: &Literal,
        rel: PathBuf,
        path: &str,
        top: bool,
    ) -> Result<(Literal, serde_json::Value), DownloadError> {
        let (value, json) = match &lit.value {
            None => {
                return Err(unsupported(
                    path,
                    "a literal with no value (unknown literal kind?)",
                ));
            }
            Some(literal::Value::OffloadedMetadata(_)) => {
                return Err(unsupported(
                    path,
                    "an offloaded literal that was not resolved",
                ));
            }
            Some(literal::Value::Scalar(s)) => {
                let rel = self.scalar_rel(lit, rel, path, top)?;
                let scalar = s.value.as_ref().ok_or_else(|| {
                    unsupported(path, "a scalar with no value (unknown scalar kind?)")
                })?;
                let (new_scalar, json) = self.scalar(scalar, &rel, path)?;
                let value = literal::Value::Scalar(Box::new(crate::proto::core::Scalar {
                    value: Some(new_scalar),
                }));
                (value, json)
            }
            Some(literal::Value::Collection(c)) => self.collection(c, rel, path)?,
            Some(literal::Value::Map(m)) => self.map(m, rel, path)?,
        };
        let out = Literal {
            value: Some(value),
            hash: lit.hash.clone(),
            metadata: lit.metadata.clone(),
        };
        Ok((out, json))
    }

    /// Where a scalar goes: `rel` itself, except a top-level single blob under
    /// NAMED_DIR, which goes to `rel/<basename>` (and `rel` becomes a directory).
    fn scalar_rel(
        &mut self,
        lit: &Literal,
        rel: PathBuf,
        path: &str,
        top: bool,
    ) -> Result<PathBuf, DownloadError> {
        Ok(match (self.layout, top, single_blob(lit)) {
            (Layout::NamedDir, true, Some(b)) => {
                self.claim(&rel, path)?;
                self.actions.push(Action::Mkdir(rel.clone()));
                rel.join(basename(&b.uri).unwrap_or("file"))
            }
            _ => rel,
        })
    }

    /// A collection: a directory of items named by index, or under NAMED_DIR
    /// single blobs by their basenames (`<i>_<basename>` on a collision).
    fn collection(
        &mut self,
        c: &LiteralCollection,
        rel: PathBuf,
        path: &str,
    ) -> Result<(literal::Value, serde_json::Value), DownloadError> {
        self.claim(&rel, path)?;
        self.actions.push(Action::Mkdir(rel.clone()));
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(c.literals.len());
        let mut values = Vec::with_capacity(c.literals.len());
        for (i, item) in c.literals.iter().enumerate() {
            let mut name = i.to_string();
            if self.layout == Layout::NamedDir
                && let Some(b) = single_blob(item)
            {
                name = match basename(&b.uri) {
                    Some(base) if !seen.contains(base) => base.to_owned(),
                    Some(base) => format!("{i}_{base}"),
                    None => format!("{i}_file"),
                };
                seen.insert(name.clone());
            }
            let (l, v) = self.literal(item, rel.join(&name), &format!("{path}[{i}]"), false)?;
            items.push(l);
            values.push(v);
        }
        Ok((
            literal::Value::Collection(LiteralCollection { literals: items }),
            serde_json::Value::Array(values),
        ))
    }

    /// A map: a directory whose entries are named by the (checked) keys.
    fn map(
        &mut self,
        m: &LiteralMap,
        rel: PathBuf,
        path: &str,
    ) -> Result<(literal::Value, serde_json::Value), DownloadError> {
        self.claim(&rel, path)?;
        self.actions.push(Action::Mkdir(rel.clone()));
        let mut out_map = LiteralMap::default();
        let mut values = serde_json::Map::new();
        let sorted: BTreeMap<&String, &Literal> = m.literals.iter().collect();
        for (key, item) in sorted {
            let item_path = format!("{path}[{key:?}]");
            let key_rel =
                names::join_component(&rel, key).map_err(|source| DownloadError::Name {
                    path: item_path.clone(),
                    source,
                })?;
            let (l, v) = self.literal(item, key_rel, &item_path, false)?;
            out_map.literals.insert(key.clone(), l);
            values.insert(key.clone(), v);
        }
        Ok((
            literal::Value::Map(out_map),
            serde_json::Value::Object(values),
        ))
    }

    fn write(&mut self, rel: &Path, path: &str, data: Vec<u8>) -> Result<(), DownloadError> {
        self.claim(rel, path)?;
        self.actions.push(Action::Write(rel.to_path_buf(), data));
        Ok(())
    }

    /// A scalar: a small file holding its text, or a transfer for what lives in
    /// storage (rewritten to its local path).
    fn scalar(
        &mut self,
        s: &scalar::Value,
        rel: &Path,
        path: &str,
    ) -> Result<(scalar::Value, serde_json::Value), DownloadError> {
        use serde_json::Value as J;
        Ok(match s {
            scalar::Value::Primitive(p) => {
                let (text, value) = primitive_text(p).map_err(|source| DownloadError::Value {
                    path: path.to_owned(),
                    source,
                })?;
                self.write(rel, path, text.into_bytes())?;
                (s.clone(), value)
            }
            scalar::Value::NoneType(_) => {
                self.write(rel, path, b"null".to_vec())?;
                (s.clone(), J::Null)
            }
            scalar::Value::Binary(b) => {
                self.write(rel, path, b.value.clone())?;
                (
                    s.clone(),
                    J::String(base64::engine::general_purpose::STANDARD.encode(&b.value)),
                )
            }
            scalar::Value::Error(e) => {
                self.write(rel, path, e.message.clone().into_bytes())?;
                (s.clone(), J::String(e.message.clone()))
            }
            scalar::Value::Generic(st) => {
                let json = values::struct_to_json(st);
                let text = serde_json::to_vec(&json).map_err(|e| DownloadError::Serialize {
                    file: "a generic value",
                    source: Box::new(e),
                })?;
                self.write(rel, path, text)?;
                (s.clone(), json)
            }
            scalar::Value::Union(u) => self.union(u, rel, path)?,
            scalar::Value::Blob(b) => self.blob(b, rel, path)?,
            scalar::Value::Schema(sc) => self.schema(sc, rel, path)?,
            scalar::Value::StructuredDataset(sd) => self.dataset(sd, rel, path)?,
        })
    }

    /// A union is written as its value; the rewritten value keeps its tag.
    fn union(
        &mut self,
        u: &Union,
        rel: &Path,
        path: &str,
    ) -> Result<(scalar::Value, serde_json::Value), DownloadError> {
        let inner = u
            .value
            .as_deref()
            .ok_or_else(|| unsupported(path, "a union with no value"))?;
        let (lit, value) = self.literal(inner, rel.to_path_buf(), path, false)?;
        let mut union = u.clone();
        union.value = Some(Box::new(lit));
        Ok((scalar::Value::Union(Box::new(union)), value))
    }

    /// A blob: one object to a file, or a multipart prefix to a directory.
    fn blob(
        &mut self,
        b: &Blob,
        rel: &Path,
        path: &str,
    ) -> Result<(scalar::Value, serde_json::Value), DownloadError> {
        let uri = self.source(&b.uri, path)?;
        self.claim(rel, path)?;
        let (input, rel2) = (path.to_owned(), rel.to_path_buf());
        self.actions.push(if is_multipart(b) {
            Action::Multipart {
                input,
                uri,
                rel: rel2,
            }
        } else {
            Action::Single {
                input,
                uri,
                rel: rel2,
            }
        });
        let local = self.local_uri(rel);
        let metadata = b.metadata.clone().or_else(|| Some(BlobMetadata::default()));
        Ok((
            scalar::Value::Blob(Blob {
                metadata,
                uri: local.clone(),
            }),
            serde_json::Value::String(local),
        ))
    }

    /// A schema: always a directory of objects.
    fn schema(
        &mut self,
        sc: &Schema,
        rel: &Path,
        path: &str,
    ) -> Result<(scalar::Value, serde_json::Value), DownloadError> {
        let uri = self.source(&sc.uri, path)?;
        self.claim(rel, path)?;
        self.actions.push(Action::Multipart {
            input: path.to_owned(),
            uri,
            rel: rel.to_path_buf(),
        });
        let local = self.local_uri(rel);
        Ok((
            scalar::Value::Schema(Schema {
                uri: local.clone(),
                r#type: sc.r#type.clone(),
            }),
            serde_json::Value::String(local),
        ))
    }

    /// A structured dataset: a directory of objects, or one object; an
    /// in-memory dataset (no URI) cannot be materialised.
    fn dataset(
        &mut self,
        sd: &StructuredDataset,
        rel: &Path,
        path: &str,
    ) -> Result<(scalar::Value, serde_json::Value), DownloadError> {
        if sd.uri.is_empty() {
            return Err(unsupported(
                path,
                "a structured dataset without a URI (in-memory dataset)",
            ));
        }
        let uri = self.source(&sd.uri, path)?;
        self.claim(rel, path)?;
        self.actions.push(Action::Dataset {
            input: path.to_owned(),
            uri,
            rel: rel.to_path_buf(),
        });
        let local = self.local_uri(rel);
        Ok((
            scalar::Value::StructuredDataset(StructuredDataset {
                uri: local.clone(),
                metadata: sd.metadata.clone(),
            }),
            serde_json::Value::String(local),
        ))
    }
}

/// A primitive's file text and its `inputs.json` value.
fn primitive_text(p: &Primitive) -> Result<(String, serde_json::Value), ValueError> {
    use serde_json::Value as J;
    Ok(match &p.value {
        None => ("null".to_owned(), J::Null),
        Some(primitive::Value::Integer(i)) => (i.to_string(), J::from(*i)),
        Some(primitive::Value::FloatValue(f)) => (values::format_float(*f), values::json_float(*f)),
        Some(primitive::Value::StringValue(v)) => (v.clone(), J::String(v.clone())),
        Some(primitive::Value::Boolean(b)) => (b.to_string(), J::Bool(*b)),
        Some(primitive::Value::Datetime(ts)) => {
            let text = values::format_datetime(ts)?;
            (text.clone(), J::String(text))
        }
        // The file holds Go's `Duration.String()`, inputs.json its nanoseconds.
        Some(primitive::Value::Duration(d)) => (
            values::format_duration(d),
            J::from(values::duration_nanos(d)),
        ),
    })
}

/// Replaces offloaded literals (anywhere in the tree) by the Literal they
/// point at, fetched from storage. Each one read takes its size from `budget`
/// (the serialized bytes this download may decode, see [`Options::literal_bytes`]).
pub async fn resolve_offloaded(
    store: &Store,
    inputs: &mut LiteralMap,
    options: &Options,
    budget: &mut Budget,
) -> Result<(), DownloadError> {
    let mut resolver = Resolver {
        store,
        local_uris: options.local_uris,
        budget,
    };
    for (name, lit) in inputs.literals.iter_mut() {
        resolver.literal(lit, name, 0).await?;
    }
    Ok(())
}

struct Resolver<'a> {
    store: &'a Store,
    local_uris: bool,
    budget: &'a mut Budget,
}

impl Resolver<'_> {
    fn literal<'a>(
        &'a mut self,
        lit: &'a mut Literal,
        path: &'a str,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<(), DownloadError>> {
        Box::pin(async move {
            match &mut lit.value {
                Some(literal::Value::OffloadedMetadata(meta)) => {
                    if depth >= MAX_OFFLOAD_DEPTH {
                        return Err(DownloadError::OffloadDepth {
                            path: path.to_owned(),
                        });
                    }
                    let uri = meta.uri.clone();
                    let mut inner = self.fetch(&uri, path).await.map_err(|source| {
                        DownloadError::Offloaded {
                            path: path.to_owned(),
                            uri: uri.clone(),
                            source: Box::new(source),
                        }
                    })?;
                    tracing::info!(input = path, uri, "read offloaded literal");
                    self.literal(&mut inner, path, depth + 1).await?;
                    *lit = inner;
                }
                Some(literal::Value::Collection(c)) => {
                    for (i, item) in c.literals.iter_mut().enumerate() {
                        self.literal(item, &format!("{path}[{i}]"), depth).await?;
                    }
                }
                Some(literal::Value::Map(m)) => {
                    for (k, item) in m.literals.iter_mut() {
                        self.literal(item, &format!("{path}[{k:?}]"), depth).await?;
                    }
                }
                Some(literal::Value::Scalar(s)) => {
                    if let Some(scalar::Value::Union(u)) = &mut s.value
                        && let Some(inner) = u.value.as_deref_mut()
                    {
                        self.literal(inner, path, depth).await?;
                    }
                }
                None => {}
            }
            Ok(())
        })
    }

    /// Reads and decodes one offloaded literal within the budget.
    async fn fetch(&mut self, uri: &str, path: &str) -> Result<Literal, DownloadError> {
        if !self.local_uris && is_local_file(uri) {
            return Err(DownloadError::LocalUri {
                path: path.to_owned(),
                uri: uri.to_owned(),
            });
        }
        let over = |source| DownloadError::OverBudget {
            path: path.to_owned(),
            uri: uri.to_owned(),
            source,
        };
        let bytes = match self.store.read_bytes(uri, self.budget.max_read()).await {
            Err(StorageError::TooLarge { size, .. }) => {
                return Err(over(self.budget.oversized(size)));
            }
            other => other.map_err(|source| storage_err(path, uri, source))?,
        };
        self.budget
            .take(&bytes, WireMessage::Literal)
            .map_err(over)?;
        Literal::decode(bytes).map_err(|source| DownloadError::Decode {
            uri: uri.to_owned(),
            message: "flyteidl.core.Literal",
            source,
        })
    }
}

/// The name prefix of the staging directory a download builds its result in.
pub const STAGING_PREFIX: &str = ".copilot-staging-";

/// Removes what an earlier download killed midway left (its staging directory).
async fn remove_stale_staging(dir: &Path) -> Result<(), DownloadError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(local_err("list", dir))?;
    while let Some(entry) = entries.next_entry().await.map_err(local_err("list", dir))? {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let path = entry.path();
        tracing::info!(path = %path.display(), "removing the staging folder of an earlier download");
        let removed = match entry.file_type().await {
            Ok(t) if t.is_dir() => tokio::fs::remove_dir_all(&path).await,
            _ => tokio::fs::remove_file(&path).await,
        };
        removed.map_err(local_err("remove", &path))?;
    }
    Ok(())
}

/// Sets every mode under `root` (written by this download only) to [`DIR_MODE`],
/// [`FILE_MODE`] or [`EXEC_MODE`], whatever the umask or the source's mode was.
fn normalise_modes(root: &Path) -> Result<(), DownloadError> {
    use std::os::unix::fs::PermissionsExt as _;
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(local_err("set the mode of", path))
    };
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        set(&dir, DIR_MODE)?;
        for entry in std::fs::read_dir(&dir).map_err(local_err("list", &dir))? {
            let entry = entry.map_err(local_err("list", &dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(local_err("inspect", &path))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() {
                let exec = meta.permissions().mode() & 0o111 != 0;
                set(&path, if exec { EXEC_MODE } else { FILE_MODE })?;
            }
        }
    }
    Ok(())
}

/// One object to fetch.
struct Fetch {
    input: String,
    object: crate::storage::ObjectRef,
    dest: PathBuf,
}

fn local_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DownloadError + 'a {
    move |source| DownloadError::Local {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `plan` inside `staging` (a directory on the same filesystem as the
/// final target). Returns (files, bytes) transferred.
pub async fn execute(
    store: &Store,
    plan: &Plan,
    staging: &Path,
    progress: &Arc<Progress>,
) -> Result<(u64, u64), DownloadError> {
    let mut fetches = Vec::new();
    let mut files = 0u64;
    for action in &plan.actions {
        match action {
            Action::Mkdir(rel) => {
                let p = staging.join(rel);
                tokio::fs::create_dir_all(&p)
                    .await
                    .map_err(local_err("create directory", &p))?;
            }
            Action::Write(rel, data) => {
                let p = staging.join(rel);
                tokio::fs::write(&p, data)
                    .await
                    .map_err(local_err("write", &p))?;
                files += 1;
            }
            Action::Single { input, uri, rel } => {
                fetches.push(single_fetch(
                    store,
                    input,
                    uri,
                    staging.join(rel),
                    progress,
                )?);
            }
            Action::Multipart { input, uri, rel } | Action::Dataset { input, uri, rel } => {
                let dataset = matches!(action, Action::Dataset { .. });
                let dir = staging.join(rel);
                fetches.extend(prefix_fetches(store, input, uri, dir, dataset, progress).await?);
            }
        }
    }
    let bytes = run_fetches(store, fetches, progress).await?;
    Ok((files + progress.snapshot().files, bytes))
}

/// The one object at `uri`, to be fetched to `dest` (one more file expected;
/// its size joins the total once the object is opened).
fn single_fetch(
    store: &Store,
    input: &str,
    uri: &str,
    dest: PathBuf,
    progress: &Progress,
) -> Result<Fetch, DownloadError> {
    let object = store
        .resolve(uri)
        .map_err(|source| storage_err(input, uri, source))?;
    progress.expect(1, 0);
    Ok(Fetch {
        input: input.to_owned(),
        object,
        dest,
    })
}

/// Every object under the prefix `uri`, to be fetched into the directory
/// `dir` (made here, with the subdirectories their keys name). A `dataset`
/// with no objects under it is one object instead.
async fn prefix_fetches(
    store: &Store,
    input: &str,
    uri: &str,
    dir: PathBuf,
    dataset: bool,
    progress: &Progress,
) -> Result<Vec<Fetch>, DownloadError> {
    let listed = store
        .list(uri)
        .await
        .map_err(|source| storage_err(input, uri, source))?;
    if listed.is_empty() && dataset {
        // A dataset written as one file rather than a directory.
        return Ok(vec![single_fetch(store, input, uri, dir, progress)?]);
    }
    if listed.is_empty() {
        tracing::warn!(
            input,
            uri,
            "multipart blob has no objects; creating an empty directory"
        );
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(local_err("create directory", &dir))?;
    let mut made = HashSet::new();
    let mut fetches = Vec::with_capacity(listed.len());
    for item in listed {
        let key = names::check_relative_key(&item.relative).map_err(|source| {
            DownloadError::ObjectKey {
                path: input.to_owned(),
                uri: uri.to_owned(),
                source,
            }
        })?;
        let dest = dir.join(&key);
        if let Some(parent) = dest.parent()
            && made.insert(parent.to_path_buf())
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(local_err("create directory", parent))?;
        }
        progress.expect(1, item.size);
        fetches.push(Fetch {
            input: input.to_owned(),
            object: item.object,
            dest,
        });
    }
    Ok(fetches)
}

/// Fetches every object, at most `max_concurrency` at a time; returns the bytes
/// written.
async fn run_fetches(
    store: &Store,
    fetches: Vec<Fetch>,
    progress: &Arc<Progress>,
) -> Result<u64, DownloadError> {
    let concurrency = store.config().max_concurrency;
    futures::stream::iter(fetches.into_iter().map(|f| {
        let progress = progress.clone();
        async move {
            store
                .download_object(&f.object, &f.dest, &progress)
                .await
                .map_err(|source| storage_err(&f.input, f.object.url(), source))
        }
    }))
    .buffer_unordered(concurrency)
    .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
    .await
}

fn storage_err(input: &str, uri: &str, source: StorageError) -> DownloadError {
    DownloadError::Storage {
        path: input.to_owned(),
        uri: uri.to_owned(),
        source: Box::new(source),
    }
}

/// The metadata files for `format`: always `inputs.pb`, plus JSON or YAML.
pub fn metadata_files(
    plan: &Plan,
    format: MetadataFormat,
) -> Result<Vec<(&'static str, Vec<u8>)>, DownloadError> {
    let mut out = vec![(INPUTS_PB, plan.literals.encode_to_vec())];
    match format {
        MetadataFormat::Json => out.push((
            INPUTS_JSON,
            serde_json::to_vec(&plan.values).map_err(|e| DownloadError::Serialize {
                file: INPUTS_JSON,
                source: Box::new(e),
            })?,
        )),
        MetadataFormat::Yaml => out.push((
            INPUTS_YAML,
            serde_yaml_ng::to_string(&plan.values)
                .map_err(|e| DownloadError::Serialize {
                    file: INPUTS_YAML,
                    source: Box::new(e),
                })?
                .into_bytes(),
        )),
        MetadataFormat::Proto => {}
    }
    Ok(out)
}

/// Downloads `inputs` into `dir`: resolves offloaded literals, plans, runs
/// the plan in a staging directory inside `dir`, then moves the results into
/// place (replacing earlier copies of the same inputs), metadata last.
pub async fn download_inputs(
    store: &Store,
    mut inputs: LiteralMap,
    dir: &Path,
    options: &Options,
    progress: &Arc<Progress>,
) -> Result<Materialized, DownloadError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(local_err("create directory", dir))?;
    let dir = tokio::fs::canonicalize(dir)
        .await
        .map_err(local_err("resolve", dir))?;
    remove_stale_staging(&dir).await?;
    let mut budget = options.budget.clone();
    resolve_offloaded(store, &mut inputs, options, &mut budget).await?;
    let plan = plan(&inputs, &dir, options)?;
    drop(inputs);
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&dir)
        .map_err(local_err("create a staging directory in", &dir))?;
    let (files, bytes) = execute(store, &plan, staging.path(), progress).await?;
    let metadata = metadata_files(&plan, options.format)?;
    for (name, data) in &metadata {
        let p = staging.path().join(name);
        tokio::fs::write(&p, data)
            .await
            .map_err(local_err("write", &p))?;
    }
    let root = staging.path().to_path_buf();
    tokio::task::spawn_blocking(move || normalise_modes(&root))
        .await
        .map_err(|e| DownloadError::Local {
            op: "set the modes of",
            path: staging.path().to_path_buf(),
            source: std::io::Error::other(e),
        })??;
    // Everything is complete: move the inputs into place, then the metadata.
    let metadata_names: HashSet<&str> = metadata.iter().map(|(n, _)| *n).collect();
    let mut entries = Vec::new();
    let mut read_dir = tokio::fs::read_dir(staging.path())
        .await
        .map_err(local_err("list", staging.path()))?;
    while let Some(entry) = read_dir
        .next_entry()
        .await
        .map_err(local_err("list", staging.path()))?
    {
        entries.push(entry.file_name());
    }
    entries.sort_by_key(|n| metadata_names.contains(n.to_str().unwrap_or_default()));
    for name in entries {
        let from = staging.path().join(&name);
        let to = dir.join(&name);
        if let Ok(meta) = tokio::fs::symlink_metadata(&to).await {
            let removed = if meta.is_dir() {
                tokio::fs::remove_dir_all(&to).await
            } else {
                tokio::fs::remove_file(&to).await
            };
            removed.map_err(local_err("replace", &to))?;
        }
        tokio::fs::rename(&from, &to)
            .await
            .map_err(local_err("move into place", &to))?;
    }
    Ok(Materialized {
        literals: plan.literals,
        values: plan.values,
        files,
        bytes,
    })
}
