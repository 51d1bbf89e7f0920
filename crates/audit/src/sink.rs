//! Where records go: one chain per sink, appends serialized.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
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
}

/// Reads a JSON Lines log, one record (or the reason it is unreadable) per line.
pub(crate) fn read_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Record, String>> + use<>, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| AuditError::Corrupt(e.to_string()))?;
    Ok(BufReader::new(file).lines().map(|line| {
        let line = line.map_err(|e| e.to_string())?;
        serde_json::from_str::<Record>(&line).map_err(|e| format!("not a record: {e}"))
    }))
}

impl JsonlSink {
    /// Opens (or creates) the log at `path`, continuing its chain with `chain`'s key ring,
    /// clock and checkpoint interval. Blocks while it reads the existing log.
    pub fn open(path: impl AsRef<Path>, chain: Chain) -> Result<Self, AuditError> {
        let path = path.as_ref().to_owned();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::Sink(format!("open {}: {e}", path.display())))?;
        let mut last = None;
        for (n, record) in read_lines(&path)?.enumerate() {
            last = Some(record.map_err(|e| AuditError::Corrupt(format!("line {}: {e}", n + 1)))?);
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(JsonlState {
                chain: chain.resume(last.as_ref()),
                file,
                path,
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
        let inner = Arc::clone(&self.inner);
        // The write and the sync block: off the async workers, one at a time.
        tokio::task::spawn_blocking(move || {
            let mut state = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let (seq, head) = state.chain.position();
            let sealed = state.chain.seal(event)?;
            let mut text = String::new();
            for record in &sealed {
                let line =
                    serde_json::to_string(record).map_err(|e| AuditError::Sink(e.to_string()))?;
                text.push_str(&line);
                text.push('\n');
            }
            let written = state
                .file
                .write_all(text.as_bytes())
                .and_then(|()| state.file.flush())
                .and_then(|()| state.file.sync_data());
            if let Err(e) = written {
                // Not durable: the chain does not move (a partial line makes the file refuse
                // to open until an operator looks at it).
                state.chain.rewind(seq, head);
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

    async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .chain
            .checkpoint()
    }
}
