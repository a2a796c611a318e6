//! Readers of Linux's `/proc` for the load and soak benches: CPU ticks of processes, threads
//! and the whole machine, `Vm…` memory lines, open descriptors, children. Each bench is its own
//! crate, so both include this file with `#[path]` rather than posthook's library growing an API
//! for them. Anything unreadable counts as 0 (or empty): a child that exits between two samples
//! must not end a run.
//!
//! The benches have no test harness, so the tests below run on their own:
//! `rustc --edition 2021 --test benches/common/procfs.rs -o /tmp/procfs-tests && /tmp/procfs-tests`.

// Each bench reads only part of /proc.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime in clock ticks, from a `stat` file (process or thread).
pub fn stat_ticks(path: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

pub fn proc_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|p| stat_ticks(&format!("/proc/{p}/stat")))
        .sum()
}

/// Busy ticks of all CPUs (user, nice, system, irq, softirq, steal) from /proc/stat. Niced
/// processes count: at nice 5 they still take a good share of the cores.
pub fn machine_busy_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user)
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum()
}

pub fn proc_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A `Vm…:` line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

// The imports sit in the tests: Cargo builds a bench's check with cfg(test) but without the
// harness, which drops every #[test] and would leave module-level imports unused.
#[cfg(test)]
mod tests {
    #[test]
    fn stat_ticks_count_fields_from_the_last_parenthesis() {
        use super::*;
        // A thread may name itself "a) b": utime and stime are found after the last ')'.
        let path = std::env::temp_dir().join(format!("procfs-stat-{}", std::process::id()));
        let line = "4242 (we) ird) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 100\n";
        std::fs::write(&path, line).unwrap();
        let ticks = stat_ticks(path.to_str().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ticks, 17 + 5);
        assert_eq!(stat_ticks("/proc/no-such-process/stat"), 0);
    }

    #[test]
    fn reads_this_process_and_the_machine() {
        use super::*;
        use std::time::{Duration, Instant};
        let pid = std::process::id();
        assert!(proc_alive(pid));
        // VmHWM is not compared with VmRSS: the kernel's RSS counters are approximate and
        // its high-water mark is updated lazily, so the two may disagree for a moment.
        assert!(proc_status_kib(pid, "VmRSS:") > 0);
        assert!(proc_status_kib(pid, "VmHWM:") > 0);
        assert_eq!(proc_status_kib(pid, "NoSuchKey:"), 0);
        assert!(open_fds(pid) > 0, "at least the directory being counted");
        assert!(clock_ticks() > 0.0);
        assert!(machine_busy_ticks() > 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while stat_ticks("/proc/self/stat") == 0 {
            assert!(Instant::now() < deadline, "no CPU tick charged in 10 s");
        }
        assert!(proc_ticks(&[pid]) > 0);
        let uid = Command::new("id").arg("-u").output().unwrap().stdout;
        assert_eq!(is_root(), String::from_utf8_lossy(&uid).trim() == "0");
    }

    #[test]
    fn children_of_a_shell() {
        use super::*;
        use std::time::{Duration, Instant};
        // `children` lists the children of one thread; a shell has only its main thread.
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 1 & wait"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let kids = loop {
            let kids = children_of(sh.id());
            if !kids.is_empty() || Instant::now() > deadline {
                break kids;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(kids.len(), 1);
        assert!(proc_alive(kids[0]));
        sh.wait().unwrap();
        assert!(children_of(sh.id()).is_empty());
    }
}
