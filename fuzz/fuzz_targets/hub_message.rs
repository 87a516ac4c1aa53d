//! The hub's message decoders (crates/wsgate backend/hub.rs): client
//! messages and the announcements other nodes publish through the store,
//! plus channel-name and grant-pattern checks on what they carry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate::backend::hub;
use wsgate_core::grants;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = hub::decode(text);
    if let Ok(a) = serde_json::from_str::<hub::Announcement>(text) {
        let _ = grants::valid_channel(&a.channel);
    }
    // Grant patterns against attacker channel names: split the input into
    // pattern, sub and channel.
    let mut it = text.splitn(3, '\n');
    if let (Some(p), Some(sub), Some(ch)) = (it.next(), it.next(), it.next()) {
        if grants::valid_channel(ch) {
            let m = grants::matches(p, sub, ch);
            if p == "*" {
                assert!(m);
            }
        }
    }
});
