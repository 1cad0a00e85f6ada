//! Files of lines (JSON lines) written durably: whole lines appended with one write,
//! fsynced on `sync`, and a torn last line (a writer killed mid-write, so never
//! acknowledged) cut off when the file is opened. Shared by the sinks that write files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sluice_api::ConnectError;

/// Chunk size for scanning backwards for the last newline.
const TAIL_CHUNK: u64 = 64 * 1024;

/// A file of lines, open for appending.
pub struct LineFile {
    /// Who writes it ("file sink"), for messages.
    label: &'static str,
    path: PathBuf,
    file: File,
    /// Bytes were written since the last successful `sync_data`.
    dirty: bool,
    /// Set when the file can no longer be trusted (a failed fsync may have dropped
    /// written data; a failed write could not be rolled back). Every later call fails
    /// until the task is restarted, which reopens and repairs the file.
    broken: Option<String>,
}

impl LineFile {
    /// Opens `path` for appending (creating it and its parent directories, and syncing
    /// the directories whose entries changed), after cutting off a torn last line.
    pub fn open(path: PathBuf, label: &'static str) -> Result<LineFile, ConnectError> {
        let ctx = |what: &str| format!("{label} {}: {what}", path.display());

        // Directories whose entries change (new subdirectories, the new file) are synced
        // so the file itself survives a crash, not only its contents.
        let parent = parent_dir(&path);
        let mut changed_dirs = Vec::new();
        let mut dir = parent.clone();
        while !dir.exists() {
            let up = parent_dir(&dir);
            changed_dirs.push(up.clone());
            if up == dir {
                break;
            }
            dir = up;
        }
        std::fs::create_dir_all(&parent)
            .map_err(|err| ConnectError::from_io(ctx("creating parent directories"), &err))?;
        let existed = path.exists();
        if !existed {
            changed_dirs.insert(0, parent);
        }

        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|err| ConnectError::from_io(ctx("opening"), &err))?;

        for dir in &changed_dirs {
            sync_dir(dir).map_err(|err| {
                ConnectError::from_io(ctx(&format!("syncing directory {}", dir.display())), &err)
            })?;
        }

        if let Some((old_len, new_len)) = repair_tail(&mut file)
            .map_err(|err| ConnectError::from_io(ctx("repairing a torn last line"), &err))?
        {
            tracing::warn!(
                file = %path.display(),
                removed_bytes = old_len - new_len,
                kept_bytes = new_len,
                "{label}: the last line was incomplete (a previous writer was killed \
                 mid-write, so it was never acknowledged); truncated it before appending"
            );
        }

        Ok(LineFile {
            label,
            path,
            file,
            dirty: false,
            broken: None,
        })
    }

    /// The open file, e.g. to read back what it holds.
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    fn check_broken(&self) -> Result<(), ConnectError> {
        match &self.broken {
            Some(reason) => Err(ConnectError::fatal(format!(
                "{} {}: unusable after an earlier failure ({reason}); restart the task",
                self.label,
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    /// Appends `bytes` (whole lines) with one write. If the write fails, whatever part of
    /// it reached the file is cut off again, so a retried put cannot leave a partial line
    /// in the middle of the file.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), ConnectError> {
        self.check_broken()?;
        if bytes.is_empty() {
            return Ok(());
        }
        let ctx = |what: &str| format!("{} {}: {what}", self.label, self.path.display());
        let before = self
            .file
            .metadata()
            .map_err(|err| ConnectError::from_io(ctx("reading file length"), &err))?
            .len();
        self.dirty = true;
        if let Err(err) = self.file.write_all(bytes) {
            if let Err(undo) = self.file.set_len(before) {
                self.broken = Some(format!(
                    "a failed write ({err}) could not be rolled back: {undo}"
                ));
                return Err(ConnectError::fatal(format!(
                    "{}: {err}; rolling back the partial write failed: {undo}",
                    ctx("writing")
                )));
            }
            return Err(ConnectError::from_io(ctx("writing"), &err));
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), ConnectError> {
        self.check_broken()?;
        if !self.dirty {
            return Ok(());
        }
        if let Err(err) = self.file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages and a retry
            // could report success for data that is gone: never retry it on this handle.
            self.broken = Some(format!("fsync failed: {err}"));
            return Err(ConnectError::fatal(format!(
                "{} {}: fsync: {err}",
                self.label,
                self.path.display()
            )));
        }
        self.dirty = false;
        Ok(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// If the file does not end with `\n`, truncates it to just after its last `\n` (or to
/// empty) and syncs. Returns `(old length, new length)` when it truncated.
fn repair_tail(file: &mut File) -> io::Result<Option<(u64, u64)>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut chunk = Vec::new();
    let mut end = len;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        // Both are at most TAIL_CHUNK apart, so the cast cannot truncate.
        chunk.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if keep == len {
        return Ok(None);
    }
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(Some((len, keep)))
}

/// Runs blocking file I/O on tokio's blocking pool (inline when there is no tokio runtime).
/// Fails only when the blocking task itself was lost (it panicked or the pool shut down).
pub async fn blocking<T, F>(label: &'static str, f: F) -> Result<T, ConnectError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.map_err(|err| {
            ConnectError::fatal(format!("{label}: blocking I/O task failed: {err}"))
        }),
        Err(_) => Ok(f()),
    }
}

/// Locks a writer shared with blocking tasks; a poisoned lock (a panic mid-write) makes
/// the writer unusable rather than trusted.
pub fn lock<'a, T>(
    label: &'static str,
    writer: &'a std::sync::Mutex<T>,
) -> Result<std::sync::MutexGuard<'a, T>, ConnectError> {
    writer
        .lock()
        .map_err(|_| ConnectError::fatal(format!("{label}: writer state lost after a panic")))
}
