//! The config loader: any text is a config or a list of located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = outrigger::config::parse(text, "fuzz.yaml", &|_| None) {
        let _ = e.to_string();
    }
});
