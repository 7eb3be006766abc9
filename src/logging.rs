//! Log output (stderr, text or JSON lines) and its filter, which the admin server's `/logging`
//! changes at run time, as Envoy's does. The filter is tracing-subscriber's `EnvFilter`: a
//! level (`debug`) or directives (`info,outrigger::health=debug`).

use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

type Handle = reload::Handle<EnvFilter, Registry>;

/// The installed filter and the text it was made from.
static CONTROL: OnceLock<(Handle, Mutex<String>)> = OnceLock::new();

/// Why logging cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A global subscriber was already installed.
    #[error("logging is not set up by this process")]
    NotInstalled,
    /// The filter (`RUST_LOG` or `--log-level`) does not parse.
    #[error("invalid log filter {filter:?}: {message}")]
    Invalid {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filters, lines go to stderr.
/// Panics are logged through it too, so under JSON every line on stderr is JSON.
pub fn init(format: Format) {
    let initial = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| "info".into());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&initial));
    use std::io::IsTerminal;
    let ansi = format == Format::Text && std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        Format::Text => registry.with(fmt).init(),
        Format::Json => registry.with(fmt.json()).init(),
    }
    let _ = CONTROL.set((handle, Mutex::new(initial)));
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %message, at = %at, "panic");
    }));
}

/// The filter in force.
pub fn filter() -> Result<String, LoggingError> {
    let (_, text) = CONTROL.get().ok_or(LoggingError::NotInstalled)?;
    Ok(text.lock().map(|t| t.clone()).unwrap_or_default())
}

/// Replaces the filter; a filter that does not parse changes nothing.
pub fn set_filter(new: &str) -> Result<(), LoggingError> {
    let (handle, text) = CONTROL.get().ok_or(LoggingError::NotInstalled)?;
    let invalid = |message: String| LoggingError::Invalid {
        filter: new.to_owned(),
        message,
    };
    let parsed = EnvFilter::try_new(new).map_err(|e| invalid(e.to_string()))?;
    handle.reload(parsed).map_err(|e| invalid(e.to_string()))?;
    if let Ok(mut t) = text.lock() {
        *t = new.to_owned();
    }
    tracing::info!(filter = new, "log filter changed");
    Ok(())
}
