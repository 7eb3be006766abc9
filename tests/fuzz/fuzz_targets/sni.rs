//! The TLS ClientHello sniffer: any record gives a name or none, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outrigger::tcp_proxy::sni::record_complete(data);
    if let Some(name) = outrigger::tcp_proxy::sni::server_name(data) {
        let _ = outrigger::tcp_proxy::sni::matches("*.example.com", &name);
    }
});
