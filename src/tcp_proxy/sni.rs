//! The server name of a TLS ClientHello, read without terminating TLS (SNI passthrough). Only
//! the first TLS record is looked at; a ClientHello split over several records (very rare,
//! huge post-quantum key shares aside) yields no name and takes the listener's default.

/// Whether `buf` holds a complete first TLS record (or can never become a ClientHello).
pub fn record_complete(buf: &[u8]) -> bool {
    if buf.first().is_some_and(|b| *b != 0x16) {
        return true;
    }
    buf.len() >= 5 && buf.len() >= 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize
}

/// The SNI host name in a ClientHello record, lowercased.
pub fn server_name(buf: &[u8]) -> Option<String> {
    let mut r = Reader(buf);
    if r.u8()? != 0x16 {
        return None; // not a handshake record
    }
    r.skip(2)?; // record version
    let len = r.u16()? as usize;
    let mut r = Reader(r.take(len)?);
    if r.u8()? != 0x01 {
        return None; // not a ClientHello
    }
    let hs_len = r.u24()? as usize;
    let mut r = Reader(r.take(hs_len)?);
    r.skip(2 + 32)?; // client version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()? as usize;
        let data = exts.take(len)?;
        if ty == 0 {
            let mut s = Reader(data);
            let list = s.u16()? as usize;
            let mut s = Reader(s.take(list)?);
            while !s.0.is_empty() {
                let kind = s.u8()?;
                let n = s.u16()? as usize;
                let name = s.take(n)?;
                if kind == 0 {
                    return std::str::from_utf8(name)
                        .ok()
                        .map(|n| n.to_ascii_lowercase());
                }
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

/// `*.example.com` matches any name ending in `.example.com` (not the apex); other patterns
/// match exactly, case-insensitively.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
        }
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello carrying `name`.
    pub fn client_hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0, 0];
        let entry_len = 3 + n.len();
        let mut ext = Vec::new();
        ext.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(entry_len as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
        ext.extend_from_slice(n);
        sni.extend_from_slice(&ext);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_sni_and_rejects_garbage() {
        let hello = client_hello("DB.Example.com");
        assert!(record_complete(&hello));
        assert!(!record_complete(&hello[..10]));
        assert_eq!(server_name(&hello).as_deref(), Some("db.example.com"));
        assert_eq!(server_name(&hello[..20]), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), None);
        assert!(record_complete(b"GET"));
    }

    #[test]
    fn patterns() {
        assert!(matches("db.example.com", "DB.example.com"));
        assert!(matches("*.example.com", "a.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("db.example.com", "db.example.org"));
    }
}
