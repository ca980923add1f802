//! The report as the terminal shows it: the floors, then one row per size with nginx's and
//! each Flotilla runtime's numbers, Flotilla's ratio to nginx, and each server's MB/s as a
//! share of the AES-128-GCM seal floor.

use std::fmt::Write;

use super::{Cell, Outcome, Report};

/// Width of one server's block of columns.
const BLOCK: usize = 38;

/// The report as text.
pub fn render(report: &Report) -> String {
    let floors = &report.floors;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "floors on core {} in this run: AES-128-GCM seal (ring, {}-byte packets) {:.0} MB/s; memcpy of 5 MiB {:.0} MB/s",
        report.server_core,
        floors.seal_packet_bytes,
        floors.aes_128_gcm_seal_mb_per_s,
        floors.memcpy_5mb_mb_per_s
    );
    let _ = writeln!(
        text,
        "concurrency {}, {} s per cell, servers on core {}, load on core {}; seal% = MB/s as a share of the seal floor",
        report.concurrency, report.seconds, report.server_core, report.load_core
    );
    let _ = writeln!(
        text,
        "bodies checked: wrk their size; the Flotilla client every size and every signature, and {}",
        match report.digest_every {
            1 => "every SHA-256 digest".to_string(),
            n => format!("the SHA-256 digest of 1 body in {n}"),
        }
    );
    let mut heading = format!("{:<6}| {:<BLOCK$}", "size", "nginx proxy_cache, TLS 1.3");
    let mut columns = format!("{:<6}| {:<BLOCK$}", "", server_columns(false));
    for runtime in &report.runtimes {
        let _ = write!(
            heading,
            "| {:<w$}",
            format!("flotilla {runtime}"),
            w = BLOCK + 8
        );
        let _ = write!(columns, "| {}", server_columns(true));
    }
    let _ = writeln!(text, "{}", heading.trim_end());
    let _ = writeln!(text, "{}", columns.trim_end());
    for row in &report.rows {
        let nginx = row.nginx.complete();
        let mut line = format!(
            "{:<6}| {:<BLOCK$}",
            row.size,
            cells(&row.nginx, report, None)
        );
        for runtime in &report.runtimes {
            let text = match row.flotilla.get(runtime) {
                Some(outcome) => cells(outcome, report, Some(nginx)),
                None => "not measured".to_string(),
            };
            let _ = write!(line, "| {:<w$}", text, w = BLOCK + 8);
        }
        let _ = writeln!(text, "{}", line.trim_end());
    }
    text
}

fn server_columns(with_ratio: bool) -> String {
    let mut text = format!(
        "{:>8} {:>7} {:>6} {:>7} {:>6}",
        "req/s", "MB/s", "p50 ms", "p99 ms", "seal%"
    );
    if with_ratio {
        let _ = write!(text, "  {:>6}", "×nginx");
    }
    text
}

/// One server's numbers; `nginx` is given (possibly as None) for a Flotilla column.
fn cells(outcome: &Outcome, report: &Report, nginx: Option<Option<&Cell>>) -> String {
    let cell = match (outcome, outcome.complete()) {
        (_, Some(cell)) => cell,
        (Outcome::Measured(cell), None) => {
            return format!("incomplete: {} not hits", cell.not_hits)
        }
        (Outcome::Failed(_), None) => return "failed (see below)".to_string(),
    };
    let seal_share = 100.0 * cell.megabytes_per_second / report.floors.aes_128_gcm_seal_mb_per_s;
    let mut text = format!(
        "{:>8.0} {:>7.1} {:>6.2} {:>7.2} {:>5.1}%",
        cell.requests_per_second, cell.megabytes_per_second, cell.p50_ms, cell.p99_ms, seal_share
    );
    if let Some(nginx) = nginx {
        let ratio = nginx.map_or("-".to_string(), |nginx| {
            format!(
                "{:.2}×",
                cell.requests_per_second / nginx.requests_per_second
            )
        });
        let _ = write!(text, "  {ratio:>6}");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Floors, Row};
    use super::*;

    fn cell(requests_per_second: f64) -> Outcome {
        Outcome::Measured(Cell {
            requests: 100,
            errors: 0,
            hits: 100,
            not_hits: 0,
            requests_per_second,
            megabytes_per_second: requests_per_second / 100.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            seconds: 1.0,
        })
    }

    #[test]
    fn a_complete_report_has_every_number_and_the_ratio() {
        let report = Report {
            concurrency: 16,
            seconds: 2,
            server_core: 0,
            load_core: 1,
            digest_every: 16,
            floors: Floors {
                aes_128_gcm_seal_mb_per_s: 1000.0,
                seal_packet_bytes: 1400,
                memcpy_5mb_mb_per_s: 5000.0,
                core: Some(0),
            },
            runtimes: vec!["process".to_string()],
            rows: vec![Row {
                size_bytes: 10240,
                size: "10k".to_string(),
                nginx: cell(1000.0),
                flotilla: BTreeMap::from([("process".to_string(), cell(1500.0))]),
            }],
        };
        assert!(report.incomplete().is_empty());
        let text = render(&report);
        assert!(text.contains("1.50×"), "{text}");
        assert!(text.contains("digest of 1 body in 16"), "{text}");
        let mut broken = report.clone();
        broken.rows[0].flotilla.insert(
            "process".to_string(),
            Outcome::Failed("no edge".to_string()),
        );
        assert_eq!(broken.incomplete(), vec!["10k flotilla process: no edge"]);
    }
}
