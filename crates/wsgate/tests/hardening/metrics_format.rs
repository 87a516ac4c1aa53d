//! `/metrics` is a format Prometheus reads as written (`promtool check metrics`).
