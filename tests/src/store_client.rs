//! A blocking client for a test's storage server (moto, azurite), over copilot's own
//! `Store`, so that tests read and write objects as copilot names them.
use bytes::Bytes;
use copilot::storage::{StorageConfig, StorageError, Store};

pub struct StoreClient {
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl StoreClient {
    pub fn new(config: StorageConfig) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self {
            rt,
            store: Store::new(config),
        }
    }

    pub fn put(&self, url: &str, bytes: impl Into<Bytes>) {
        self.rt
            .block_on(self.store.put_bytes(url, bytes.into()))
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    }

    /// Writes many objects, 32 at a time.
    pub fn put_all(&self, objects: impl IntoIterator<Item = (String, Bytes)>) {
        use futures::{StreamExt as _, TryStreamExt as _};
        let store = &self.store;
        let puts = futures::stream::iter(objects.into_iter().map(|(url, bytes)| async move {
            store
                .put_bytes(&url, bytes)
                .await
                .map_err(|e| format!("PUT {url}: {e}"))
        }))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>();
        if let Err(e) = self.rt.block_on(puts) {
            panic!("{e}");
        }
    }

    /// The object at `url`, or `None` if it does not exist.
    pub fn get(&self, url: &str) -> Option<Vec<u8>> {
        match self.rt.block_on(self.store.read_bytes(url, 1 << 30)) {
            Ok(b) => Some(b.to_vec()),
            Err(StorageError::NotFound { .. }) => None,
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// Keys below `prefix` (relative to it), sorted, with their sizes.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        self.rt
            .block_on(self.store.list(prefix))
            .unwrap_or_else(|e| panic!("LIST {prefix}: {e}"))
            .into_iter()
            .map(|o| (o.relative, o.size))
            .collect()
    }

    /// Runs a future on the client's runtime (a request the store has no call for).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
