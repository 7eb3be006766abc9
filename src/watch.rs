//! Watching one file for changes, the way Kubernetes and editors change files: the folder is
//! watched (atomic renames and ConfigMap `..data` symlink swaps raise events there), and a file
//! that is a symlink to somewhere else is also watched where it lives.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct FileWatch {
    // Kept so the OS watch lives as long as this value.
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    pub folder: PathBuf,
}

impl FileWatch {
    pub fn new(path: &Path) -> Result<FileWatch, notify::Error> {
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Opening and reading the file (our own reads included) changes nothing.
                if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                    // A closed channel means the owner is gone; nothing to tell.
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        if let Some(target_dir) = std::fs::canonicalize(path)
            .ok()
            .and_then(|t| t.parent().map(Path::to_path_buf))
        {
            if std::fs::canonicalize(&folder).ok().as_deref() != Some(target_dir.as_path()) {
                if let Err(e) = watcher.watch(&target_dir, RecursiveMode::NonRecursive) {
                    tracing::debug!(folder = %target_dir.display(), error = %e, "cannot watch the file's target folder");
                }
            }
        }
        Ok(FileWatch {
            _watcher: watcher,
            events,
            folder,
        })
    }

    /// Waits for a change in the folder, then for `quiet` without further events (writers
    /// change files in several steps). False when the watch has stopped.
    pub async fn changed(&mut self, quiet: Duration) -> bool {
        if self.events.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(quiet, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}
