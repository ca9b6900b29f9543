#![no_main]
//! Ethernet/IPv4/UDP frames (the AF_XDP driver's receive path) on arbitrary bytes: a frame
//! that parses has its payload inside it, is rebuilt from its parts into a frame that
//! parses to the same addresses and payload with a valid checksum, and teaches the
//! neighbour table its source.
use libfuzzer_sys::fuzz_target;
use prism_forwarder::wire::frame::{self, Endpoints, UdpChecksum, HEADERS_LEN};
use prism_forwarder::wire::neigh::NeighbourTable;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = frame::parse(data) else {
        return;
    };
    let payload = &data[p.payload.clone()];
    let mut table = NeighbourTable::new(8);
    table.learn(*p.src.ip(), p.src_mac, 1);
    let ends = Endpoints {
        src_mac: p.src_mac,
        dst_mac: p.dst_mac,
        src: p.src,
        dst: p.dst,
    };
    let mut out = vec![0; HEADERS_LEN + payload.len()];
    out[HEADERS_LEN..].copy_from_slice(payload);
    let n = frame::write_headers(&mut out, &ends, payload.len(), 0).expect("fits");
    let q = frame::parse(&out[..n]).expect("a rebuilt frame parses");
    assert_eq!((q.src, q.dst), (p.src, p.dst));
    assert_eq!(&out[q.payload], payload);
    assert_eq!(q.checksum, UdpChecksum::Valid);
});
