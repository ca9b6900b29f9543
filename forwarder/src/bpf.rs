//! The XDP program of the AF_XDP driver, assembled by hand.
//!
//! An AF_XDP socket only sees frames an XDP program redirects to it. Prism's program is
//! small enough to write as eBPF instructions directly, which keeps the build free of a
//! C toolchain, clang, libbpf and prebuilt objects: the driver hands these instructions
//! to the kernel's verifier through the `bpf` syscall (in `io/`).
//!
//! What it does, per received frame: if it is Ethernet II + IPv4 without options, not a
//! fragment, UDP, and its destination port is in the media port range, redirect it to
//! the AF_XDP socket registered for the receive queue it arrived on (`bpf_redirect_map`
//! on an XSKMAP keyed by `rx_queue_index`, with `XDP_PASS` as the fallback when no
//! socket is registered for that queue). Everything else (ARP, IPv6, ICMP, other ports,
//! IP options, fragments, short frames) is passed to the kernel untouched, so the host
//! stays reachable and the normal UDP socket on each media port keeps working.
//!
//! The instruction encoding is `struct bpf_insn` (linux/bpf.h), eight bytes each.

use std::ops::RangeInclusive;

/// `XDP_PASS`: hand the frame to the kernel's stack.
pub const XDP_PASS: i32 = 2;
/// `BPF_FUNC_redirect_map`.
const FUNC_REDIRECT_MAP: i32 = 51;
/// `src_reg` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

// Opcodes: class | size/op | source.
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDX_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LDX_B: u8 = 0x71; // BPF_LDX | BPF_MEM | BPF_B
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_K: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const TO_BE: u8 = 0xdc; // BPF_ALU | BPF_END | BPF_TO_BE
const JGT_X: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JGT_K: u8 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JLT_K: u8 = 0xa5; // BPF_JMP | BPF_JLT | BPF_K
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// `struct xdp_md` field offsets.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE: i16 = 16;

/// One instruction, as the kernel reads it (little-endian host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The eight bytes of `struct bpf_insn` in host order.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// The program for an XSKMAP at `map_fd` and media ports `ports`.
///
/// Registers: r1 the context on entry, r6 the context kept, r2 `data`, r3 `data_end`,
/// r4 and r5 scratch; `pass` is the last two instructions.
pub fn redirect_program(map_fd: i32, ports: RangeInclusive<u16>) -> Vec<Insn> {
    let (lo, hi) = (i32::from(*ports.start()), i32::from(*ports.end()));
    let i = Insn::new;
    let mut p = vec![
        i(MOV64_X, 6, 1, 0, 0),
        i(LDX_W, 2, 1, MD_DATA, 0),
        i(LDX_W, 3, 1, MD_DATA_END, 0),
        // Bounds: Ethernet (14) + IPv4 without options (20) + UDP (8).
        i(MOV64_X, 4, 2, 0, 0),
        i(ADD64_K, 4, 0, 0, 42),
        i(JGT_X, 4, 3, PASS, 0),
        // EtherType IPv4 (0x0800, read little-endian as 0x0008).
        i(LDX_H, 5, 2, 12, 0),
        i(JNE_K, 5, 0, PASS, 0x0008),
        // Version 4, IHL 5.
        i(LDX_B, 5, 2, 14, 0),
        i(JNE_K, 5, 0, PASS, 0x45),
        // Not a fragment: flags/offset & 0x3fff == 0 (mask byte-swapped for the LE load).
        i(LDX_H, 5, 2, 20, 0),
        i(AND64_K, 5, 0, 0, 0xff3f),
        i(JNE_K, 5, 0, PASS, 0),
        // UDP.
        i(LDX_B, 5, 2, 23, 0),
        i(JNE_K, 5, 0, PASS, 17),
        // Destination port in range.
        i(LDX_H, 5, 2, 36, 0),
        i(TO_BE, 5, 0, 0, 16),
        i(JLT_K, 5, 0, PASS, lo),
        i(JGT_K, 5, 0, PASS, hi),
        // bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS)
        i(LDX_W, 2, 6, MD_RX_QUEUE, 0),
        i(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        i(0, 0, 0, 0, 0),
        i(MOV64_K, 3, 0, 0, XDP_PASS),
        i(CALL, 0, 0, 0, FUNC_REDIRECT_MAP),
        i(EXIT, 0, 0, 0, 0),
        // pass:
        i(MOV64_K, 0, 0, 0, XDP_PASS),
        i(EXIT, 0, 0, 0, 0),
    ];
    // Jump offsets are relative to the next instruction: patch every `PASS` placeholder.
    let pass = p.len() - 2;
    for (at, insn) in p.iter_mut().enumerate() {
        if insn.off == PASS && matches!(insn.code, JGT_X | JNE_K | JGT_K | JLT_K) {
            insn.off = (pass - at - 1) as i16;
        }
    }
    p
}

/// Placeholder offset for "jump to pass", patched once the program's length is known.
const PASS: i16 = i16::MIN;

/// The program as the byte image `BPF_PROG_LOAD` takes.
pub fn to_bytes(program: &[Insn]) -> Vec<u8> {
    program.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{write_headers, Endpoints, HEADERS_LEN};

    /// What the program decided for a frame.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        Pass,
        /// `bpf_redirect_map(map, key, flags)`.
        Redirect {
            map: i32,
            key: u64,
        },
    }

    /// A minimal interpreter for exactly the instructions the program uses, so its logic
    /// is tested without a kernel (the AF_XDP tests load it into the real verifier).
    fn run(program: &[Insn], frame: &[u8], rx_queue: u32) -> Verdict {
        // Memory: the frame at address 0x1000, the context elsewhere.
        const DATA: u64 = 0x1000;
        const CTX: u64 = 0x10;
        let mut r = [0u64; 11];
        r[1] = CTX;
        let mut pc = 0usize;
        let mut map = None;
        let load = |addr: u64, size: usize| -> u64 {
            if (CTX..CTX + 24).contains(&addr) {
                return match addr - CTX {
                    0 => DATA,
                    4 => DATA + frame.len() as u64,
                    16 => u64::from(rx_queue),
                    o => panic!("context offset {o}"),
                };
            }
            let at = (addr - DATA) as usize;
            assert!(
                at + size <= frame.len(),
                "out-of-bounds read the verifier would refuse"
            );
            let mut v = 0u64;
            for (k, b) in frame[at..at + size].iter().enumerate() {
                v |= u64::from(*b) << (8 * k);
            }
            v
        };
        loop {
            let i = program[pc];
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            let k = i64::from(i.imm) as u64;
            let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
            pc += 1;
            match i.code {
                MOV64_X => r[d] = r[s],
                MOV64_K => r[d] = k,
                ADD64_K => r[d] = r[d].wrapping_add(k),
                AND64_K => r[d] &= k,
                LDX_W => r[d] = load(r[s].wrapping_add(i.off as u64), 4),
                LDX_H => r[d] = load(r[s].wrapping_add(i.off as u64), 2),
                LDX_B => r[d] = load(r[s].wrapping_add(i.off as u64), 1),
                TO_BE => r[d] = u64::from((r[d] as u16).swap_bytes()),
                JGT_X if r[d] > r[s] => pc = target,
                JNE_K if r[d] != k => pc = target,
                JGT_K if r[d] > k => pc = target,
                JLT_K if r[d] < k => pc = target,
                JGT_X | JNE_K | JGT_K | JLT_K => {}
                LD_IMM64 => {
                    assert_eq!(i.src, PSEUDO_MAP_FD);
                    map = Some(i.imm);
                    r[d] = 0xdead;
                    pc += 1;
                }
                CALL => {
                    assert_eq!(i.imm, FUNC_REDIRECT_MAP);
                    assert_eq!(r[1], 0xdead, "r1 must be the map");
                    assert_eq!(r[3], XDP_PASS as u64);
                    return Verdict::Redirect {
                        map: map.unwrap(),
                        key: r[2],
                    };
                }
                EXIT => {
                    assert_eq!(r[0], XDP_PASS as u64);
                    return Verdict::Pass;
                }
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn udp_to(port: u16) -> Vec<u8> {
        let ends = Endpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "10.0.0.1:5000".parse().unwrap(),
            dst: std::net::SocketAddrV4::new("10.0.0.2".parse().unwrap(), port),
        };
        let mut f = vec![0; HEADERS_LEN + 20];
        write_headers(&mut f, &ends, 20, 1).unwrap();
        f
    }

    #[test]
    fn media_ports_are_redirected_by_queue_and_the_rest_passes() {
        let p = redirect_program(7, 7882..=7885);
        for port in [7882, 7883, 7885] {
            assert_eq!(
                run(&p, &udp_to(port), 3),
                Verdict::Redirect { map: 7, key: 3 },
                "port {port}"
            );
        }
        for port in [7881, 7886, 53, 0, 65535] {
            assert_eq!(run(&p, &udp_to(port), 0), Verdict::Pass, "port {port}");
        }
    }

    #[test]
    fn everything_that_is_not_plain_udp_over_ipv4_passes() {
        let p = redirect_program(7, 7882..=7882);
        let good = udp_to(7882);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        cases.push(arp);
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        cases.push(ipv6);
        let mut options = good.clone();
        options[14] = 0x46;
        cases.push(options);
        let mut more_fragments = good.clone();
        more_fragments[20] |= 0x20;
        cases.push(more_fragments);
        let mut offset = good.clone();
        offset[21] = 1;
        cases.push(offset);
        let mut tcp = good.clone();
        tcp[23] = 6;
        cases.push(tcp);
        cases.push(good[..41].to_vec());
        cases.push(Vec::new());
        for (n, f) in cases.iter().enumerate() {
            assert_eq!(run(&p, f, 0), Verdict::Pass, "case {n}");
        }
        // Don't Fragment alone is not a fragment.
        assert!(matches!(run(&p, &good, 0), Verdict::Redirect { .. }));
    }

    #[test]
    fn encoding_matches_struct_bpf_insn() {
        let p = redirect_program(9, 1..=2);
        let bytes = to_bytes(&p);
        assert_eq!(bytes.len(), p.len() * 8);
        // mov r6, r1
        assert_eq!(&bytes[..8], &[0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        // The map load: ld_imm64 r1 with src_reg PSEUDO_MAP_FD and the fd as immediate.
        let at = p.iter().position(|i| i.code == LD_IMM64).unwrap() * 8;
        assert_eq!(&bytes[at..at + 8], &[0x18, 0x11, 0, 0, 9, 0, 0, 0]);
        assert_eq!(&bytes[at + 8..at + 16], &[0; 8]);
        // Every jump lands on the pass block, inside the program.
        for (n, i) in p.iter().enumerate() {
            if matches!(i.code, JGT_X | JNE_K | JGT_K | JLT_K) {
                assert_eq!(n as i64 + 1 + i64::from(i.off), p.len() as i64 - 2);
            }
        }
    }
}
