//! Reading Prometheus text exposition in tests.

/// Sum over all label sets of `name`.
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of the `name` series whose labels contain `label` (e.g. `kind="get_image"`).
pub fn counter_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP flotilla_requests_total requests\n\
        flotilla_requests_total{kind=\"get_image\",outcome=\"ok\"} 3\n\
        flotilla_requests_total{kind=\"ping\",outcome=\"ok\"} 4\n\
        flotilla_requests_total_other 100\n";

    #[test]
    fn counters_sum_their_series_and_only_theirs() {
        assert_eq!(counter(TEXT, "flotilla_requests_total"), 7.0);
        assert_eq!(
            counter_with(TEXT, "flotilla_requests_total", "kind=\"ping\""),
            4.0
        );
        assert_eq!(counter(TEXT, "flotilla_missing"), 0.0);
    }
}
