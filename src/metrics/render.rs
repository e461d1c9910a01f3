//! Content negotiation for `/metrics`: OpenMetrics 1.0 or Prometheus text 0.0.4, from `Accept`.

use http::HeaderValue;
use prometheus_client::encoding::prometheus_text;

use super::Metrics;

/// `Content-Type` of the Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the OpenMetrics 1.0 text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `/metrics` body and its `Content-Type` for a scrape with this `Accept` header:
/// OpenMetrics when the scraper asks for `application/openmetrics-text` (with a `q` above 0 and
/// not below that of `text/plain`), else Prometheus text 0.0.4.
pub fn render(metrics: &Metrics, accept: Option<&HeaderValue>) -> (String, &'static str) {
    if wants_openmetrics(accept) {
        (metrics.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
    } else {
        (metrics.encode_prometheus(), PROMETHEUS_CONTENT_TYPE)
    }
}

fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (mut openmetrics, mut plain) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| {
                // A malformed weight counts as "not acceptable": plain text is the safe answer.
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| q.is_finite())
                    .map_or(0.0, |q| q.clamp(0.0, 1.0))
            });
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            openmetrics = openmetrics.max(q);
        } else if media.eq_ignore_ascii_case("text/plain") {
            plain = plain.max(q);
        }
    }
    openmetrics > 0.0 && openmetrics >= plain
}
