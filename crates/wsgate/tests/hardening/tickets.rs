//! Ticket minting and every path that turns a credential into rights:
//! revoked sessions, per-IP rate limits (`POST /v1/tickets`).
