//! A file of secrets mounted from a Kubernetes Secret, re-read when its content changes: the
//! token file and the client-token file both live in one.
//!
//! A file that does not parse leaves the last good one in force, says so in the log (naming the
//! file, a line and the problem, never the line's content) and sets the file's `healthy` gauge
//! to 0. Polling the content (rather than watching inodes) follows Kubernetes' atomic symlink
//! swap of mounted Secrets. A file rewritten in place is truncated before it is written, so a
//! reload can read it empty: an empty file is never put in force by a reload (a file that
//! means to list nobody says so, `clients = []`).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::{
    api::status::cause_chain,
    observability::metrics::{ReloadLabels, ReloadResult, WatchedFileMetrics},
};

/// Why a secrets file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape. Only the parser's message and the line are
    /// kept: the parser's own rendering quotes the offending line, which could hold a secret.
    #[error("not valid at line {line}: {message}")]
    Syntax {
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// It was read empty on a reload: most likely truncated by a writer that has not written it
    /// yet, so taking it would drop every entry for a moment.
    #[error("it is empty (a file being rewritten?); write `clients = []` to list nobody")]
    EmptyOnReload,
    /// An entry is wrong.
    #[error("entry {entry:?}: {problem}")]
    Entry {
        /// The entry's id (never its secret).
        entry: String,
        /// What is wrong.
        problem: String,
    },
}

impl FileError {
    /// Parses TOML, keeping only the line and the parser's message of an error.
    pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Self> {
        toml::from_str(text).map_err(|error| Self::Syntax {
            line: error.span().map_or(1, |span| {
                text[..span.start.min(text.len())].lines().count().max(1)
            }),
            message: error.message().to_owned(),
        })
    }
}

/// What a watched file holds, once parsed.
pub trait FileContent: Send + Sync + Sized + 'static {
    /// What the file is called in log lines ("token file").
    const NAME: &'static str;

    /// Parses and checks the file's text.
    fn parse(text: &str) -> Result<Self, FileError>;

    /// How many entries it has, for the `entries` gauge.
    fn entries(&self) -> usize;
}

/// The version of a file in force, re-read when it changes.
pub struct WatchedFile<T> {
    path: PathBuf,
    current: ArcSwap<T>,
    /// The digest of the file's bytes last read, so an unchanged file is not parsed again.
    last_read: Mutex<[u8; 32]>,
    /// How many versions were put in force after the first, for what must follow a reload
    /// (the job streams authorized by the token file).
    version: tokio::sync::watch::Sender<u64>,
    metrics: WatchedFileMetrics,
}

impl<T: FileContent> WatchedFile<T> {
    /// Loads the file; a gateway does not start on a broken one.
    pub fn load(path: &Path, metrics: WatchedFileMetrics) -> anyhow::Result<Arc<Self>> {
        let refused = |error: FileError| {
            anyhow::Error::new(error).context(format!(
                "the {} {} is refused",
                T::NAME,
                path.display()
            ))
        };
        let bytes = std::fs::read(path).map_err(|source| {
            refused(FileError::Read {
                path: path.to_owned(),
                source,
            })
        })?;
        let content = T::parse(&String::from_utf8_lossy(&bytes)).map_err(refused)?;
        let file = Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(content),
            last_read: Mutex::new(Sha256::digest(&bytes).into()),
            version: tokio::sync::watch::Sender::new(0),
            metrics,
        };
        file.loaded("loaded", &file.current.load());
        Ok(Arc::new(file))
    }

    /// Re-reads the file if its content changed. A file that cannot be read or parsed keeps
    /// the last good one in force.
    pub fn reload(&self) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(source) => {
                // Forget the last content read, so the next good read is parsed again and
                // reported healthy (a Secret's symlink swap can fail one read).
                *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = [0; 32];
                return self.reload_failed(&FileError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let mut last_read = self.last_read.lock().unwrap_or_else(|p| p.into_inner());
        if *last_read == digest {
            return;
        }
        *last_read = digest;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return self.reload_failed(&FileError::EmptyOnReload);
        }
        match T::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(content) => {
                // In force before it is reported, so whoever sees the report sees the version.
                self.current.store(Arc::new(content));
                self.version.send_modify(|version| *version += 1);
                self.loaded("reloaded", &self.current.load());
            }
            Err(error) => self.reload_failed(&error),
        }
    }

    fn loaded(&self, what: &str, content: &T) {
        tracing::info!(
            path = %self.path.display(),
            entries = content.entries(),
            "{} {what}",
            T::NAME
        );
        self.metrics.entries.set(content.entries() as i64);
        self.metrics.healthy.set(1);
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                result: ReloadResult::Success,
            })
            .inc();
    }

    fn reload_failed(&self, error: &FileError) {
        tracing::error!(
            path = %self.path.display(),
            error = %cause_chain(error),
            "{} not reloaded; the last good one stays in force",
            T::NAME
        );
        self.metrics.healthy.set(0);
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                result: ReloadResult::Failure,
            })
            .inc();
    }

    /// Re-reads the file every `interval` in a background task, for as long as it is in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let file = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(file) = file.upgrade() else { return };
                // File reads block; keep them off the runtime's worker threads.
                if tokio::task::spawn_blocking(move || file.reload())
                    .await
                    .is_err()
                {
                    tracing::error!("{} reload task panicked", T::NAME);
                }
            }
        });
    }

    /// The version in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// Changes each time a new version is put in force (after [`Self::current`] returns it).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}
