//! The exposition format of `/metrics`, chosen from the scrape's `Accept`
//! as the Go client chooses it (`expfmt.NegotiateIncludingOpenMetrics`):
//! OpenMetrics 1.0.0 when the scraper ranks it above the Prometheus text
//! format (Prometheus itself does), the text format 0.0.4 otherwise (curl,
//! browsers, no header). We write OpenMetrics 1.0.0 only, so a range asking
//! for 0.0.1 is passed over, as the Python client does. Both bodies are
//! written by prometheus-client, each under the content type its text
//! follows: a counter's `# TYPE` names the family (`x`) in OpenMetrics and
//! the sample (`x_total`) in the text format.

use http::header::{HeaderMap, ACCEPT};
use mediatype::{names, MediaType, MediaTypeList, Name, ReadParams};

const VERSION: Name = Name::new_unchecked("version");

/// A format `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics text 1.0.0, ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format to answer a request with these headers in: the acceptable
    /// (q > 0) media range of highest quality that names a format we write,
    /// the first on ties; the text format when none does. Wildcards name no
    /// format (as in `expfmt`); a range that does not parse is skipped.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let mut best = (0.0, Format::Text);
        let ranges = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(MediaTypeList::new)
            .filter_map(Result::ok);
        for range in ranges {
            if let Some(format) = Format::named_by(&range) {
                let q = quality(&range);
                if q > best.0 {
                    best = (q, format);
                }
            }
        }
        best.1
    }

    /// The format a media range asks for, if we write it; a range without a
    /// `version` takes the version we write.
    fn named_by(range: &MediaType) -> Option<Format> {
        let version = range.get_param(VERSION);
        let version = version.as_ref().map(|v| v.unquoted_str());
        let version = version.as_deref();
        if range.suffix.is_some() {
            return None;
        }
        if range.ty == "application" && range.subty == "openmetrics-text" {
            matches!(version, None | Some("1.0.0")).then_some(Format::OpenMetrics)
        } else if range.ty == names::TEXT && range.subty == names::PLAIN {
            matches!(version, None | Some("0.0.4")).then_some(Format::Text)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The `q` of a media range: 1 when absent, 0 (not acceptable) when it is
/// not a number in 0..=1.
fn quality(range: &MediaType) -> f32 {
    match range.get_param(names::Q) {
        None => 1.0,
        Some(q) => q
            .unquoted_str()
            .parse::<f32>()
            .ok()
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn negotiate(accept: &[&str]) -> Format {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(ACCEPT, HeaderValue::from_str(a).expect("header"));
        }
        Format::negotiate(&h)
    }

    #[test]
    fn prometheus_scrapes_get_openmetrics() {
        // Prometheus 2.x (and the report).
        assert_eq!(
            negotiate(&["application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"]),
            Format::OpenMetrics
        );
        // Prometheus 3.x adds an escaping scheme, which changes nothing for
        // names that are valid without UTF-8 (all of ours).
        assert_eq!(
            negotiate(&["application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text"]),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&["Application/OpenMetrics-Text; Version=\"1.0.0\""]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn everyone_else_gets_the_text_format() {
        // No header, curl, a browser.
        assert_eq!(negotiate(&[]), Format::Text);
        assert_eq!(negotiate(&["*/*"]), Format::Text);
        assert_eq!(
            negotiate(&["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"]),
            Format::Text
        );
        // Prometheus with `scrape_protocols` putting the text format first.
        assert_eq!(
            negotiate(&["text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;q=0.1"]),
            Format::Text
        );
        assert_eq!(negotiate(&["text/plain; version=0.0.4"]), Format::Text);
    }

    #[test]
    fn quality_then_order_decides() {
        assert_eq!(
            negotiate(&["text/plain;q=0.3, application/openmetrics-text;q=0.9"]),
            Format::OpenMetrics
        );
        // Equal quality: the first listed.
        assert_eq!(
            negotiate(&["text/plain, application/openmetrics-text"]),
            Format::Text
        );
        assert_eq!(
            negotiate(&["application/openmetrics-text, text/plain"]),
            Format::OpenMetrics
        );
        // Ranges from every Accept header line count.
        assert_eq!(
            negotiate(&["text/plain;q=0.2", "application/openmetrics-text;q=0.8"]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn what_we_do_not_write_is_never_chosen() {
        // q=0 means "not acceptable"; a q that is not one counts as 0.
        for a in [
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=0.000",
            "application/openmetrics-text;q=2",
            "application/openmetrics-text;q=-1",
            "application/openmetrics-text;q=NaN",
            "application/openmetrics-text;q=junk",
            // Versions we do not write.
            "application/openmetrics-text;version=0.0.1",
            "application/openmetrics-text;version=2.0.0",
            "text/plain;version=1.0.0, application/openmetrics-text;version=0.0.1;q=0.9",
            // Neither a suffix nor a near miss names OpenMetrics.
            "application/openmetrics-text+json",
            "application/openmetrics",
            "application/*",
            // Malformed ranges are skipped.
            "application/openmetrics-text;version=\"1.0.0",
            "openmetrics-text",
            ";;;,,,/",
            "",
        ] {
            assert_eq!(negotiate(&[a]), Format::Text, "{a}");
        }
        // A malformed range does not hide the good ones beside it.
        assert_eq!(
            negotiate(&["bogus;;, application/openmetrics-text"]),
            Format::OpenMetrics
        );
    }

    #[test]
    fn a_header_that_is_not_text_is_ignored() {
        let mut h = HeaderMap::new();
        h.append(
            ACCEPT,
            HeaderValue::from_bytes(b"application/openmetrics-text\xff").expect("header"),
        );
        assert_eq!(Format::negotiate(&h), Format::Text);
    }
}
