//! Protocol detection's first-bytes classifier: any prefix gets a verdict or a wait, never a
//! panic, and a verdict never changes as more bytes arrive.
#![no_main]
use libfuzzer_sys::fuzz_target;
use outrigger::listener::detect::classify;

fuzz_target!(|data: &[u8]| {
    let full = classify(data);
    for n in 0..data.len().min(24) {
        if let Some(early) = classify(&data[..n]) {
            assert_eq!(Some(early), full, "decided on {n} bytes, then changed");
            break;
        }
    }
});
