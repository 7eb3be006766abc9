//! Watching one file for changes, the way Kubernetes and editors change files: the folder is
//! watched (atomic renames and ConfigMap `..data` symlink swaps raise events there), and a file
//! that is a symlink to somewhere else is also watched where it lives.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// The symlink kubelet swaps atomically when a mounted ConfigMap or Secret changes.
const DATA_LINK: &str = "..data";

/// An event that may have changed the watched file: not a read (our own reads included), and
/// about one of `names`, or a lost-events notice (the kernel's queue overflowed).
fn concerns(event: &notify::Event, names: &[OsString]) -> bool {
    event.need_rescan()
        || !matches!(event.kind, notify::EventKind::Access(_))
            && event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
}

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
        let target = std::fs::canonicalize(path).ok();
        // The folder may be busy with files that are not ours (logs, other configs): only
        // events that name the file, its symlink's target or ConfigMap's `..data` link count,
        // or every log line written beside the config would wake the proxy.
        let mut names: Vec<OsString> = vec![OsString::from(DATA_LINK)];
        names.extend(path.file_name().map(OsString::from));
        names.extend(
            target
                .as_deref()
                .and_then(Path::file_name)
                .map(OsString::from),
        );
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| concerns(&e, &names)) {
                    // A closed channel means the owner is gone; nothing to tell.
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&folder, RecursiveMode::NonRecursive)?;
        if let Some(target_dir) = target
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    #[test]
    fn only_events_about_the_file_or_its_links_count() {
        let names = vec![OsString::from(DATA_LINK), OsString::from("outrigger.yaml")];
        let write = EventKind::Modify(ModifyKind::Any);
        assert!(concerns(&event(write, &["/etc/o/outrigger.yaml"]), &names));
        // An editor's or kubelet's atomic rename names the file (or ..data) as the target.
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns(
            &event(
                rename,
                &["/etc/o/.outrigger.yaml.swp", "/etc/o/outrigger.yaml"]
            ),
            &names
        ));
        assert!(concerns(
            &event(rename, &["/etc/o/..data_tmp", "/etc/o/..data"]),
            &names
        ));
        // Neighbours: a log written beside the config, another config, a new stamped folder.
        assert!(!concerns(&event(write, &["/etc/o/access.log"]), &names));
        assert!(!concerns(
            &event(EventKind::Create(CreateKind::File), &["/etc/o/other.yaml"]),
            &names
        ));
        assert!(!concerns(
            &event(
                EventKind::Create(CreateKind::Folder),
                &["/etc/o/..2026_11_30"]
            ),
            &names
        ));
        // Reading the file changes nothing.
        let read = EventKind::Access(notify::event::AccessKind::Read);
        assert!(!concerns(&event(read, &["/etc/o/outrigger.yaml"]), &names));
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(concerns(&overflow, &names));
    }
}
