//! The dead endpoint with retries on (issue 12): a fresh posthook with C's 10 000 hooks and an
//! SQLite store, plus one pattern hook that fires on every matching post too and is aimed at a
//! port where nothing listens, with `retry` (5 attempts, 1 s doubling to 4 s). Open loop at C's
//! rate: every matching post makes a healthy delivery (to the sink, with a reply, counted
//! exactly as in C) and a dead one that fails and waits for its retries in memory and in the
//! store. Reported: RSS over time (it must level off once retries finish as fast as they
//! start), and the healthy deliveries' latency beside Cs's open loop in the same run.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::configs::hooks_yaml;
use crate::deliveries::{clear_records, collect_deliveries, read_log, Deliveries};
use crate::loadgen::{open_loop, posts_workload};
use crate::procfs::{clock_ticks, proc_status_kib, proc_ticks};
use crate::procs::Proc;
use crate::upstream::Upstream;
use crate::Opts;

pub struct RetryResult {
    pub rate: f64,
    pub achieved: f64,
    pub errors: u64,
    pub request_lat: Vec<u64>,
    /// (seconds since the load started, VmRSS KiB)
    pub rss: Vec<(f64, u64)>,
    pub hwm: u64,
    pub deliveries: Deliveries,
    pub retries: u64,
    pub cpu_per_1000: f64,
    pub measure: f64,
}

/// The extra hook: every matching post, a closed port, retried.
fn dead_hook(dead: SocketAddr) -> String {
    format!(
        "  - display_name: \"dead endpoint, retried\"
    trigger_pattern: \"^#word\"
    callback_urls: [\"http://{dead}/hooks/dead\"]
    token: \"deadhooktoken0000000000001\"
    retry: {{attempts: 5, initial_seconds: 1, max_seconds: 4}}
"
    )
}

pub fn dead_endpoint_phase(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    up: &Arc<Upstream>,
    start_posthook: &dyn Fn(&str, &str) -> (Proc, SocketAddr, Duration),
    sink: SocketAddr,
    dead: SocketAddr,
    dir: &Path,
) -> RetryResult {
    let config = format!(
        "store:\n  url: \"sqlite:{}\"\n{}{}",
        dir.join("posthook-retry.db").display(),
        hooks_yaml(sink),
        dead_hook(dead)
    );
    let (p, addr, _) = start_posthook("posthook-retry", &config);
    let pid = p.pid();
    clear_records(up);
    let wl = posts_workload(10_000, false);
    let (rate, warmup, measure) = (opts.open_rate, opts.open_warmup, opts.dead_measure);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let samples = samples.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < warmup + measure + Duration::from_millis(300) {
                samples
                    .lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), proc_status_kib(pid, "VmRSS:")));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let warm_from = now_ns() + warmup.as_nanos() as u64;
    let cpu0 = proc_ticks(&[pid]);
    let res = rt.block_on(open_loop(addr, &wl, rate, opts.open_conns, warmup, measure));
    let cpu = proc_ticks(&[pid]).saturating_sub(cpu0);
    let _ = sampler.join();
    let mut d = collect_deliveries(up, warm_from, opts.drain_stall);
    let mut offset = 0;
    let log = read_log(&p.log, &mut offset);
    d.log = log;
    let hwm = proc_status_kib(pid, "VmHWM:");
    drop(p);
    let rss = samples.lock().unwrap().clone();
    let mut request_lat = res.lat.clone();
    request_lat.sort_unstable();
    let r = RetryResult {
        rate,
        achieved: res.ok as f64 / res.window,
        errors: res.error_count(),
        request_lat,
        rss,
        hwm,
        retries: log.retries,
        deliveries: d,
        cpu_per_1000: cpu as f64 / clock_ticks() / res.total.max(1) as f64 * 1000.0,
        measure: (warmup + measure).as_secs_f64(),
    };
    eprintln!(
        "dead endpoint with retries: {:.0} req/s, errors {}, healthy deliveries {} of {} (duplicates {}), retries {}, final failures {}, RSS {} → {} KiB, peak {} KiB",
        r.achieved,
        r.errors,
        r.deliveries.delivered,
        r.deliveries.expected,
        r.deliveries.duplicates,
        r.retries,
        r.deliveries.log.delivery_failed,
        r.rss.first().map_or(0, |s| s.1),
        r.rss.last().map_or(0, |s| s.1),
        r.hwm
    );
    r
}
