//! The HTTP/1.1 framing guard's shadow parser: any bytes, cut into reads anywhere, never
//! panic, and the heads it counts do not depend on where the reads were cut.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let whole = outrigger::listener::framing_shadow(data, &[], 64 * 1024);
    let splits: Vec<usize> = (1..data.len()).step_by(cut as usize + 1).collect();
    let split = outrigger::listener::framing_shadow(data, &splits, 64 * 1024);
    assert_eq!(whole, split, "cut every {} bytes", cut as usize + 1);
});
