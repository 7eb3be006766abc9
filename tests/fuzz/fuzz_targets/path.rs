//! Path normalisation: never a panic; a normalised path starts with `/`, has no dot segment
//! left, and normalising it again changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use outrigger::config::EscapedSlashes;
use outrigger::path::PathPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/{text}");
    for escaped in [EscapedSlashes::Reject, EscapedSlashes::Keep, EscapedSlashes::Unescape] {
        let p = PathPolicy { normalize: true, merge_slashes: true, escaped_slashes: escaped };
        let Ok(out) = p.apply(&path) else { continue };
        let out = out.unwrap_or_else(|| path.clone());
        assert!(out.starts_with('/'), "{out:?}");
        assert!(!out.split('/').any(|s| s == "." || s == ".."), "{path:?} -> {out:?}");
        assert_eq!(p.apply(&out), Ok(None), "{path:?} -> {out:?} is not stable");
    }
});
