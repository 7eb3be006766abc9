//! Access logs: one line per request, JSON or text, to stdout or a file. Lines go through a
//! bounded channel to a writer task, so a slow disk or pipe never blocks the request path; when
//! the channel is full a line is dropped and counted (`outrigger_access_log_dropped_total`).
//! A line is written when the response body ends, so bytes and duration are the real ones.

use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::metrics::ErrorKind;
use prometheus::IntCounter;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 8192;

pub struct AccessLog {
    pub config: AccessLogConfig,
    tx: mpsc::Sender<String>,
    dropped: IntCounter,
}

/// Everything one line says.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub start: Option<SystemTime>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    /// Envoy's response flags: UF, UH, UT, URX, UO, UC, RL, NR, ... or "-".
    pub flags: &'static str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub endpoint: Option<String>,
    pub cluster: Option<String>,
    pub route: Option<usize>,
    pub attempts: u32,
    pub request_id: String,
    pub user_agent: String,
    pub downstream: Option<SocketAddr>,
    pub tls_version: Option<&'static str>,
    pub trace_id: Option<String>,
    /// The client certificate's first name (a SPIFFE ID on a mesh's mTLS).
    pub identity: Option<String>,
    /// Where a captured connection was going (transparent listeners).
    pub original_dst: Option<SocketAddr>,
}

/// The response flag for a proxy-made answer (Envoy's vocabulary).
pub fn flag(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NoRoute => "NR",
        ErrorKind::NoHealthyEndpoint => "UH",
        ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout | ErrorKind::UpstreamTls => "UF",
        ErrorKind::UpstreamReset => "UC",
        ErrorKind::UpstreamProtocolError => "UPE",
        ErrorKind::Timeout | ErrorKind::PerTryTimeout => "UT",
        ErrorKind::DownstreamBody | ErrorKind::AmbiguousFraming | ErrorKind::BadRequest => "DPE",
        ErrorKind::ListenerGone => "LR",
        ErrorKind::RateLimited => "RL",
        ErrorKind::Overflow => "UO",
        ErrorKind::Overloaded => "OM",
        ErrorKind::ConnectNotAllowed => "NR",
        ErrorKind::UpgradeNotAllowed => "UAEX",
        ErrorKind::Forbidden => "RBAC",
        ErrorKind::DestinationNotAllowed => "NR",
    }
}

impl AccessLog {
    /// Opens the destination and starts the writer task.
    pub fn start(
        cfg: &AccessLogConfig,
        base: &Path,
        dropped: IntCounter,
    ) -> std::io::Result<Arc<AccessLog>> {
        let mut out: Box<dyn Write + Send> = if cfg.path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            let path = crate::tls::resolve(base, &cfg.path);
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        // A blocking thread, so file and pipe writes never stall the async workers.
        std::thread::Builder::new()
            .name("outrigger-access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Some(line) = rx.blocking_recv() {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    // Batch whatever is already queued into one write.
                    while buf.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok(l) => {
                                buf.extend_from_slice(l.as_bytes());
                                buf.push(b'\n');
                            }
                            Err(_) => break,
                        }
                    }
                    if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                        // Nowhere to report a broken log destination but the main log.
                        tracing::warn!("access log write failed");
                    }
                    buf.clear();
                }
            })?;
        Ok(Arc::new(AccessLog {
            config: cfg.clone(),
            tx,
            dropped,
        }))
    }

    pub fn emit(&self, e: &Entry) {
        let line = match self.config.format {
            AccessLogFormat::Json => json(e),
            AccessLogFormat::Text => text(e),
        };
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

fn rfc3339(t: Option<SystemTime>) -> String {
    let Some(t) = t else { return String::new() };
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn json(e: &Entry) -> String {
    serde_json::json!({
        "start_time": rfc3339(e.start),
        "method": e.method,
        "authority": e.authority,
        "path": e.path,
        "protocol": e.protocol,
        "status": e.status,
        "response_flags": e.flags,
        "bytes_received": e.bytes_received,
        "bytes_sent": e.bytes_sent,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "upstream_duration_ms": e.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
        "upstream_endpoint": e.endpoint,
        "cluster": e.cluster,
        "route": e.route,
        "attempts": e.attempts,
        "request_id": e.request_id,
        "user_agent": e.user_agent,
        "downstream_address": e.downstream.map(|a| a.to_string()),
        "tls_version": e.tls_version,
        "trace_id": e.trace_id,
        "client_identity": e.identity,
        "original_destination": e.original_dst.map(|a| a.to_string()),
    })
    .to_string()
}

/// A client-supplied value for the text format: `"` and `\` are escaped with a backslash and
/// control bytes written as `\xHH`, so that a header cannot end a quoted field or forge a line.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

fn text(e: &Entry) -> String {
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    format!(
        "[{}] \"{} {} {}\" {} {} {} {} {:.3} {} \"{}\" \"{}\" \"{}\" \"{}\" {} {}",
        rfc3339(e.start),
        esc(&e.method),
        esc(&e.path),
        e.protocol,
        e.status,
        e.flags,
        e.bytes_received,
        e.bytes_sent,
        e.duration.as_secs_f64() * 1000.0,
        e.upstream_duration
            .map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64() * 1000.0)),
        e.downstream.map_or("-".into(), |a| a.to_string()),
        esc(&e.user_agent),
        esc(&e.request_id),
        esc(&e.authority),
        opt(&e.cluster),
        opt(&e.endpoint),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_escape_quotes_backslashes_and_controls() {
        assert_eq!(esc("curl/8"), "curl/8");
        assert_eq!(esc(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(esc("a\nb"), "a\\x0ab");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_351_200_123);
        assert_eq!(rfc3339(Some(t)), "2026-11-22T12:40:00.123Z");
        assert_eq!(
            rfc3339(Some(SystemTime::UNIX_EPOCH)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
