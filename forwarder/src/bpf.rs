//! The XDP program of the AF_XDP driver, assembled by hand.
//!
//! An AF_XDP socket only sees frames an XDP program redirects to it. Prism's program is
//! small enough to write as eBPF instructions directly, which keeps the build free of a
//! C toolchain, clang, libbpf and prebuilt objects: the driver hands these instructions
//! to the kernel's verifier through the `bpf` syscall (in `io/`).
//!
//! One program serves every core on an interface: the driver attaches it once per
//! interface and each core registers its AF_XDP socket and its media port in two maps.
//! What it does, per received frame: if it is Ethernet II + IPv4 without options, not a
//! fragment, UDP, and its destination port is a media port *owned by the queue the frame
//! arrived on*, redirect it to the AF_XDP socket of that queue (`bpf_redirect_map` on an
//! XSKMAP keyed by `rx_queue_index`, with `XDP_PASS` as the fallback when no socket is
//! registered there). The owner comes from the ports map: an array indexed by UDP port
//! whose value is the owning queue plus one (0: not a media port; ports are per core, a
//! core serves one queue). Checking the owner matters because a frame redirected to a
//! socket bound to another queue is dropped by the kernel; a media frame on the wrong
//! queue is passed instead, and reaches its port's normal UDP socket, which the owning
//! core reads as its fallback. Everything else (ARP, IPv6, ICMP, other ports, IP options,
//! fragments, short frames) is passed to the kernel untouched, so the host stays
//! reachable and the normal UDP socket on each media port keeps working.
//!
//! What it passes because it is IPv4 but not plain UDP (too short, IP options, a fragment,
//! another protocol) or a media port on the wrong queue it counts first, per receive
//! queue and [`PassReason`], in an array map: the driver cannot see those frames, and an
//! operator wants to know they arrive. The redirect path, taken by every media frame,
//! makes one array lookup (inlined by the verifier) and touches no counter.
//!
//! The instruction encoding is `struct bpf_insn` (linux/bpf.h), eight bytes each.

/// `XDP_PASS`: hand the frame to the kernel's stack.
pub const XDP_PASS: i32 = 2;
/// `BPF_FUNC_redirect_map`.
const FUNC_REDIRECT_MAP: i32 = 51;
/// `BPF_FUNC_map_lookup_elem`.
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
/// `BPF_ADD` as the immediate of an atomic instruction (no fetch).
const ATOMIC_ADD: i32 = 0x00;
/// `src_reg` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

// Opcodes: class | size/op | source.
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const LDX_H: u8 = 0x69; // BPF_LDX | BPF_MEM | BPF_H
const LDX_B: u8 = 0x71; // BPF_LDX | BPF_MEM | BPF_B
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_K: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const ADD64_X: u8 = 0x0f; // BPF_ALU64 | BPF_ADD | BPF_X
const MUL64_K: u8 = 0x27; // BPF_ALU64 | BPF_MUL | BPF_K
const STX_W: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const TO_BE: u8 = 0xdc; // BPF_ALU | BPF_END | BPF_TO_BE
const JGT_X: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
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

/// Why the program passed a frame to the kernel instead of redirecting it: counted per
/// receive queue in the counters map, at key `queue * PASS_REASONS + reason`. Frames that
/// are not IPv4 at all (ARP, IPv6) and UDP to other ports are the host's own traffic and
/// are passed without counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// IPv4, but shorter than Ethernet + IPv4 + UDP headers.
    TooShort = 0,
    /// IPv4 with options (IHL above 5) or a bad version/IHL byte.
    IpOptions = 1,
    /// An IPv4 fragment (More Fragments or a non-zero offset).
    Fragment = 2,
    /// IPv4, not UDP.
    NotUdp = 3,
    /// UDP to a media port that another queue's core owns (RSS or steering sent it here).
    WrongQueue = 4,
}

/// Slots per queue in the counters map.
pub const PASS_REASONS: u32 = 5;
/// Entries of the ports map: one per UDP port.
pub const PORTS: u32 = 65_536;
/// Queues the counters map has slots for (frames on higher queues are passed uncounted).
pub const COUNTED_QUEUES: u32 = 64;

impl PassReason {
    pub const ALL: [PassReason; PASS_REASONS as usize] = [
        PassReason::TooShort,
        PassReason::IpOptions,
        PassReason::Fragment,
        PassReason::NotUdp,
        PassReason::WrongQueue,
    ];

    /// The reason label in stats and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::TooShort => "too_short",
            PassReason::IpOptions => "ip_options",
            PassReason::Fragment => "fragment",
            PassReason::NotUdp => "not_udp",
            PassReason::WrongQueue => "wrong_queue",
        }
    }

    /// The counters map key for this reason on `queue`.
    pub fn key(self, queue: u32) -> u32 {
        queue * PASS_REASONS + self as u32
    }
}

/// The program for an XSKMAP at `map_fd`, a ports map at `ports_fd` (UDP port → owning
/// queue + 1) and a counters array at `counts_fd` (see [`PassReason`]).
///
/// Registers: r1 the context on entry, r6 the context kept, r7 the pass reason, r2 `data`
/// (then the key of a call), r3 `data_end`, r4 and r5 scratch. The redirect is the fast
/// path and touches no counter; `count` adds one to the frame's (queue, reason) slot with
/// an atomic add (frames on the pass path are rare), then falls into `pass`.
pub fn redirect_program(map_fd: i32, ports_fd: i32, counts_fd: i32) -> Vec<Insn> {
    let i = Insn::new;
    let reason = |r: PassReason| i(MOV64_K, 7, 0, 0, r as i32);
    let mut p = vec![
        i(MOV64_X, 6, 1, 0, 0),
        i(LDX_W, 2, 1, MD_DATA, 0),
        i(LDX_W, 3, 1, MD_DATA_END, 0),
        // Ethernet header, then EtherType IPv4 (0x0800, read little-endian as 0x0008).
        i(MOV64_X, 4, 2, 0, 0),
        i(ADD64_K, 4, 0, 0, 14),
        i(JGT_X, 4, 3, PASS, 0),
        i(LDX_H, 5, 2, 12, 0),
        i(JNE_K, 5, 0, PASS, 0x0008),
        // Bounds: Ethernet (14) + IPv4 without options (20) + UDP (8).
        reason(PassReason::TooShort),
        i(MOV64_X, 4, 2, 0, 0),
        i(ADD64_K, 4, 0, 0, 42),
        i(JGT_X, 4, 3, COUNT, 0),
        // Version 4, IHL 5.
        reason(PassReason::IpOptions),
        i(LDX_B, 5, 2, 14, 0),
        i(JNE_K, 5, 0, COUNT, 0x45),
        // Not a fragment: flags/offset & 0x3fff == 0 (mask byte-swapped for the LE load).
        reason(PassReason::Fragment),
        i(LDX_H, 5, 2, 20, 0),
        i(AND64_K, 5, 0, 0, 0xff3f),
        i(JNE_K, 5, 0, COUNT, 0),
        // UDP.
        reason(PassReason::NotUdp),
        i(LDX_B, 5, 2, 23, 0),
        i(JNE_K, 5, 0, COUNT, 17),
        // The destination port's owner: ports[dport] (the key on the stack).
        i(LDX_H, 5, 2, 36, 0),
        i(TO_BE, 5, 0, 0, 16),
        i(STX_W, 10, 5, -8, 0),
        i(LD_IMM64, 1, PSEUDO_MAP_FD, 0, ports_fd),
        i(0, 0, 0, 0, 0),
        i(MOV64_X, 2, 10, 0, 0),
        i(ADD64_K, 2, 0, 0, -8),
        i(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        i(JEQ_K, 0, 0, PASS, 0),
        // 0: not a media port; else it must be this queue's (queue + 1).
        i(LDX_W, 5, 0, 0, 0),
        i(JEQ_K, 5, 0, PASS, 0),
        i(LDX_W, 2, 6, MD_RX_QUEUE, 0),
        i(MOV64_X, 4, 2, 0, 0),
        i(ADD64_K, 4, 0, 0, 1),
        reason(PassReason::WrongQueue),
        i(JNE_X, 5, 4, COUNT, 0),
        // bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS)
        i(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        i(0, 0, 0, 0, 0),
        i(MOV64_K, 3, 0, 0, XDP_PASS),
        i(CALL, 0, 0, 0, FUNC_REDIRECT_MAP),
        i(EXIT, 0, 0, 0, 0),
        // count: key = rx_queue * PASS_REASONS + reason, on the stack.
        i(LDX_W, 8, 6, MD_RX_QUEUE, 0),
        i(MUL64_K, 8, 0, 0, PASS_REASONS as i32),
        i(ADD64_X, 8, 7, 0, 0),
        i(STX_W, 10, 8, -4, 0),
        i(LD_IMM64, 1, PSEUDO_MAP_FD, 0, counts_fd),
        i(0, 0, 0, 0, 0),
        i(MOV64_X, 2, 10, 0, 0),
        i(ADD64_K, 2, 0, 0, -4),
        i(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        i(JEQ_K, 0, 0, PASS, 0),
        i(MOV64_K, 1, 0, 0, 1),
        i(ATOMIC_DW, 0, 1, 0, ATOMIC_ADD),
        // pass:
        i(MOV64_K, 0, 0, 0, XDP_PASS),
        i(EXIT, 0, 0, 0, 0),
    ];
    // Jump offsets are relative to the next instruction: patch the placeholders.
    let pass = p.len() - 2;
    let count = p.len() - 14;
    for (at, insn) in p.iter_mut().enumerate() {
        if is_jump(insn.code) {
            match insn.off {
                PASS => insn.off = (pass - at - 1) as i16,
                COUNT => insn.off = (count - at - 1) as i16,
                _ => {}
            }
        }
    }
    p
}

fn is_jump(code: u8) -> bool {
    matches!(code, JGT_X | JNE_K | JNE_X | JEQ_K)
}

/// Placeholder offset for "jump to count", patched once the program's length is known.
const COUNT: i16 = i16::MIN + 1;
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

    const XSKMAP: i32 = 7;
    const PORTS_MAP: i32 = 8;
    const COUNTS: i32 = 9;

    /// What the program decided for a frame.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        /// Passed to the kernel, after adding one to this counters map key (if any).
        Pass { counted: Option<u32> },
        /// `bpf_redirect_map(map, key, flags)`.
        Redirect { map: i32, key: u64 },
    }

    const PASS_UNCOUNTED: Verdict = Verdict::Pass { counted: None };

    fn counted(r: PassReason, queue: u32) -> Verdict {
        Verdict::Pass {
            counted: Some(r.key(queue)),
        }
    }

    /// A minimal interpreter for exactly the instructions the program uses, so its logic
    /// is tested without a kernel (the AF_XDP tests load it into the real verifier).
    /// `owners` is the ports map: (port, owning queue).
    fn run(program: &[Insn], frame: &[u8], rx_queue: u32, owners: &[(u16, u32)]) -> Verdict {
        // Memory: the frame at 0x1000, the context at 0x10, the stack below 0x9000, map
        // handles as 0xdead_0000 | fd, a counter a lookup found at 0x5000, a ports map
        // value at 0x6000.
        const DATA: u64 = 0x1000;
        const CTX: u64 = 0x10;
        const STACK: u64 = 0x9000;
        const COUNTER: u64 = 0x5000;
        const OWNER: u64 = 0x6000;
        let mut r = [0u64; 11];
        r[1] = CTX;
        r[10] = STACK;
        let mut stack = [0u8; 16];
        let mut owner_value = 0u32;
        let mut found: Option<u32> = None;
        let mut incremented = false;
        let mut pc = 0usize;
        let slot = |addr: u64| (addr - (STACK - 16)) as usize;
        loop {
            let i = program[pc];
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            let k = i64::from(i.imm) as u64;
            let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
            pc += 1;
            let load = |addr: u64, size: usize| -> u64 {
                if addr == OWNER {
                    assert_eq!(size, 4);
                    return u64::from(owner_value);
                }
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
            match i.code {
                MOV64_X => r[d] = r[s],
                MOV64_K => r[d] = k,
                ADD64_K => r[d] = r[d].wrapping_add(k),
                ADD64_X => r[d] = r[d].wrapping_add(r[s]),
                MUL64_K => r[d] = r[d].wrapping_mul(k),
                AND64_K => r[d] &= k,
                LDX_W => r[d] = load(r[s].wrapping_add(i.off as u64), 4),
                LDX_H => r[d] = load(r[s].wrapping_add(i.off as u64), 2),
                LDX_B => r[d] = load(r[s].wrapping_add(i.off as u64), 1),
                STX_W => {
                    assert_eq!(d, 10, "stores go to the stack");
                    let at = slot(STACK.wrapping_add(i.off as u64));
                    stack[at..at + 4].copy_from_slice(&(r[s] as u32).to_le_bytes());
                }
                TO_BE => r[d] = u64::from((r[d] as u16).swap_bytes()),
                JGT_X if r[d] > r[s] => pc = target,
                JNE_X if r[d] != r[s] => pc = target,
                JNE_K if r[d] != k => pc = target,
                JEQ_K if r[d] == k => pc = target,
                JGT_X | JNE_X | JNE_K | JEQ_K => {}
                LD_IMM64 => {
                    assert_eq!(i.src, PSEUDO_MAP_FD);
                    r[d] = 0xdead_0000 | i.imm as u64;
                    pc += 1;
                }
                CALL if i.imm == FUNC_MAP_LOOKUP_ELEM => {
                    let at = slot(r[2]);
                    let key = u32::from_le_bytes(stack[at..at + 4].try_into().unwrap());
                    r[0] = match r[1] & 0xffff {
                        m if m == COUNTS as u64 => {
                            let inside = key < COUNTED_QUEUES * PASS_REASONS;
                            found = inside.then_some(key);
                            if inside {
                                COUNTER
                            } else {
                                0
                            }
                        }
                        m if m == PORTS_MAP as u64 => {
                            assert!(key < PORTS, "an array lookup past the end");
                            owner_value = owners
                                .iter()
                                .find(|(p, _)| u32::from(*p) == key)
                                .map_or(0, |(_, q)| q + 1);
                            OWNER
                        }
                        m => panic!("lookup in map {m}"),
                    };
                    r[1..6].fill(0xbad); // clobbered by the call
                }
                CALL => {
                    assert_eq!(i.imm, FUNC_REDIRECT_MAP);
                    assert_eq!(r[3], XDP_PASS as u64);
                    assert!(r[1] >> 16 == 0xdead, "r1 must be a map");
                    return Verdict::Redirect {
                        map: (r[1] & 0xffff) as i32,
                        key: r[2],
                    };
                }
                ATOMIC_DW => {
                    assert_eq!((r[d], i.imm, r[s]), (COUNTER, ATOMIC_ADD, 1), "add 1");
                    incremented = true;
                }
                EXIT => {
                    assert_eq!(r[0], XDP_PASS as u64);
                    assert_eq!(found.is_some(), incremented);
                    return Verdict::Pass { counted: found };
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

    fn program() -> Vec<Insn> {
        redirect_program(XSKMAP, PORTS_MAP, COUNTS)
    }

    #[test]
    fn a_media_port_is_redirected_on_its_own_queue_only() {
        let p = program();
        // Core 0 serves queue 0 on port 7882, core 1 queue 1 on 7883, core 2 queue 3 on
        // 40000 (a kernel-chosen port, a configured first queue).
        let owners = [(7882, 0), (7883, 1), (40000, 3)];
        for (port, queue) in owners {
            assert_eq!(
                run(&p, &udp_to(port), queue, &owners),
                Verdict::Redirect {
                    map: XSKMAP,
                    key: u64::from(queue)
                },
                "port {port}"
            );
        }
        // On another queue: passed (to the port's kernel socket) and counted there.
        assert_eq!(
            run(&p, &udp_to(7882), 1, &owners),
            counted(PassReason::WrongQueue, 1)
        );
        assert_eq!(
            run(&p, &udp_to(7883), 0, &owners),
            counted(PassReason::WrongQueue, 0)
        );
        assert_eq!(
            run(&p, &udp_to(40000), 2, &owners),
            counted(PassReason::WrongQueue, 2)
        );
        // Not a media port: passed uncounted, on any queue.
        for port in [7881, 7884, 53, 0, 65535] {
            for queue in [0, 1, 3] {
                assert_eq!(
                    run(&p, &udp_to(port), queue, &owners),
                    PASS_UNCOUNTED,
                    "port {port}"
                );
            }
        }
        // Nothing registered (the last core left): everything passes.
        assert_eq!(run(&p, &udp_to(7882), 0, &[]), PASS_UNCOUNTED);
    }

    #[test]
    fn what_is_not_plain_udp_over_ipv4_passes_counted_by_reason_and_queue() {
        let p = program();
        let owners = [(7882, 5)];
        let good = udp_to(7882);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut options = good.clone();
        options[14] = 0x46;
        let mut version6 = good.clone();
        version6[14] = 0x65;
        let mut more_fragments = good.clone();
        more_fragments[20] |= 0x20;
        let mut offset = good.clone();
        offset[21] = 1;
        let mut tcp = good.clone();
        tcp[23] = 6;
        let cases: Vec<(Vec<u8>, Verdict)> = vec![
            (arp, PASS_UNCOUNTED),
            (ipv6, PASS_UNCOUNTED),
            (good[..13].to_vec(), PASS_UNCOUNTED),
            (Vec::new(), PASS_UNCOUNTED),
            (good[..41].to_vec(), counted(PassReason::TooShort, 5)),
            (good[..14].to_vec(), counted(PassReason::TooShort, 5)),
            (options, counted(PassReason::IpOptions, 5)),
            (version6, counted(PassReason::IpOptions, 5)),
            (more_fragments, counted(PassReason::Fragment, 5)),
            (offset, counted(PassReason::Fragment, 5)),
            (tcp.clone(), counted(PassReason::NotUdp, 5)),
        ];
        for (n, (f, want)) in cases.iter().enumerate() {
            assert_eq!(&run(&p, f, 5, &owners), want, "case {n}");
        }
        // Don't Fragment alone is not a fragment.
        assert!(matches!(
            run(&p, &good, 5, &owners),
            Verdict::Redirect { .. }
        ));
        // A queue past the counters' slots: passed, not counted.
        assert_eq!(run(&p, &tcp, COUNTED_QUEUES, &owners), PASS_UNCOUNTED);
        assert_eq!(
            run(&p, &tcp, COUNTED_QUEUES - 1, &owners),
            counted(PassReason::NotUdp, 63)
        );
    }

    #[test]
    fn encoding_matches_struct_bpf_insn() {
        let p = redirect_program(9, 10, 11);
        let bytes = to_bytes(&p);
        assert_eq!(bytes.len(), p.len() * 8);
        // mov r6, r1
        assert_eq!(&bytes[..8], &[0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        // The map loads: ld_imm64 r1 with src_reg PSEUDO_MAP_FD and the fd as immediate
        // (the ports map, the XSKMAP, the counters, in program order).
        let loads: Vec<usize> = (0..p.len()).filter(|&n| p[n].code == LD_IMM64).collect();
        assert_eq!(loads.len(), 3);
        for (at, fd) in loads.iter().map(|n| n * 8).zip([10u8, 9, 11]) {
            assert_eq!(&bytes[at..at + 8], &[0x18, 0x11, 0, 0, fd, 0, 0, 0]);
            assert_eq!(&bytes[at + 8..at + 16], &[0; 8]);
        }
        // stxw [r10-8], r5: dst r10 in the low nibble, src r5 in the high one.
        let at = p.iter().position(|i| i.code == STX_W).unwrap() * 8;
        assert_eq!(&bytes[at..at + 8], &[0x63, 0x5a, 0xf8, 0xff, 0, 0, 0, 0]);
        // jne r5, r4: the owner against this queue.
        let at = p.iter().position(|i| i.code == JNE_X).unwrap() * 8;
        assert_eq!(&bytes[at..at + 2], &[0x5d, 0x45]);
        // lock *(u64 *)(r0 + 0) += r1
        let at = p.iter().position(|i| i.code == ATOMIC_DW).unwrap() * 8;
        assert_eq!(&bytes[at..at + 8], &[0xdb, 0x10, 0, 0, 0, 0, 0, 0]);
        // Every jump lands on the count or the pass block, inside the program.
        for (n, i) in p.iter().enumerate() {
            if is_jump(i.code) {
                let to = n as i64 + 1 + i64::from(i.off);
                assert!(to == p.len() as i64 - 2 || to == p.len() as i64 - 14, "{n}");
            }
        }
    }
}
