//! Samples from a `/metrics` page (OpenMetrics text), for tests and benches.

/// The value of the sample named exactly `sample` (the metric name with its labels, e.g.
/// `larder_narinfo_cache_lookups_total{result="hit"}`) on the `/metrics` of the server
/// at `base` (`http://host:port`); 0 when the page has no such sample.
pub async fn sample(base: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{sample} = {v:?} is not a number: {e}"))
        })
}
