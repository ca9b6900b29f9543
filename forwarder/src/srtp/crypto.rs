//! The three primitives SRTP needs, over OpenSSL's EVP layer: AES-128 in counter mode,
//! AES-128-GCM, and HMAC-SHA1.
//!
//! Why OpenSSL: it measured fastest of the candidates on this hardware (see `docs/srtp.md`)
//! and the DTLS handshake links it anyway. Why these wrappers: creating an
//! `EVP_CIPHER_CTX` mallocs and expands the key, so each primitive creates its context once
//! with the session key and afterwards only re-initialises the IV per packet, which touches
//! no allocator. HMAC is built from two precomputed SHA-1 states (key XOR ipad, key XOR
//! opad) that are plain structs, cloned per packet on the stack; OpenSSL's own HMAC and
//! `EVP_DigestSign` APIs would allocate per packet.
//!
//! Invariants: every method takes exact-length slices from its caller and returns
//! `SrtpError::Crypto` on any OpenSSL failure; nothing here panics for lengths the SRTP
//! layer can produce (packets are far below `c_int::MAX`).

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::sha::Sha1;

use super::SrtpError;

/// Length of a SHA-1 digest and of the SRTP session authentication key.
pub(crate) const SHA1_LEN: usize = 20;
/// GCM tag length used by RFC 7714 profiles.
pub(crate) const GCM_TAG_LEN: usize = 16;

fn crypto<T, E>(r: Result<T, E>) -> Result<T, SrtpError> {
    r.map_err(|_| SrtpError::Crypto)
}

/// AES-128 in counter mode with a 128-bit counter block, as RFC 3711 §4.1.1 uses it.
pub(crate) struct AesCtr {
    ctx: CipherCtx,
}

impl AesCtr {
    pub(crate) fn new(key: &[u8; 16]) -> Result<Self, SrtpError> {
        let mut ctx = crypto(CipherCtx::new())?;
        crypto(ctx.encrypt_init(Some(Cipher::aes_128_ctr()), Some(key), Some(&[0; 16])))?;
        Ok(Self { ctx })
    }

    /// XORs the keystream starting at counter block `iv` into `data`.
    pub(crate) fn apply(&mut self, iv: &[u8; 16], data: &mut [u8]) -> Result<(), SrtpError> {
        crypto(self.ctx.encrypt_init(None, None, Some(iv)))?;
        let n = data.len();
        crypto(self.ctx.cipher_update_inplace(data, n))?;
        Ok(())
    }

    /// Writes `src` XOR keystream into `dst`, which must have the same length.
    pub(crate) fn apply_into(
        &mut self,
        iv: &[u8; 16],
        src: &[u8],
        dst: &mut [u8],
    ) -> Result<(), SrtpError> {
        if src.len() != dst.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        crypto(self.ctx.encrypt_init(None, None, Some(iv)))?;
        crypto(self.ctx.cipher_update(src, Some(dst)))?;
        Ok(())
    }
}

/// AES-128-GCM with a 96-bit IV and a 128-bit tag (RFC 7714).
pub(crate) struct AesGcm {
    ctx: CipherCtx,
}

impl AesGcm {
    pub(crate) fn new(key: &[u8; 16]) -> Result<Self, SrtpError> {
        let mut ctx = crypto(CipherCtx::new())?;
        crypto(ctx.encrypt_init(Some(Cipher::aes_128_gcm()), Some(key), Some(&[0; 12])))?;
        Ok(Self { ctx })
    }

    /// Encrypts `data` in place and writes the tag over the associated data (`aad`, two
    /// pieces concatenated; SRTCP's is not contiguous) and the ciphertext.
    pub(crate) fn seal(
        &mut self,
        iv: &[u8; 12],
        aad: [&[u8]; 2],
        data: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), SrtpError> {
        crypto(self.ctx.encrypt_init(None, None, Some(iv)))?;
        self.aad(aad)?;
        let n = data.len();
        crypto(self.ctx.cipher_update_inplace(data, n))?;
        self.finish_seal(tag)
    }

    /// Like [`seal`](Self::seal) but reads the plaintext from `src` and writes the
    /// ciphertext to `dst` (same length).
    pub(crate) fn seal_into(
        &mut self,
        iv: &[u8; 12],
        aad: [&[u8]; 2],
        src: &[u8],
        dst: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), SrtpError> {
        if src.len() != dst.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        crypto(self.ctx.encrypt_init(None, None, Some(iv)))?;
        self.aad(aad)?;
        crypto(self.ctx.cipher_update(src, Some(dst)))?;
        self.finish_seal(tag)
    }

    fn aad(&mut self, aad: [&[u8]; 2]) -> Result<(), SrtpError> {
        for part in aad {
            if !part.is_empty() {
                crypto(self.ctx.cipher_update(part, None))?;
            }
        }
        Ok(())
    }

    fn finish_seal(&mut self, tag: &mut [u8]) -> Result<(), SrtpError> {
        // GCM is a stream mode: final emits no bytes, it only computes the tag.
        crypto(self.ctx.cipher_final(&mut []))?;
        crypto(self.ctx.tag(tag))
    }

    /// Decrypts `data` in place and checks `tag`. On `AuthFailed` the contents of `data`
    /// are unspecified (OpenSSL decrypts and authenticates in one pass); callers drop it.
    pub(crate) fn open(
        &mut self,
        iv: &[u8; 12],
        aad: [&[u8]; 2],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), SrtpError> {
        crypto(self.ctx.decrypt_init(None, None, Some(iv)))?;
        crypto(self.ctx.set_tag(tag))?;
        self.aad(aad)?;
        let n = data.len();
        crypto(self.ctx.cipher_update_inplace(data, n))?;
        self.ctx
            .cipher_final(&mut [])
            .map(|_| ())
            .map_err(|_| SrtpError::AuthFailed)
    }
}

/// HMAC-SHA1 (RFC 2104) with the key schedule done once.
#[derive(Clone)]
pub(crate) struct HmacSha1 {
    inner: Sha1,
    outer: Sha1,
}

impl HmacSha1 {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            block[..SHA1_LEN].copy_from_slice(&openssl::sha::sha1(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(block) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Sha1::new();
        inner.update(&ipad);
        let mut outer = Sha1::new();
        outer.update(&opad);
        Self { inner, outer }
    }

    /// A running MAC computation: feed it with `update`, close it with [`finish`].
    pub(crate) fn start(&self) -> Sha1 {
        self.inner.clone()
    }

    pub(crate) fn finish(&self, inner: Sha1) -> [u8; SHA1_LEN] {
        let mut outer = self.outer.clone();
        outer.update(&inner.finish());
        outer.finish()
    }
}

/// Compares two tags in time independent of where they differ.
pub(crate) fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The AES-CM pseudo-random function of RFC 3711 §4.3.3: `len` bytes of keystream under
/// the master key from counter block `iv`. Slow path (session setup only).
pub(crate) fn aes_cm_prf(key: &[u8; 16], iv: &[u8; 16], out: &mut [u8]) -> Result<(), SrtpError> {
    out.fill(0);
    AesCtr::new(key)?.apply(iv, out)
}
