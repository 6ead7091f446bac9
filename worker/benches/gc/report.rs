//! The comparison table and the verdicts against the targets.

use std::time::Duration;

use crate::{mb, secs, Run};

/// One column of the report: how a run's figure is printed.
type Column = Box<dyn Fn(&Run) -> String>;

pub fn report(larder: Option<&Run>, niks3: Option<&Run>) {
    let cell = |run: Option<&Run>, f: &dyn Fn(&Run) -> String| match run {
        None => "not run".to_string(),
        Some(r) if r.timed_out => format!("timed out after {}", secs(r.total)),
        Some(r) => f(r),
    };
    let rows: Vec<(&str, Column)> = vec![
        (
            "GC run, end to end (niks3: without its VACUUM)",
            Box::new(|r| secs(r.total)),
        ),
        (
            "stale uploads + root expiry + mark",
            Box::new(|r| secs(r.mark + r.niks3_before_mark.unwrap_or_default())),
        ),
        (
            "  of which niks3's stale uploads + root expiry",
            Box::new(|r| r.niks3_before_mark.map_or("-".into(), secs)),
        ),
        (
            "sweep, bucket calls to the stub included",
            Box::new(|r| secs(r.sweep)),
        ),
        (
            "  of which bucket calls (measured by Larder)",
            Box::new(|r| r.bucket.map_or("-".into(), secs)),
        ),
        (
            "niks3's closing VACUUM ANALYZE",
            Box::new(|r| r.vacuum.map_or("-".into(), secs)),
        ),
        ("roots expired", Box::new(|r| r.roots_expired.to_string())),
        ("objects marked", Box::new(|r| r.marked.to_string())),
        ("objects deleted", Box::new(|r| r.deleted.to_string())),
        (
            "bucket multi-deletes (requests / keys)",
            Box::new(|r| format!("{} / {}", r.bucket_calls.0, r.bucket_calls.1)),
        ),
        (
            "peak RSS of the collector process",
            Box::new(|r| mb(r.peaks.process_hwm_kb)),
        ),
        (
            "largest PostgreSQL backend: private memory / peak RSS",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    mb(r.peaks.backend_anon_kb),
                    mb(r.peaks.backend_hwm_kb)
                )
            }),
        ),
        (
            "PostgreSQL temporary files",
            Box::new(|r| format!("{} ({} MB)", r.temp.0, r.temp.1 >> 20)),
        ),
        ("load average at start", Box::new(|r| r.load_before.clone())),
    ];
    println!();
    println!("| | Larder | niks3 |");
    println!("|---|---|---|");
    for (label, f) in &rows {
        println!("| {label} | {} | {} |", cell(larder, f), cell(niks3, f));
    }
    if let (Some(l), Some(n)) = (larder, niks3) {
        if !l.timed_out && !n.timed_out {
            let ratio = l.total.as_secs_f64() / n.total.as_secs_f64();
            let with_vacuum = n.total + n.vacuum.unwrap_or_default();
            println!();
            println!(
                "Larder / niks3: {ratio:.3} (target <= 0.2: {}); against niks3 with its VACUUM: {:.3}",
                verdict(ratio <= 0.2),
                l.total.as_secs_f64() / with_vacuum.as_secs_f64()
            );
        }
    }
    if let Some(l) = larder.filter(|l| !l.timed_out) {
        println!(
            "Larder under 60 s: {}; peak RSS under 300 MB: {}",
            verdict(l.total < Duration::from_secs(60)),
            verdict(l.peaks.process_hwm_kb < 300 * 1024)
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
