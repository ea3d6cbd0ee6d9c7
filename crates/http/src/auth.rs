//! Basic auth against bcrypt hashes (exporter-toolkit's `basic_auth_users`). A credential that
//! passed once is remembered (by a SHA-256 digest of user, password and hash, never the
//! password itself), so bcrypt's cost is paid once per distinct credential, not per scrape.
//! Checks run on the blocking pool under the handler slots, so a flood of wrong passwords
//! costs at most `max_handlers` threads.

use http::HeaderMap;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Users and their bcrypt hashes.
#[derive(Clone)]
pub struct BasicAuth {
    inner: Arc<Inner>,
}

struct Inner {
    users: HashMap<String, String>,
    /// Digests of credentials that passed.
    passed: Mutex<HashSet<[u8; 32]>>,
}

/// At most this many remembered credentials; then the memory starts over.
const REMEMBERED: usize = 1024;

pub(crate) enum Verdict {
    Allowed(String),
    Denied,
    /// No slot to check the password in before the deadline.
    Busy,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.inner.users.keys().collect();
        users.sort();
        f.debug_struct("BasicAuth").field("users", &users).finish()
    }
}

impl BasicAuth {
    /// From user names and bcrypt hashes (`$2a$`, `$2b$`, `$2x$`, `$2y$`); an error names the
    /// user whose hash is not one.
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> Result<BasicAuth, String> {
        let mut map = HashMap::new();
        for (user, hash) in users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users: the hash of user {user:?} is not a bcrypt hash (like \
                     $2y$10$ followed by 53 characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                ));
            }
            if user.contains(':') {
                return Err(format!(
                    "basic_auth_users: user {user:?} contains ':', which basic auth cannot carry"
                ));
            }
            map.insert(user, hash);
        }
        if map.is_empty() {
            return Err("basic_auth_users: no users".to_owned());
        }
        Ok(BasicAuth {
            inner: Arc::new(Inner {
                users: map,
                passed: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub(crate) async fn check(
        &self,
        headers: &HeaderMap,
        slots: &Arc<Semaphore>,
        deadline: Instant,
    ) -> Verdict {
        let Some((user, password)) = credentials(headers) else {
            return Verdict::Denied;
        };
        let digest = digest(&user, &password, self.inner.users.get(&user));
        if self.remembered(&digest) {
            return Verdict::Allowed(user);
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout_at(deadline, Arc::clone(slots).acquire_owned()).await
        else {
            return Verdict::Busy;
        };
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.verify(&user, &password).then_some(user)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Some(user))) => {
                self.remember(digest);
                Verdict::Allowed(user)
            }
            Ok(_) => Verdict::Denied,
            Err(_) => Verdict::Busy,
        }
    }

    fn remembered(&self, digest: &[u8; 32]) -> bool {
        self.inner
            .passed
            .lock()
            .map(|set| set.contains(digest))
            .unwrap_or(false)
    }

    fn remember(&self, digest: [u8; 32]) {
        if let Ok(mut set) = self.inner.passed.lock() {
            if set.len() >= REMEMBERED {
                set.clear();
            }
            set.insert(digest);
        }
    }
}

impl Inner {
    /// bcrypt's check; an unknown user costs the same as a known one (checked against another
    /// user's hash, and refused), so that timing does not tell which users exist.
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                if let Some(hash) = self.users.values().next() {
                    let _ = bcrypt::verify(password, hash);
                }
                false
            }
        }
    }
}

fn digest(user: &str, password: &[u8], hash: Option<&String>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(user.len() as u64).to_le_bytes());
    ctx.update(user.as_bytes());
    ctx.update(&(password.len() as u64).to_le_bytes());
    ctx.update(password);
    ctx.update(hash.map_or(&b""[..], |h| h.as_bytes()));
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The user and password of an `Authorization: Basic …` header.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64_decode(rest.trim_ascii())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, password) = decoded.split_at(colon);
    let user = String::from_utf8(user.to_vec()).ok()?;
    Some((user, password.get(1..)?.to_vec()))
}

/// Standard base64 with padding (RFC 4648 §4), as basic auth uses; `None` for anything else.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if !text.len().is_multiple_of(4) || text.len() > 16 << 10 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks_exact(4).enumerate() {
        let last = i + 1 == chunks;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in chunk.iter().take(4 - pad) {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(bytes.get(1..4 - pad)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_basic_auth_sends_it() {
        assert_eq!(base64_decode(b"YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode(b"YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode(b"YTo=").unwrap(), b"a:");
        assert_eq!(base64_decode(b"YQ==").unwrap(), b"a");
        assert_eq!(base64_decode(b"").unwrap(), b"");
        for bad in [&b"YQ="[..], b"Y===", b"YQ==YQ==", b"!!!!", b"YWxp\xff2U6"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn credentials_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h), None);
        h.insert("authorization", "basic YWxpY2U6czpl".parse().unwrap());
        assert_eq!(credentials(&h), Some(("alice".into(), b"s:e".to_vec())));
        h.insert("authorization", "Bearer YWxpY2U6czpl".parse().unwrap());
        assert_eq!(credentials(&h), None);
        h.insert("authorization", "Basic bm9jb2xvbg==".parse().unwrap());
        assert_eq!(credentials(&h), None);
        h.insert("authorization", "Basic".parse().unwrap());
        assert_eq!(credentials(&h), None);
    }
}
