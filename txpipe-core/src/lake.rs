//! The lake: an object store location holding txpipe's tables.
//!
//! A lake is opened from a local path or an object store URL (`file://`,
//! `memory://`, and `s3://`, `gs://`, `az://` when the crate features are on).
//! Paths inside the lake are `/`-separated strings relative to its root, such as
//! `fact_transaction/event_date=2026-11-20/part-….parquet`.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::error::{Error, Result};

/// A lake root on an object store.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: Url,
    local_root: Option<PathBuf>,
}

impl Lake {
    /// Opens a lake from a local path or an object store URL.
    ///
    /// Local folders are created when missing. `memory://` gives a fresh,
    /// process-local lake (for tests and embedding).
    ///
    /// # Errors
    /// An unsupported URL scheme (name the crate feature to enable), or a local
    /// folder that cannot be created.
    pub fn open(location: &str) -> Result<Self> {
        if location.is_empty() {
            return Err(Error::Config("lake location is empty".into()));
        }
        if location.starts_with("memory://") {
            return Ok(Self::in_memory());
        }
        if let Some(rest) = location.strip_prefix("file://") {
            return Self::local(rest);
        }
        if location.contains("://") {
            return Self::remote(location);
        }
        Self::local(location)
    }

    fn local(dir: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating lake folder", dir, e))?;
        let abs =
            std::fs::canonicalize(dir).map_err(|e| Error::io("resolving lake folder", dir, e))?;
        let root = Path::from_absolute_path(&abs)
            .map_err(|e| Error::Config(format!("lake path {}: {e}", abs.display())))?;
        let url = Url::from_directory_path(&abs)
            .map_err(|_| Error::Config(format!("lake path {} is not absolute", abs.display())))?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            root,
            url,
            local_root: Some(abs),
        })
    }

    fn remote(location: &str) -> Result<Self> {
        let mut url = Url::parse(location)
            .map_err(|e| Error::Config(format!("lake URL '{location}': {e}")))?;
        let (store, root) = object_store::parse_url_opts(&url, std::env::vars()).map_err(|e| {
            Error::Config(format!(
                "lake URL '{location}': {e} (object stores other than file:// and memory:// need txpipe-core's s3/gcs/azure features)"
            ))
        })?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        Ok(Self {
            store: Arc::from(store),
            root,
            url,
            local_root: None,
        })
    }

    /// A fresh lake in process memory.
    pub fn in_memory() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let url = Url::parse(&format!("memory://{id}/"))
            .unwrap_or_else(|_| Url::parse("memory://lake/").expect("static URL"));
        Self {
            store: Arc::new(InMemory::new()),
            root: Path::default(),
            url,
            local_root: None,
        }
    }

    /// The object store behind the lake.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The lake root as a URL ending in `/` (what DataFusion and other tools read).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local folder of a `file://` lake.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Where `rel` is, for messages: its absolute path in a local lake, else
    /// its URL under the lake's without user, password, query or fragment
    /// (where a store's credentials could be written).
    pub fn describe(&self, rel: &str) -> String {
        let rel = rel.trim_matches('/');
        match &self.local_root {
            Some(root) => root.join(rel).display().to_string(),
            None => self
                .url
                .join(rel)
                .map_or_else(|_| rel.to_string(), without_credentials),
        }
    }

    /// The store path of `rel` (relative to the lake root).
    pub fn path(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        if self.root.as_ref().is_empty() {
            Path::from(rel)
        } else if rel.is_empty() {
            self.root.clone()
        } else {
            Path::from(format!("{}/{rel}", self.root))
        }
    }

    /// The lake-relative form of a store path.
    pub fn relative(&self, path: &Path) -> String {
        let root = self.root.as_ref();
        let p = path.as_ref();
        if root.is_empty() {
            p.to_string()
        } else {
            p.strip_prefix(root)
                .map(|s| s.trim_start_matches('/').to_string())
                .unwrap_or_else(|| p.to_string())
        }
    }

    /// URL of a folder in the lake, ending in `/`.
    pub fn folder_url(&self, rel: &str) -> String {
        format!("{}{}/", self.url, rel.trim_matches('/'))
    }

    /// Writes an object (atomically replacing any previous one).
    ///
    /// # Errors
    /// The store failed.
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&self.path(rel), PutPayload::from_bytes(data))
            .await
            .map_err(|e| self.store_error("writing", rel, None, e))?;
        Ok(())
    }

    /// Writes an object only if none exists; `Ok(false)` when one already did.
    ///
    /// # Errors
    /// The store failed for another reason.
    pub async fn put_if_absent(&self, rel: &str, data: Bytes) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(rel), PutPayload::from_bytes(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error("creating", rel, None, e)),
        }
    }

    /// Reads an object; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// The store failed for another reason.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(
                r.bytes()
                    .await
                    .map_err(|e| self.store_error("reading", rel, None, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("reading", rel, None, e)),
        }
    }

    /// True when the object exists.
    ///
    /// # Errors
    /// The store failed.
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        match self.store.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error("checking", rel, None, e)),
        }
    }

    /// Every object under the folder `rel`, recursively, sorted by path.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(rel);
        let mut out: Vec<ObjectMeta> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(v) => v,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(self.store_error("listing", rel, None, e)),
        };
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Deletes an object; a missing object is not an error.
    ///
    /// # Errors
    /// The store failed.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("deleting", rel, None, e)),
        }
    }

    /// Moves an object (a rename on local disks, copy + delete on cloud stores).
    ///
    /// # Errors
    /// The store failed, including when `from` does not exist.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.store
            .rename(&self.path(from), &self.path(to))
            .await
            .map_err(|e| self.store_error("moving", from, Some(to), e))
    }

    /// Maps a store error of `action` (`writing`, `moving`, …) on `rel` (and
    /// `to` for a move).
    ///
    /// On a local lake the operating system's error is what matters ("No
    /// space left on device", "Read-only file system"), and the object store
    /// buries it under several layers that repeat it (and sometimes drop the
    /// path): it becomes [`Error::LakeIo`] naming the absolute path(s) and the
    /// cause once. Other stores keep [`Error::ObjectStore`].
    fn store_error(
        &self,
        action: &'static str,
        rel: &str,
        to: Option<&str>,
        e: object_store::Error,
    ) -> Error {
        if self.local_root.is_some() {
            let target = |rel: &str| self.describe(rel);
            if let Some(io) = io_cause(&e) {
                let cause = match io.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(io.kind(), io.to_string()),
                };
                let (action, path) = match to {
                    Some(to) => (
                        "moving lake file",
                        format!("{} to {}", target(rel), target(to)),
                    ),
                    None => (local_action(action), target(rel)),
                };
                return Error::LakeIo {
                    action,
                    path,
                    cause,
                };
            }
        }
        let context = match to {
            Some(to) => format!("{action} {rel} to {to}"),
            None => format!("{action} {rel}"),
        };
        Error::store(context, e)
    }

    /// Registers the lake's object store with a DataFusion context so that
    /// [`folder_url`](Self::folder_url) URLs can be queried.
    pub fn register_object_store(&self, ctx: &datafusion::prelude::SessionContext) {
        if self.local_root.is_none() {
            ctx.register_object_store(&self.url, self.store.clone());
        }
    }
}

/// A URL's text without user, password, query and fragment.
fn without_credentials(mut url: Url) -> String {
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The wording of a local lake's failed operation.
fn local_action(action: &str) -> &'static str {
    match action {
        "writing" => "writing lake file",
        "creating" => "creating lake file",
        "reading" => "reading lake file",
        "checking" => "checking lake file",
        "listing" => "listing lake folder",
        "deleting" => "deleting lake file",
        _ => "accessing lake file",
    }
}

/// The innermost operating system error in an error's source chain.
fn io_cause(e: &object_store::Error) -> Option<&std::io::Error> {
    let mut found = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        next = err.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials written into a store URL never reach a message.
    #[test]
    fn table_locations_leave_out_credentials() {
        let url = Url::parse("s3://AKIDEXAMPLE:s3cr3t@bucket/lake/fact_transaction/?sig=t0ken#f")
            .expect("url");
        assert_eq!(
            without_credentials(url),
            "s3://bucket/lake/fact_transaction/"
        );
        let plain = Url::parse("gs://bucket/lake/quarantine/").expect("url");
        assert_eq!(without_credentials(plain), "gs://bucket/lake/quarantine/");
    }

    #[tokio::test]
    async fn local_and_memory_lakes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for lake in [
            Lake::open(dir.path().to_str().unwrap()).unwrap(),
            Lake::open("memory://").unwrap(),
        ] {
            assert!(lake
                .put_if_absent("a/b.json", Bytes::from_static(b"1"))
                .await
                .unwrap());
            assert!(!lake
                .put_if_absent("a/b.json", Bytes::from_static(b"2"))
                .await
                .unwrap());
            assert_eq!(
                lake.get("a/b.json").await.unwrap().unwrap(),
                Bytes::from_static(b"1")
            );
            lake.rename("a/b.json", "c/d/e.json").await.unwrap();
            assert!(!lake.exists("a/b.json").await.unwrap());
            let listed = lake.list("c").await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(lake.relative(&listed[0].location), "c/d/e.json");
            lake.delete("c/d/e.json").await.unwrap();
            lake.delete("c/d/e.json").await.unwrap();
            assert!(lake.list("c").await.unwrap().is_empty());
            assert_eq!(lake.get("nope").await.unwrap(), None);
        }
        assert!(dir.path().join("a").exists());
    }

    #[tokio::test]
    async fn a_local_write_failure_names_the_absolute_path_and_the_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        lake.put("blocker", Bytes::from_static(b"x")).await.unwrap();
        // A regular file where a folder is needed: the OS refuses.
        let err = lake
            .put("blocker/t/part.parquet", Bytes::from_static(b"PAR1"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        let Error::LakeIo {
            action,
            path,
            cause,
        } = &err
        else {
            panic!("not a LakeIo: {msg}");
        };
        assert_eq!(*action, "writing lake file");
        let root = lake.local_root().unwrap();
        assert_eq!(
            path,
            &root.join("blocker/t/part.parquet").display().to_string()
        );
        let cause = cause.to_string();
        assert!(msg.starts_with("writing lake file /"), "{msg}");
        assert_eq!(msg.matches(&cause).count(), 1, "{msg}");
        assert!(
            std::error::Error::source(&err).is_none(),
            "cause not chained twice"
        );

        let err = lake
            .rename("blocker", "blocker/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("moving lake file /"), "{err}");
        assert!(err.contains(" to /"), "{err}");
    }
}
