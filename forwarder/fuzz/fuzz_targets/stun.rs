#![no_main]
//! Every STUN accessor on arbitrary bytes; a parsed Binding response re-emits and re-parses.
use libfuzzer_sys::fuzz_target;
use prism_forwarder::wire::stun::{self, BindingResponseRepr, StunMessage};

fuzz_target!(|data: &[u8]| {
    let _ = stun::crc32(data);
    let Ok(m) = StunMessage::new_checked(data) else {
        return;
    };
    let _ = (
        m.class(),
        m.method(),
        m.transaction_id(),
        m.is_binding_request(),
    );
    for (ty, v) in m.attributes() {
        let _ = (v, m.attribute(ty));
    }
    let _ = (
        m.username(),
        m.has_use_candidate(),
        m.priority(),
        m.xor_mapped_address(),
    );
    let _ = (
        m.ice_controlled(),
        m.ice_controlling(),
        m.message_integrity(),
    );
    let _ = (m.message_integrity_range(), m.message_integrity_length());
    let _ = (
        m.message_integrity_input(),
        m.fingerprint(),
        m.check_fingerprint(),
    );
    let _ = m.verify_message_integrity(&|_, _| [0; 20]);
    if let Some(r) = BindingResponseRepr::parse(&m) {
        let mut buf = [0u8; 128];
        let n = r.emit_with_integrity(&mut buf, &|_| [1; 20]).unwrap();
        let again = StunMessage::new_checked(&buf[..n]).unwrap();
        assert_eq!(BindingResponseRepr::parse(&again), Some(r));
        assert_eq!(again.check_fingerprint(), Some(true));
    }
});
