//! Client-sent forwarding and client-identity headers never reach the
//! upstream as the client wrote them.
