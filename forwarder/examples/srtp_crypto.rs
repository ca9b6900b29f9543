//! Crypto library comparison for SRTP: protect + unprotect of one RTP packet (12-byte
//! header, 1200-byte payload) per iteration, for AEAD_AES_128_GCM and
//! AES_CM_128_HMAC_SHA1_80, with each candidate library, then Prism's `SrtpContext`.
//!
//! Each candidate does the same per-packet work SRTP needs: GCM seal with the header as
//! AAD and open with tag check; or AES-CTR plus HMAC-SHA1 over header, payload and ROC, then
//! the tag check and AES-CTR again. Keys are scheduled once outside the loop, as a context
//! would; only the IV changes per packet.
//!
//! Run: `cargo run --release -p prism-forwarder --features crypto-bench --example srtp_crypto`

use std::hint::black_box;
use std::time::Instant;

use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile, MAX_OVERHEAD};

const PAYLOAD: usize = 1200;
const KEY: [u8; 16] = [0x42; 16];
const AUTH_KEY: [u8; 20] = [0x17; 20];

/// One library's per-packet SRTP work.
trait Candidate {
    fn name(&self) -> &'static str;
    fn gcm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 12]) -> bool;
    fn cm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 16]) -> bool;
}

/// Best of `ROUNDS` timed rounds of `iters` calls, in ns per call: the machine is shared,
/// so the minimum is the figure least disturbed by other work.
fn time<F: FnMut(u32) -> bool>(iters: u32, mut f: F) -> f64 {
    const ROUNDS: u32 = 7;
    for i in 0..iters / 10 {
        assert!(f(i));
    }
    let mut best = f64::MAX;
    for r in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..iters {
            assert!(black_box(f(r * iters + i)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn iv12(i: u32) -> [u8; 12] {
    let mut iv = [9u8; 12];
    iv[8..].copy_from_slice(&i.to_be_bytes());
    iv
}

fn iv16(i: u32) -> [u8; 16] {
    let mut iv = [9u8; 16];
    iv[10..14].copy_from_slice(&i.to_be_bytes());
    iv[14] = 0;
    iv[15] = 0;
    iv
}

mod ossl {
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;
    use openssl::sha::Sha1;

    /// Contexts keyed once; IV re-initialised per packet.
    pub struct Reused {
        gcm: CipherCtx,
        ctr: CipherCtx,
        inner: Sha1,
        outer: Sha1,
    }

    pub fn hmac_pads(key: &[u8; 20]) -> (Sha1, Sha1) {
        let (mut i, mut o) = ([0x36u8; 64], [0x5cu8; 64]);
        for (n, k) in key.iter().enumerate() {
            i[n] ^= k;
            o[n] ^= k;
        }
        let (mut si, mut so) = (Sha1::new(), Sha1::new());
        si.update(&i);
        so.update(&o);
        (si, so)
    }

    impl Reused {
        pub fn new() -> Self {
            let mut gcm = CipherCtx::new().unwrap();
            gcm.encrypt_init(
                Some(Cipher::aes_128_gcm()),
                Some(&super::KEY),
                Some(&[0; 12]),
            )
            .unwrap();
            let mut ctr = CipherCtx::new().unwrap();
            ctr.encrypt_init(
                Some(Cipher::aes_128_ctr()),
                Some(&super::KEY),
                Some(&[0; 16]),
            )
            .unwrap();
            let (inner, outer) = hmac_pads(&super::AUTH_KEY);
            Self {
                gcm,
                ctr,
                inner,
                outer,
            }
        }

        fn mac(&self, header: &[u8], payload: &[u8]) -> [u8; 20] {
            let mut i = self.inner.clone();
            i.update(header);
            i.update(payload);
            i.update(&[0, 0, 0, 0]);
            let mut o = self.outer.clone();
            o.update(&i.finish());
            o.finish()
        }
    }

    impl super::Candidate for Reused {
        fn name(&self) -> &'static str {
            "openssl 3.0 (EVP, contexts reused)"
        }

        fn gcm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 12]) -> bool {
            let mut tag = [0u8; 16];
            let n = payload.len();
            self.gcm.encrypt_init(None, None, Some(iv)).unwrap();
            self.gcm.cipher_update(header, None).unwrap();
            self.gcm.cipher_update_inplace(payload, n).unwrap();
            self.gcm.cipher_final(&mut []).unwrap();
            self.gcm.tag(&mut tag).unwrap();
            self.gcm.decrypt_init(None, None, Some(iv)).unwrap();
            self.gcm.set_tag(&tag).unwrap();
            self.gcm.cipher_update(header, None).unwrap();
            self.gcm.cipher_update_inplace(payload, n).unwrap();
            self.gcm.cipher_final(&mut []).is_ok()
        }

        fn cm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 16]) -> bool {
            let n = payload.len();
            self.ctr.encrypt_init(None, None, Some(iv)).unwrap();
            self.ctr.cipher_update_inplace(payload, n).unwrap();
            let tag = self.mac(header, payload);
            let ok = self.mac(header, payload)[..10] == tag[..10];
            self.ctr.encrypt_init(None, None, Some(iv)).unwrap();
            self.ctr.cipher_update_inplace(payload, n).unwrap();
            ok
        }
    }

    /// A fresh `EVP_CIPHER_CTX` per packet (what `Crypter::new` per packet costs).
    pub struct PerPacket;

    impl super::Candidate for PerPacket {
        fn name(&self) -> &'static str {
            "openssl 3.0 (new context per packet)"
        }

        fn gcm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 12]) -> bool {
            let mut tag = [0u8; 16];
            let n = payload.len();
            let mut c = CipherCtx::new().unwrap();
            c.encrypt_init(Some(Cipher::aes_128_gcm()), Some(&super::KEY), Some(iv))
                .unwrap();
            c.cipher_update(header, None).unwrap();
            c.cipher_update_inplace(payload, n).unwrap();
            c.cipher_final(&mut []).unwrap();
            c.tag(&mut tag).unwrap();
            let mut d = CipherCtx::new().unwrap();
            d.decrypt_init(Some(Cipher::aes_128_gcm()), Some(&super::KEY), Some(iv))
                .unwrap();
            d.set_tag(&tag).unwrap();
            d.cipher_update(header, None).unwrap();
            d.cipher_update_inplace(payload, n).unwrap();
            d.cipher_final(&mut []).is_ok()
        }

        fn cm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 16]) -> bool {
            let n = payload.len();
            let (inner, outer) = hmac_pads(&super::AUTH_KEY);
            let mac = |p: &[u8]| {
                let mut i = inner.clone();
                i.update(header);
                i.update(p);
                i.update(&[0, 0, 0, 0]);
                let mut o = outer.clone();
                o.update(&i.finish());
                o.finish()
            };
            for _ in 0..2 {
                let mut c = CipherCtx::new().unwrap();
                c.encrypt_init(Some(Cipher::aes_128_ctr()), Some(&super::KEY), Some(iv))
                    .unwrap();
                c.cipher_update_inplace(payload, n).unwrap();
                let _ = mac(payload);
            }
            true
        }
    }
}

mod rustcrypto {
    use aes::Aes128;
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::Aes128Gcm;
    use ctr::cipher::{InnerIvInit, StreamCipher};
    use hmac::{Hmac, Mac};
    use sha1::Sha1;

    pub struct Rc {
        gcm: Aes128Gcm,
        aes: Aes128,
        mac: Hmac<Sha1>,
    }

    impl Rc {
        pub fn new() -> Self {
            Self {
                gcm: Aes128Gcm::new(&super::KEY.into()),
                aes: Aes128::new(&super::KEY.into()),
                mac: <Hmac<Sha1> as hmac::KeyInit>::new_from_slice(&super::AUTH_KEY).unwrap(),
            }
        }

        fn mac(&self, header: &[u8], payload: &[u8]) -> [u8; 20] {
            let mut m = self.mac.clone();
            m.update(header);
            m.update(payload);
            m.update(&[0, 0, 0, 0]);
            m.finalize().into_bytes().into()
        }

        fn ctr(&self, iv: &[u8; 16], payload: &mut [u8]) {
            let core = ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
                self.aes.clone(),
                iv.into(),
            );
            let mut c = ctr::Ctr128BE::<Aes128>::from_core(core);
            c.apply_keystream(payload);
        }
    }

    impl super::Candidate for Rc {
        fn name(&self) -> &'static str {
            "RustCrypto (aes-gcm 0.10, aes 0.8, ctr 0.9, hmac 0.12, sha1 0.10)"
        }

        fn gcm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 12]) -> bool {
            let tag = self
                .gcm
                .encrypt_in_place_detached(iv.into(), header, payload)
                .unwrap();
            self.gcm
                .decrypt_in_place_detached(iv.into(), header, payload, &tag)
                .is_ok()
        }

        fn cm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 16]) -> bool {
            self.ctr(iv, payload);
            let tag = self.mac(header, payload);
            let ok = self.mac(header, payload)[..10] == tag[..10];
            self.ctr(iv, payload);
            ok
        }
    }
}

mod awslc {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
    use aws_lc_rs::hmac;
    use aws_lc_rs::iv::FixedLength;

    pub struct Aws {
        gcm: LessSafeKey,
        ctr: EncryptingKey,
        mac: hmac::Key,
    }

    impl Aws {
        pub fn new() -> Self {
            Self {
                gcm: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &super::KEY).unwrap()),
                ctr: EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &super::KEY).unwrap())
                    .unwrap(),
                mac: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &super::AUTH_KEY),
            }
        }

        fn mac(&self, header: &[u8], payload: &[u8]) -> hmac::Tag {
            let mut m = hmac::Context::with_key(&self.mac);
            m.update(header);
            m.update(payload);
            m.update(&[0, 0, 0, 0]);
            m.sign()
        }

        fn ctr(&self, iv: &[u8; 16], payload: &mut [u8]) {
            let ctx = EncryptionContext::Iv128(FixedLength::from(iv));
            self.ctr.less_safe_encrypt(payload, ctx).unwrap();
        }
    }

    impl super::Candidate for Aws {
        fn name(&self) -> &'static str {
            "aws-lc-rs 1.19 (aws-lc-sys 0.47)"
        }

        fn gcm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 12]) -> bool {
            let tag = self
                .gcm
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*iv),
                    Aad::from(header),
                    payload,
                )
                .unwrap();
            self.gcm
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*iv),
                    Aad::from(header),
                    tag.as_ref(),
                    payload,
                )
                .is_ok()
        }

        fn cm(&mut self, header: &[u8], payload: &mut [u8], iv: &[u8; 16]) -> bool {
            self.ctr(iv, payload);
            let tag = self.mac(header, payload);
            let ok = self.mac(header, payload).as_ref()[..10] == tag.as_ref()[..10];
            self.ctr(iv, payload);
            ok
        }
    }
}

fn prism(profile: SrtpProfile, iters: u32) -> f64 {
    let keys = SrtpKeys::new(profile, &KEY, &[3; 14][..profile.salt_len()]).unwrap();
    let mut tx = SrtpContext::new(profile, &keys).unwrap();
    let mut rx = SrtpContext::new(profile, &keys).unwrap();
    let mut buf = vec![0u8; 12 + PAYLOAD + MAX_OVERHEAD];
    buf[0] = 0x80;
    buf[1] = 96;
    buf[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let mut seq = 0u16;
    time(iters, |_| {
        seq = seq.wrapping_add(1);
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        let n = tx.protect_rtp(&mut buf, 12 + PAYLOAD).unwrap();
        let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
        m == 12 + PAYLOAD
    })
}

fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let header = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78];
    let mut payload = vec![0xA5u8; PAYLOAD];
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!("cpu: {cpu}; best of 7 rounds of {iters} packets; payload {PAYLOAD} B");
    println!("ns per protect+unprotect of one packet\n");
    println!("| library | AEAD_AES_128_GCM | AES_CM_128_HMAC_SHA1_80 |");
    println!("|---|---:|---:|");
    let mut candidates: Vec<Box<dyn Candidate>> = vec![
        Box::new(ossl::Reused::new()),
        Box::new(ossl::PerPacket),
        Box::new(rustcrypto::Rc::new()),
        Box::new(awslc::Aws::new()),
    ];
    for c in &mut candidates {
        let g = time(iters, |i| c.gcm(&header, &mut payload, &iv12(i)));
        let m = time(iters, |i| c.cm(&header, &mut payload, &iv16(i)));
        println!("| {} | {g:.0} | {m:.0} |", c.name());
    }
    let g = prism(SrtpProfile::AeadAes128Gcm, iters);
    let m = prism(SrtpProfile::AesCm128HmacSha1_80, iters);
    println!("| Prism SrtpContext (aws-lc-rs), full protect_rtp+unprotect_rtp | {g:.0} | {m:.0} |");
}
