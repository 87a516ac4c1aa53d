//! Control frames and in-band control messages: pings count toward the
//! message rate; oddly written `auth` messages are never forwarded.
