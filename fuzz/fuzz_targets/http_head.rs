//! The one HTTP head parser (crates/wsgate http_head.rs), fed as the
//! gateway feeds it: the first byte picks a size cap and a read boundary,
//! the rest is what arrived on the wire.
//! - `scan` agrees with itself whether the head arrived in one read or two,
//!   and a complete head is within the cap, ends in `\r\n\r\n` and has at
//!   most `MAX_HEADERS` fields;
//! - a parsed request (or response) keeps the input's tail byte for byte,
//!   and written out again it parses to the same request (or response).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsgate::http_head::{self, Scan, MAX_HEADERS};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    scan(data, pick);
    request(data);
    response(data);
});

fn scan(data: &[u8], pick: u8) {
    let max = 64 * (usize::from(pick) + 1);
    let whole = http_head::scan(data, 0, max);
    let split = usize::from(pick) * data.len() / 256;
    // Two reads: the reader stops after the first unless it was partial.
    if http_head::scan(&data[..split], 0, max) == Scan::Partial {
        assert_eq!(http_head::scan(data, split, max), whole, "split at {split}");
    }
    if let Scan::Complete(end) = whole {
        assert!(end <= max && end <= data.len());
        assert_eq!(&data[end - 4..end], b"\r\n\r\n");
        let lines = data[..end].iter().filter(|&&b| b == b'\n').count();
        assert!(lines <= MAX_HEADERS + 2, "{lines} lines");
    }
}

fn request(data: &[u8]) {
    let Ok((req, rest)) = http_head::parse_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(data.ends_with(&rest) && rest.len() < data.len());
    assert!(req.headers().len() <= MAX_HEADERS);
    if http_head::is_get_of(data, "/ws") {
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/ws");
    }
    let mut out = format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version()).into_bytes();
    fields(&mut out, req.headers());
    let (again, tail) = match http_head::parse_request(Bytes::from(out)) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{req:?} written out does not parse: {e}"),
    };
    assert!(tail.is_empty());
    assert_eq!(again.method(), req.method());
    assert_eq!(again.uri(), req.uri());
    assert_eq!(again.version(), req.version());
    assert_eq!(again.headers(), req.headers());
}

fn response(data: &[u8]) {
    let Ok(resp) = http_head::parse_response(data) else {
        return;
    };
    assert!(resp.len <= data.len() && resp.status <= 999);
    assert!(resp.headers.len() <= MAX_HEADERS);
    let mut out = format!("{:?} {:03} X\r\n", resp.version, resp.status).into_bytes();
    fields(&mut out, &resp.headers);
    let again = match http_head::parse_response(&out) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{resp:?} written out does not parse: {e}"),
    };
    assert_eq!(again.len, out.len());
    assert_eq!(again.status, resp.status);
    assert_eq!(again.version, resp.version);
    assert_eq!(again.headers, resp.headers);
}

/// The fields and the blank line that ends a head.
fn fields(out: &mut Vec<u8>, headers: &http::HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
