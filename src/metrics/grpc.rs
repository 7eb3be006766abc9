//! gRPC status counting per cluster (`outrigger_grpc_responses_total`).

/// The `grpc_status` label values: the codes 0-16, then "unknown" for anything else.
pub const STATUS_LABELS: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "unknown",
];

/// The index into `STATUS_LABELS` of a `grpc-status` value.
pub fn status_index(s: &str) -> usize {
    s.parse::<usize>().ok().filter(|n| *n < 17).unwrap_or(17)
}

/// Counts a cluster's gRPC statuses (`outrigger_grpc_responses_total`). Each status's child
/// is resolved the first time it is seen (then kept), so non-gRPC clusters export no series
/// and a gRPC response costs no label lookup.
pub struct GrpcCount {
    vec: prometheus::IntCounterVec,
    cluster: String,
    children: [std::sync::OnceLock<prometheus::IntCounter>; 18],
}

impl GrpcCount {
    /// The counter children of `cluster`.
    pub fn new(vec: prometheus::IntCounterVec, cluster: &str) -> GrpcCount {
        GrpcCount {
            vec,
            cluster: cluster.to_owned(),
            children: std::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }

    /// Counts a `grpc-status` value as sent.
    pub fn count(&self, status: &str) {
        self.count_index(status_index(status));
    }

    /// Counts a status code the proxy answered with.
    pub fn count_code(&self, code: u8) {
        self.count_index(usize::from(code).min(17));
    }

    fn count_index(&self, i: usize) {
        self.children[i]
            .get_or_init(|| {
                self.vec
                    .with_label_values(&[&self.cluster, STATUS_LABELS[i]])
            })
            .inc();
    }
}
