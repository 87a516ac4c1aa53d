//! Credential extraction from a request head (wsgate-core credential.rs):
//! any bytes hyper's parser (httparse) accepts as a request head, then
//! every transport enabled, as the upgrade handler calls it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate_core::credential::{self, ExtractPolicy, Transport};

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut map = http::HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        map.append(name, value);
    }
    let query = req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q);
    let policy = ExtractPolicy {
        transports: vec![
            Transport::Bearer,
            Transport::Subprotocol,
            Transport::Ticket,
            Transport::Cookie,
            Transport::Query,
        ],
        cookie_name: "session".into(),
        ticket_param: "ticket".into(),
        query_param: "token".into(),
        subprotocol: "jwt".into(),
        max_token_bytes: 8192,
    };
    if let Ok(Some(c)) = credential::extract(&policy, &map, query) {
        assert!(!c.token.is_empty() && c.token.len() <= policy.max_token_bytes);
    }
    if let Ok(offered) = credential::offered_protocols(&map) {
        let split = credential::split_offered(&offered, "jwt");
        assert!(split.application.len() <= offered.len());
    }
    let _ = credential::query_value(query, "csrf");
});
