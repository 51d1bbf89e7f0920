//! Where records go: one chain per sink, appends serialized.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use palisade_core::KeyRing;

use crate::AuditError;
use crate::chain::{Chain, Checkpoint};
use crate::record::{Event, Record};

/// A place audit records are appended to. An append returns once the records are durable
/// (as the sink defines it); an error means nothing may be assumed written, and a caller that
/// must audit before acting refuses the action.
pub trait AuditSink: Send + Sync + 'static {
    /// Seals `event` into the chain and writes it (with a checkpoint record when one is due).
    /// Answers the event's record.
    fn append(&self, event: Event) -> impl Future<Output = Result<Record, AuditError>> + Send;

    /// A signed checkpoint of the chain's head, to publish elsewhere.
    fn checkpoint(&self) -> impl Future<Output = Result<Checkpoint, AuditError>> + Send;
}

/// Records in memory (tests, demos).
#[derive(Clone, Debug)]
pub struct MemorySink {
    inner: Arc<Mutex<(Chain, Vec<Record>)>>,
}

impl MemorySink {
    /// An empty log signing with `ring`.
    pub fn new(ring: KeyRing) -> Self {
        Self::with_chain(Chain::new(ring))
    }

    /// An empty log written through `chain` (its clock and checkpoint interval).
    pub fn with_chain(chain: Chain) -> Self {
        Self {
            inner: Arc::new(Mutex::new((chain, Vec::new()))),
        }
    }

    /// A copy of every record.
    pub fn records(&self) -> Vec<Record> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

impl AuditSink for MemorySink {
    async fn append(&self, event: Event) -> Result<Record, AuditError> {
        let result: Result<Record, AuditError> = async {
            let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let (chain, records) = &mut *guard;
            let sealed = chain.seal(event)?;
            let first = sealed
                .first()
                .cloned()
                .ok_or(AuditError::Event("nothing sealed"))?;
            records.extend(sealed);
            Ok(first)
        }
        .await;
        crate::count_write("memory", &result);
        result
    }

    async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .checkpoint()
    }
}

/// A JSON Lines file: one record per line, each append written, flushed and synced to disk
/// before it is reported done. Opening an existing file continues its chain (a last line cut
/// short by a crash is refused, not repaired).
#[derive(Clone, Debug)]
pub struct JsonlSink {
    inner: Arc<Mutex<JsonlState>>,
}

#[derive(Debug)]
struct JsonlState {
    chain: Chain,
    file: std::fs::File,
    path: PathBuf,
    /// A write failed and the file could not be put back as it was: every later append is
    /// refused until the log is reopened (and so read again).
    failed: bool,
}

/// The longest line read as a record (a record is far smaller: fields are capped at 1 KiB).
const MAX_LINE: usize = 1 << 20;

/// Reads a JSON Lines log, one record (or the reason it is unreadable) per line.
pub(crate) fn read_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Record, String>> + use<>, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| AuditError::Corrupt(e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut done = false;
    Ok(std::iter::from_fn(move || {
        if done {
            return None;
        }
        // A line is read up to MAX_LINE bytes: a longer one is not a record (and is not held).
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => None,
            Ok(_) if line.len() > MAX_LINE => {
                done = true;
                Some(Err(format!("a line over {MAX_LINE} bytes")))
            }
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(Record::from_line(&line))
            }
            Err(e) => {
                done = true;
                Some(Err(e.to_string()))
            }
        }
    }))
}

impl JsonlSink {
    /// Opens (or creates) the log at `path`, continuing its chain with `chain`'s key ring,
    /// clock and checkpoint interval. Blocks while it reads the existing log.
    pub fn open(path: impl AsRef<Path>, chain: Chain) -> Result<Self, AuditError> {
        let path = path.as_ref().to_owned();
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        // A new log is readable by its owner only (records name people and actions).
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|e| AuditError::Sink(format!("open {}: {e}", path.display())))?;
        // One writer per file, across processes: a second one would fork the chain.
        file.try_lock().map_err(|e| {
            AuditError::Sink(format!("{} is held by another writer: {e}", path.display()))
        })?;
        let mut last = None;
        for (n, record) in read_lines(&path)?.enumerate() {
            last = Some(record.map_err(|e| AuditError::Corrupt(format!("line {}: {e}", n + 1)))?);
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(JsonlState {
                chain: chain.resume(last.as_ref())?,
                file,
                path,
                failed: false,
            })),
        })
    }

    /// The records of the log at `path`, streamed (for [`crate::Verifier`]), without opening
    /// it for writing.
    pub fn records_of(
        path: &Path,
    ) -> Result<impl Iterator<Item = Result<Record, String>> + use<>, AuditError> {
        read_lines(path)
    }

    /// The log's records, streamed from the file (for [`crate::Verifier`]).
    pub fn read(&self) -> Result<impl Iterator<Item = Result<Record, String>> + use<>, AuditError> {
        let path = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .path
            .clone();
        read_lines(&path)
    }
}

impl AuditSink for JsonlSink {
    async fn append(&self, event: Event) -> Result<Record, AuditError> {
        let result: Result<Record, AuditError> = async {
            let inner = Arc::clone(&self.inner);
            // The write and the sync block: off the async workers, one at a time.
            tokio::task::spawn_blocking(move || {
                let mut state = inner.lock().unwrap_or_else(PoisonError::into_inner);
                if state.failed {
                    return Err(AuditError::Sink(
                        "an earlier write failed; reopen the log".into(),
                    ));
                }
                let position = state.chain.position();
                let sealed = state.chain.seal(event)?;
                let mut text = String::new();
                for record in &sealed {
                    let line = serde_json::to_string(record)
                        .map_err(|e| AuditError::Sink(e.to_string()))?;
                    text.push_str(&line);
                    text.push('\n');
                }
                let before = state.file.metadata().map(|m| m.len());
                let written = state
                    .file
                    .write_all(text.as_bytes())
                    .and_then(|()| state.file.flush())
                    .and_then(|()| state.file.sync_data());
                if let Err(e) = written {
                    // Not durable: the chain does not move, and the file is cut back to where it
                    // was (a record that may have reached the disk must not stay to fork the
                    // chain, a partial line must not glue onto the next). If that fails too, the
                    // sink refuses every later append.
                    state.chain.rewind(position);
                    let restored = before.and_then(|len| {
                        state.file.set_len(len)?;
                        state.file.sync_data()
                    });
                    if restored.is_err() {
                        state.failed = true;
                    }
                    return Err(AuditError::Sink(format!("write: {e}")));
                }
                sealed
                    .into_iter()
                    .next()
                    .ok_or(AuditError::Event("nothing sealed"))
            })
            .await
            .map_err(|e| AuditError::Sink(format!("writer task: {e}")))?
        }
        .await;
        crate::count_write("jsonl", &result);
        result
    }

    async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        // The lock may be held by a write waiting on the disk: wait off the async workers.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .chain
                .checkpoint()
        })
        .await
        .map_err(|e| AuditError::Sink(format!("writer task: {e}")))?
    }
}
