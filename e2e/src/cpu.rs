//! CPU time of the processes a benchmark started, read from `/proc`. On a shared 2-core
//! machine, who spent the CPU of a step says more about the code than its wall time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Linux reports `/proc/<pid>/stat` times in ticks of 1/100 s (USER_HZ).
const TICK: f64 = 100.0;

/// One row of `/proc/<pid>/stat`.
struct Proc {
    ppid: u32,
    comm: String,
    /// Own user + system ticks.
    own: f64,
    /// Ticks of waited-for children.
    children: f64,
}

fn processes() -> HashMap<u32, Proc> {
    let mut procs = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let ppid = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
        procs.insert(
            pid,
            Proc {
                ppid,
                comm: stat[open + 1..close].to_string(),
                own: num(11) + num(12),
                children: num(13) + num(14),
            },
        );
    }
    procs
}

/// Whether `pid` descends from this process (within 8 generations).
fn descends_from_me(procs: &HashMap<u32, Proc>, pid: u32) -> bool {
    let me = std::process::id();
    let mut parent = procs.get(&pid).map(|p| p.ppid);
    for _ in 0..8 {
        match parent {
            Some(p) if p == me => return true,
            Some(p) if p > 1 => parent = procs.get(&p).map(|q| q.ppid),
            _ => return false,
        }
    }
    false
}

/// CPU seconds (user + system) used so far by this process's descendants, summed by
/// command name (`garage`, `postgres`, `larder`, `niks3-server`); what waited-for
/// children used (clients and their helpers) is under `clients`. Two snapshots tell
/// who spent the CPU of a step (10 ms resolution).
pub fn seconds_by_command() -> BTreeMap<String, f64> {
    let me = std::process::id();
    let procs = processes();
    let mut by_comm = BTreeMap::new();
    for (pid, p) in &procs {
        if *pid == me {
            *by_comm.entry("clients".to_string()).or_insert(0.0) += p.children / TICK;
        } else if descends_from_me(&procs, *pid) {
            *by_comm.entry(p.comm.clone()).or_insert(0.0) += (p.own + p.children) / TICK;
        }
    }
    by_comm
}

/// What `after` adds to `before`, as `name 1.2s, …` for the names that used any.
pub fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d >= 0.05)
        .map(|(k, d)| format!("{k} {d:.1}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// All CPU seconds `after` adds to `before`.
pub fn total_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    after
        .iter()
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0.0))
        .sum()
}

/// Process ids of this process's descendants whose command name is `comm`.
pub fn descendants_named(comm: &str) -> Vec<u32> {
    let procs = processes();
    let mut pids: Vec<u32> = procs
        .iter()
        .filter(|(pid, p)| p.comm == comm && descends_from_me(&procs, **pid))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// Time the threads of `pid` have run on a CPU, to the nanosecond (the first field of
/// each `/proc/<pid>/task/<tid>/schedstat`). Threads that ended are not counted, so
/// compare snapshots of a server whose threads live on (tokio workers do).
pub fn on_cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    let ns: u64 = tasks
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// [`on_cpu`] summed over several processes.
pub fn on_cpu_all(pids: &[u32]) -> Duration {
    pids.iter().map(|p| on_cpu(*p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_shows_up_by_name_and_on_cpu() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let pids = descendants_named("sh");
        assert!(pids.contains(&child.id()), "{pids:?}");
        let first = on_cpu(child.id());
        assert!(first > Duration::from_millis(10), "{first:?}");
        std::thread::sleep(Duration::from_millis(600));
        assert!(on_cpu_all(&pids) >= first);
        assert!(seconds_by_command().contains_key("sh"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            on_cpu(child.id()),
            Duration::ZERO,
            "a reaped process has no tasks"
        );
    }
}
