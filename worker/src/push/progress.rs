//! Progress bars on a terminal (hidden elsewhere) and the end-of-push summary.

use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Bars for the two phases; all hidden unless enabled.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars drawn on stderr when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A byte bar titled `what` for `total` bytes.
    pub fn bytes(&self, what: &'static str, total: u64) -> ProgressBar {
        let Some(multi) = &self.multi else {
            return ProgressBar::hidden();
        };
        let bar = multi.add(ProgressBar::new(total));
        // The template is a constant known to be valid; fall back to the default if not.
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what);
        bar
    }

    /// A status line (hidden when bars are off).
    pub fn message(&self, text: String) {
        if let Some(multi) = &self.multi {
            let _ = multi.println(text);
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushSummary {
    /// Store paths in the closure.
    pub paths_total: usize,
    /// Paths whose narinfo this push uploaded (the rest were cached already).
    pub paths_uploaded: usize,
    /// Objects (narinfos, NARs, listings, logs) this push uploaded.
    pub objects_uploaded: usize,
    /// Bytes this push sent to storage.
    pub bytes_uploaded: u64,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
}

impl PushSummary {
    /// The one-line human summary.
    pub fn human(&self) -> String {
        let cached = self.paths_total - self.paths_uploaded.min(self.paths_total);
        format!(
            "pushed {} path(s): {} uploaded, {} already cached; {} object(s), {} in {:.1?}",
            self.paths_total,
            self.paths_uploaded,
            cached,
            self.objects_uploaded,
            HumanBytes(self.bytes_uploaded),
            Duration::from_millis(self.duration_ms),
        )
    }

    /// The one-line JSON summary.
    pub fn json(&self) -> String {
        // A struct of numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_well_and_parse() {
        let s = PushSummary {
            paths_total: 12,
            paths_uploaded: 3,
            objects_uploaded: 10,
            bytes_uploaded: 5 * 1024 * 1024,
            duration_ms: 1500,
        };
        assert_eq!(
            s.human(),
            "pushed 12 path(s): 3 uploaded, 9 already cached; 10 object(s), 5.00 MiB in 1.5s"
        );
        let v: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["paths_total"], 12);
        assert_eq!(v["bytes_uploaded"], 5 * 1024 * 1024);
        assert_eq!(v["duration_ms"], 1500);
        assert!(!s.json().contains('\n'));
        let hidden = Progress::new(false);
        assert!(hidden.bytes("x", 10).is_hidden());
    }
}
