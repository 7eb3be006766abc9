//! The warming step: everything a new snapshot needs from outside the process, done before it
//! is built. Static endpoint names are resolved (asynchronously), upstream TLS files loaded,
//! and access-log files opened with their writer threads. Only what the build will not take
//! from the previous snapshot is warmed, so an unchanged cluster or log costs nothing here.

use super::{reusable_cluster, reusable_log, Snapshot, SnapshotError};
use crate::access_log::AccessLog;
use crate::cluster::ClusterInputs;
use crate::config::LoadedConfig;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;

/// What the warming step gathered, by cluster and by listener name.
#[derive(Default)]
pub struct Warmed {
    pub(super) clusters: HashMap<String, ClusterInputs>,
    pub(super) access_logs: HashMap<String, Arc<AccessLog>>,
}

/// Gathers the inputs of every cluster and access log of `loaded` that `previous` cannot lend.
pub async fn warm(
    loaded: &LoadedConfig,
    previous: Option<&Snapshot>,
    metrics: &Metrics,
) -> Result<Warmed, SnapshotError> {
    let mut warmed = Warmed::default();
    for (i, c) in loaded.config.clusters.iter().enumerate() {
        if reusable_cluster(previous, c).is_none() {
            let inputs = ClusterInputs::gather(i, c, &loaded.base_dir).await?;
            warmed.clusters.insert(c.name.clone(), inputs);
        }
    }
    for (index, l) in loaded.config.listeners.iter().enumerate() {
        let Some(al) = l.access_log.as_ref() else {
            continue;
        };
        let log = match reusable_log(previous, &l.name, al) {
            Some(old) => old,
            None => {
                let dropped = metrics.access_log_dropped.with_label_values(&[&l.name]);
                AccessLog::start(al, &loaded.base_dir, dropped).map_err(|source| {
                    SnapshotError::AccessLog {
                        index,
                        path: al.path.clone(),
                        source,
                    }
                })?
            }
        };
        warmed.access_logs.insert(l.name.clone(), log);
    }
    Ok(warmed)
}
