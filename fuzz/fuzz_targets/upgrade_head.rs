//! The direct upgrade path's head parser (crates/wsgate server/direct.rs):
//! any bytes, as `read_head` would hand them over, through `is_get_of`
//! (which picks the path) and `parse` (httparse into an `http::Request`
//! whose target and header values share the head's buffer).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate::head_io as head;
use wsgate::server::direct;

fuzz_target!(|data: &[u8]| {
    let picked = head::is_get_of(data, "/ws");
    let Ok((req, rest)) = direct::parse(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    if picked {
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/ws");
    }
    // What follows the head is the input's tail, byte for byte.
    assert!(data.ends_with(&rest));
    let mut headers = [httparse::EMPTY_HEADER; 128];
    if let Ok(httparse::Status::Complete(n)) = httparse::Request::new(&mut headers).parse(data) {
        assert_eq!(n + rest.len(), data.len());
    }
});
