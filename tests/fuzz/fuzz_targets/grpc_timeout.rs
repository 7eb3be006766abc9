//! The `grpc-timeout` header: any value is a duration or nothing, never a panic or overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("grpc-timeout", value);
    let _ = outrigger::http_proxy::grpc::timeout(&headers);
});
