//! PROXY protocol v1/v2 headers: any bytes give an address pair, LOCAL, or an error; never a
//! panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut stream = data;
    let _ = rt.block_on(outrigger::tcp_proxy::proxy_protocol::read(&mut stream));
});
