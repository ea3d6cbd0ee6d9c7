//! The library's locator (placeholder until the library's side lands in the policy crate).

/// The name of the locator mapping, `[anon:NAME]` in `maps`.
pub const NAME: &[u8] = b"keepalive-shim-counters";
/// Bytes of the locator read.
pub const LEN: usize = 32;
/// The locator's magic.
pub const MAGIC: u64 = u64::from_le_bytes(*b"KASHLOC1");

/// The block's address and size from a locator's bytes.
pub fn parse(bytes: &[u8]) -> Option<(u64, u64)> {
    let word = |o: usize| Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?));
    if word(0)? != MAGIC {
        return None;
    }
    Some((word(16)?, word(24)?))
}
