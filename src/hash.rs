//! The one stable hash of the proxy, shared by consistent hashing (ring_hash) and the TLS
//! configuration fingerprint.

/// FNV-1a with a splitmix64 finish: stable across builds and platforms (unlike std's hasher),
/// so every outrigger replica maps a key to the same endpoint.
pub fn hash_key(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
