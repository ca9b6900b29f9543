//! TURN credentials without a user database.
//!
//! Prism hands every participant short-lived TURN credentials in the TURN REST style
//! (draft-uberti-behave-turn-rest, what coturn calls `use-auth-secret`): the username is
//! `"<expiry unix seconds>:<participant>"` and the password is
//! `base64(HMAC-SHA1(secret, username))`. Whoever knows the shared secret (the embedded
//! TURN server, or a coturn configured with `static-auth-secret`) recomputes the password
//! from the username alone, so there is nothing to store or synchronise, and the access
//! token stays the only secret a client is ever given.
//!
//! The long-term key of RFC 8489 §9.2.2 is then `MD5(username ":" realm ":" password)`.
//!
//! Nonces are stateless too: the issue time and a MAC over it and the client's address,
//! keyed by a per-process random key. A nonce from another client or older than
//! [`NONCE_TTL_SECS`] is stale (438).

use std::net::SocketAddr;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// How long a nonce is accepted after it was issued.
pub const NONCE_TTL_SECS: u64 = 600;
/// Length of the nonces [`NonceKey::issue`] writes.
pub const NONCE_LEN: usize = 32;

/// HMAC-SHA1 of the concatenated `parts` keyed with `key`.
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut out = [0u8; 20];
    // HMAC accepts keys of any length, so this cannot fail; a zero MAC never verifies.
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) else {
        return out;
    };
    for p in parts {
        mac.update(p);
    }
    out.copy_from_slice(&mac.finalize().into_bytes()[..]);
    out
}

/// The TURN REST password for `username`: `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret, &[username.as_bytes()]))
}

/// A TURN REST username and password for `user`, valid until `expiry_unix`.
pub fn rest_credentials(secret: &[u8], user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// The expiry a TURN REST username carries (the digits before the first `:`, or the whole
/// username when it has none, as coturn reads it).
pub fn rest_expiry(username: &[u8]) -> Option<u64> {
    let digits = username.split(|&b| b == b':').next()?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// The RFC 8489 long-term key: `MD5(username ":" realm ":" password)`.
pub fn long_term_key(username: &[u8], realm: &[u8], password: &[u8]) -> [u8; 16] {
    let mut h = match openssl::hash::Hasher::new(openssl::hash::MessageDigest::md5()) {
        Ok(h) => h,
        Err(_) => return [0; 16],
    };
    let mut ok = true;
    for part in [username, b":", realm, b":", password] {
        ok &= h.update(part).is_ok();
    }
    let mut out = [0u8; 16];
    match h.finish() {
        Ok(d) if ok && d.len() == 16 => out.copy_from_slice(&d),
        _ => {}
    }
    out
}

/// The key for a TURN REST `username` under `secret` and `realm`.
pub fn rest_key(secret: &[u8], realm: &[u8], username: &[u8]) -> [u8; 16] {
    let password = base64::engine::general_purpose::STANDARD.encode(hmac_sha1(secret, &[username]));
    long_term_key(username, realm, password.as_bytes())
}

/// Issues and checks stateless nonces.
#[derive(Clone)]
pub struct NonceKey {
    key: [u8; 32],
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

fn addr_bytes(addr: SocketAddr, out: &mut [u8; 18]) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => out[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => out[..16].copy_from_slice(&ip.octets()),
    }
    out[16..].copy_from_slice(&addr.port().to_be_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(src: &[u8], dst: &mut [u8]) {
    for (i, b) in src.iter().enumerate() {
        if let Some(d) = dst.get_mut(2 * i..2 * i + 2) {
            d[0] = HEX[usize::from(b >> 4)];
            d[1] = HEX[usize::from(b & 15)];
        }
    }
}

impl NonceKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A random key from the OS.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        if openssl::rand::rand_bytes(&mut key).is_err() {
            // Fall back to something unpredictable enough for nonces (not for keys).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            key[..16].copy_from_slice(&t.to_le_bytes());
        }
        Self { key }
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> [u8; 20] {
        let mut a = [0u8; 18];
        addr_bytes(client, &mut a);
        hmac_sha1(&self.key, &[&issued.to_be_bytes(), &a])
    }

    /// A nonce for `client` issued at `now_secs`: 16 hex digits of time, 16 of MAC.
    pub fn issue(&self, now_secs: u64, client: SocketAddr) -> [u8; NONCE_LEN] {
        let mut out = [0u8; NONCE_LEN];
        hex_into(&now_secs.to_be_bytes(), &mut out[..16]);
        let mac = self.mac(now_secs, client);
        hex_into(&mac[..8], &mut out[16..]);
        out
    }

    /// Whether `nonce` was issued by this key for `client` less than [`NONCE_TTL_SECS`] ago.
    pub fn check(&self, nonce: &[u8], now_secs: u64, client: SocketAddr) -> bool {
        let Some(t) = nonce.get(..16) else {
            return false;
        };
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let mut issued: u64 = 0;
        for &c in t {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return false,
            };
            issued = (issued << 4) | u64::from(d);
        }
        if issued > now_secs || now_secs - issued >= NONCE_TTL_SECS {
            return false;
        }
        let want = self.issue(issued, client);
        want.iter()
            .zip(nonce)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn_example() {
        // coturn's turnutils: secret "north", username "1433209170:ninefingers" (checked
        // against HMAC-SHA1 computed independently with openssl dgst).
        let p = rest_password(b"north", "1433209170:ninefingers");
        let want = openssl::pkey::PKey::hmac(b"north")
            .and_then(|k| {
                let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &k)?;
                s.update(b"1433209170:ninefingers")?;
                s.sign_to_vec()
            })
            .unwrap();
        assert_eq!(p, base64::engine::general_purpose::STANDARD.encode(want));
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_pass() {
        // MD5("a:b:c"), as `md5sum` prints it.
        let k = long_term_key(b"a", b"b", b"c");
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "02cc8f08398a4f3113b554e8105ebe4c");
    }

    #[test]
    fn expiry_parses_only_digits() {
        assert_eq!(rest_expiry(b"1700000000:PA_x"), Some(1_700_000_000));
        assert_eq!(rest_expiry(b"1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry(b"x:PA"), None);
        assert_eq!(rest_expiry(b":PA"), None);
        assert_eq!(rest_expiry(b"99999999999999999999999:a"), None);
    }

    #[test]
    fn nonces_expire_and_bind_to_the_client() {
        let k = NonceKey::new([7; 32]);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let n = k.issue(1000, a);
        assert!(k.check(&n, 1000, a));
        assert!(k.check(&n, 1000 + NONCE_TTL_SECS - 1, a));
        assert!(!k.check(&n, 1000 + NONCE_TTL_SECS, a));
        assert!(!k.check(&n, 999, a));
        assert!(!k.check(&n, 1000, b));
        let mut bad = n;
        bad[31] ^= 1;
        assert!(!k.check(&bad, 1000, a));
        assert!(!k.check(b"short", 1000, a));
    }
}
