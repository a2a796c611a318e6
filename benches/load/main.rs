//! End-to-end load test (issue #4): posthook between a load generator and a cheap Mattermost
//! stand-in, compared with the same traffic sent directly, through nginx and through a bare
//! Pingora proxy, all on 127.0.0.1, scenarios alternated in rounds so that machine drift hits
//! each alike. Every number printed comes from the run that prints it; BENCHMARKS.md explains
//! how to read them.
//!
//! ```text
//! cargo bench --bench load                 # full run, 5 rounds, 9–10 minutes
//! cargo bench --bench load -- --quick      # 1 short round, about 1½ minutes (smoke numbers)
//! cargo bench --bench load -- --rounds 3 --only A,B,E --no-nginx
//! ```
//!
//! `cargo bench` builds the `posthook` binary with the bench profile (= release: fat LTO) next to
//! this bench's executable (`target/release/posthook`); `POSTHOOK_BIN=/path` overrides it.
//!
//! Processes (the two cores are shared by all of them):
//!
//! ```text
//!  this process ─ runtime "bench-loadgen" (+ thread "bench-pacer"): the load generator
//!               └ runtime "bench-upstream": Mattermost stand-in, webhook sink, black hole
//!  children     ─ posthook, no hooks (B)          ─ posthook, 10 000 hooks (C, split, chain)
//!               ─ bare Pingora proxy (E): this binary re-executed with --serve-bare-proxy
//!               ─ nginx (D, split, chain), when /usr/sbin/nginx exists
//!               ─ posthook, 10 000 hooks aimed at a black hole (dead sink; last)
//! ```
//!
//! Children are stopped in `Drop` (also when a phase panics), on SIGINT/SIGTERM by a signal
//! thread, and the re-executed bare proxy also exits when this process's end of its stdin closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bare_proxy;
mod clock;
mod configs;
mod deliveries;
mod fixtures;
mod http;
mod loadgen;
#[path = "../common/procfs.rs"]
mod procfs;
mod procs;
mod upstream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use bare_proxy::serve_bare_proxy;
use clock::{epoch, now_ns};
use configs::{hooks_yaml, nginx_conf, posthook_yaml, NginxPorts};
use deliveries::{clear_records, collect_deliveries, read_log, Deliveries, LogCounts};
use fixtures::{HOOKS, MATCH_EVERY};
use loadgen::{closed_loop, get_workload, open_loop, posts_workload, LoadResult, Workload};
use procfs::{
    children_of, clock_ticks, machine_busy_ticks, proc_alive, proc_status_kib, proc_ticks,
    stat_ticks,
};
use procs::{
    free_port, install_signal_cleanup, loopback, newest_source_mtime, patched_bins, posthook_bin,
    Proc, Procs, TempDir,
};
use upstream::{serve, Serve, Upstream};

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    rounds: usize,
    conns: usize,
    closed_warmup: Duration,
    closed_measure: Duration,
    open_rate: f64,
    open_warmup: Duration,
    open_measure: Duration,
    c10k_rate: f64,
    c10k_measure: Duration,
    split_measure: Duration,
    dead_measure: Duration,
    drain_stall: Duration,
    max_quiet_wait: Duration,
    noise_budget: Duration,
    sweep: Vec<f64>,
    sweep_measure: Duration,
    open_conns: usize,
    loadgen_threads: usize,
    upstream_threads: usize,
    nginx_workers: usize,
    /// `threads` of posthook and of the bare Pingora proxy.
    proxy_threads: usize,
    nginx: Option<PathBuf>,
    only: Option<Vec<String>>,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let quick = args.iter().any(|a| a == "--quick");
        let s = |secs: f64| Duration::from_secs_f64(secs);
        let mut o = Opts {
            quick,
            rounds: if quick { 1 } else { 5 },
            conns: 50,
            closed_warmup: s(if quick { 0.3 } else { 1.0 }),
            closed_measure: s(if quick { 1.0 } else { 4.0 }),
            open_rate: 5_000.0,
            open_warmup: s(if quick { 0.2 } else { 0.5 }),
            open_measure: s(if quick { 1.0 } else { 4.0 }),
            c10k_rate: 10_000.0,
            c10k_measure: s(if quick { 2.0 } else { 8.0 }),
            split_measure: s(if quick { 1.0 } else { 3.0 }),
            dead_measure: s(if quick { 4.0 } else { 20.0 }),
            drain_stall: s(if quick { 3.0 } else { 10.0 }),
            max_quiet_wait: s(if quick { 3.0 } else { 10.0 }),
            noise_budget: s(if quick { 20.0 } else { 90.0 }),
            sweep: vec![2_000.0, 4_000.0, 6_000.0, 8_000.0, 10_000.0, 12_000.0],
            sweep_measure: s(if quick { 1.0 } else { 3.0 }),
            open_conns: 128,
            loadgen_threads: 2,
            upstream_threads: 2,
            nginx_workers: 2,
            proxy_threads: 1,
            nginx: Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()),
            only: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut num = |what: &str| -> f64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{what} needs a number"))
            };
            match a.as_str() {
                "--quick" | "--bench" => {}
                "--rounds" => o.rounds = num("--rounds") as usize,
                "--conns" => o.conns = num("--conns") as usize,
                "--open-rate" => o.open_rate = num("--open-rate"),
                "--loadgen-threads" => o.loadgen_threads = num("--loadgen-threads") as usize,
                "--upstream-threads" => o.upstream_threads = num("--upstream-threads") as usize,
                "--nginx-workers" => o.nginx_workers = num("--nginx-workers") as usize,
                "--proxy-threads" => o.proxy_threads = num("--proxy-threads") as usize,
                "--no-nginx" => o.nginx = None,
                "--only" => {
                    let list = it.next().expect("--only needs a list such as A,B,E");
                    o.only = Some(list.split(',').map(|s| s.trim().to_string()).collect());
                }
                "--help" | "-h" => {
                    println!("{}", HELP);
                    std::process::exit(0);
                }
                // Cargo and libtest pass their own flags; ignore the rest.
                _ => {}
            }
        }
        o
    }

    fn wants(&self, key: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|l| l.iter().any(|k| k.eq_ignore_ascii_case(key)))
    }
}

const HELP: &str = "posthook end-to-end load test
  cargo bench --bench load [-- OPTIONS]
  --quick               short phases, one round (smoke numbers)
  --rounds N            rounds of the alternation (default 5)
  --conns N             closed-loop connections (default 50)
  --open-rate R         open-loop rate for the A..E latency table (default 5000/s)
  --only K,K            run only these scenario keys (A B C D E B' E' C10k Gdirect Gsplit Gposthook Gchain Psplit sweep dead)
  --no-nginx            skip the nginx scenarios
  --loadgen-threads N, --upstream-threads N, --nginx-workers N  (defaults 2, 2, 2)
  --proxy-threads N     `threads` of posthook and of the bare Pingora proxy (default 1)
  env POSTHOOK_BIN      the posthook binary (default: next to this bench, target/release/posthook)
  env POSTHOOK_PATCHED_BIN, BARE_PATCHED_BIN   posthook and this bench built against a patched
                        Pingora (benches/profile/patched-pingora.sh): adds scenarios B' and E'";

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// CPU ticks of each thread of `pid`, by thread name (posthook names its runtimes).
fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let stat = t.path().join("stat");
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            let name = match (text.find('('), text.rfind(')')) {
                (Some(a), Some(b)) if a < b => text[a + 1..b].to_string(),
                _ => continue,
            };
            let name = if name.starts_with("Pingora") {
                "proxy (Pingora service)".to_string()
            } else if name.contains("webhook") {
                "webhook dispatcher".to_string()
            } else {
                "other threads".to_string()
            };
            *out.entry(name).or_default() += stat_ticks(&stat.to_string_lossy());
        }
    }
    out
}

/// CPU ticks of this process's threads: (upstream runtime, everything else = load generator).
fn own_ticks() -> (u64, u64) {
    let total = stat_ticks("/proc/self/stat");
    let mut upstream = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let p = t.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.starts_with("bench-upstream") {
                upstream += stat_ticks(&p.join("stat").to_string_lossy());
            }
        }
    }
    (upstream, total.saturating_sub(upstream))
}

// ---------------------------------------------------------------------------------------------
// Scenarios and aggregation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    Open,
}

/// A process group whose CPU is charged to a scenario.
#[derive(Clone)]
struct CpuGroup {
    name: &'static str,
    pids: Vec<u32>,
}

#[derive(Clone)]
struct Scenario {
    key: &'static str,
    /// `--only` selects by key or by group.
    group: &'static str,
    addr: SocketAddr,
    workload: Workload,
    cpu: Vec<CpuGroup>,
    /// posthook C is behind it: matching posts must reach the sink.
    fires: bool,
    /// A posthook whose CPU is also reported per thread.
    split_pid: Option<u32>,
}

#[derive(Default)]
struct Agg {
    rates: Vec<f64>,
    lat: Vec<u64>,
    errors: BTreeMap<String, u64>,
    requests: u64,
    cpu_ticks: Vec<u64>,
    upstream_ticks: u64,
    loadgen_ticks: u64,
    pacer_lag: Vec<u64>,
    deliveries: Option<Deliveries>,
    /// Names of the CPU groups, as charged.
    cpu_names: Vec<&'static str>,
    /// Other load on the machine during each kept phase (cores).
    foreign: Vec<f64>,
    /// posthook's CPU ticks by thread.
    threads: BTreeMap<String, u64>,
    /// Phases merged into this result / phases run.
    phases_used: usize,
    phases_total: usize,
    /// Deliveries of every phase, quiet or not (the correctness check).
    all_deliveries: Option<Deliveries>,
}

impl Agg {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn absorb(&mut self, o: &Agg) {
        self.cpu_names = o.cpu_names.clone();
        self.rates.extend(&o.rates);
        self.lat.extend(&o.lat);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.requests += o.requests;
        if self.cpu_ticks.len() < o.cpu_ticks.len() {
            self.cpu_ticks.resize(o.cpu_ticks.len(), 0);
        }
        for (i, t) in o.cpu_ticks.iter().enumerate() {
            self.cpu_ticks[i] += t;
        }
        self.upstream_ticks += o.upstream_ticks;
        self.loadgen_ticks += o.loadgen_ticks;
        self.pacer_lag.extend(&o.pacer_lag);
        self.foreign.extend(&o.foreign);
        for (k, v) in &o.threads {
            *self.threads.entry(k.clone()).or_default() += v;
        }
        if let Some(d) = &o.deliveries {
            self.deliveries
                .get_or_insert_with(Deliveries::default)
                .add(d.clone());
        }
    }
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn us(ns: u64) -> String {
    let v = ns as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

struct Runner {
    opts: Opts,
    rt: tokio::runtime::Runtime,
    up: Arc<Upstream>,
    /// posthook C's log and how far it was read.
    c_log: PathBuf,
    c_log_offset: u64,
    /// (key, mode) → each kept phase's results, in first-run order.
    aggs: Vec<((String, Mode), Vec<Agg>)>,
    /// Per round: (key, open loop) → (req/s, other load), for the drift table and ratios.
    per_round: Vec<BTreeMap<(String, bool), (f64, f64)>>,
    /// Every child pid (for telling other load on the machine from ours).
    our_pids: Vec<u32>,
    /// Phases discarded because of other load.
    repeats: u64,
    /// Time the run may still spend waiting for a quiet machine and repeating phases.
    noise_left: Duration,
}

impl Runner {
    fn push(&mut self, key: &str, mode: Mode, phase: Agg) {
        match self
            .aggs
            .iter_mut()
            .find(|((k, m), _)| k == key && *m == mode)
        {
            Some((_, v)) => v.push(phase),
            None => self.aggs.push(((key.to_string(), mode), vec![phase])),
        }
    }

    /// The results of `key` in `mode`: the phases that ran on a quiet machine (other load ≤
    /// `MAX_FOREIGN`) when there are any, else all of them; delivery counts always from all.
    fn find(&self, key: &str, mode: Mode) -> Option<Agg> {
        let phases = &self
            .aggs
            .iter()
            .find(|((k, m), _)| k == key && *m == mode)?
            .1;
        let quiet: Vec<&Agg> = phases
            .iter()
            .filter(|p| p.foreign.iter().all(|f| *f <= MAX_FOREIGN))
            .collect();
        let used = if quiet.is_empty() {
            phases.iter().collect()
        } else {
            quiet
        };
        let mut a = Agg::default();
        for p in &used {
            a.absorb(p);
        }
        a.phases_used = used.len();
        a.phases_total = phases.len();
        for p in phases {
            if let Some(d) = &p.deliveries {
                a.all_deliveries
                    .get_or_insert_with(Deliveries::default)
                    .add(d.clone());
            }
        }
        Some(a)
    }

    /// Runs one phase of `sc` and folds it into the aggregates. Other work on the machine
    /// (CPU not spent by the bench or its children) is waited out before the phase, measured
    /// during it, and a phase that shared the cores with more than `MAX_FOREIGN` is re-run.
    fn phase(&mut self, round: usize, sc: &Scenario, mode: Mode, rate: f64, measure: Duration) {
        if !self.opts.wants(sc.key) && !self.opts.wants(sc.group) {
            return;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let waited = self.wait_quiet();
            let phase_started = Instant::now();
            let (res, deliveries, cpu, own, foreign, threads) =
                self.run_once(sc, mode, rate, measure);
            let rps = res.ok as f64 / res.window;
            let accepted = self.up.accepted.swap(0, Ordering::Relaxed);
            let sink_conns = self.up.sink_accepted.swap(0, Ordering::Relaxed);
            let label = match mode {
                Mode::Closed => format!("closed, {} conns", self.opts.conns),
                Mode::Open => format!("open, {rate:.0}/s"),
            };
            let lat = sorted(&res.lat);
            let mut line = format!(
                "round {} {:<10} {label:<18} {rps:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {}  conns to upstream {accepted} / sink {sink_conns}  other load {foreign:.2} cores (waited {:.1} s)",
                round + 1,
                sc.key,
                us(pct(&lat, 0.5)),
                us(pct(&lat, 0.99)),
                res.error_count(),
                waited.as_secs_f64()
            );
            if let Some(d) = &deliveries {
                let _ = write!(
                    line,
                    "  | matching {} delivered {} replies {} (drained in {:.2} s)",
                    d.expected,
                    d.delivered,
                    d.replied,
                    d.drain.as_secs_f64()
                );
            }
            if foreign > MAX_FOREIGN && attempt <= MAX_RETRIES && !self.noise_left.is_zero() {
                eprintln!("{line}  → other load, discarded and repeated");
                self.repeats += 1;
                self.noise_left = self.noise_left.saturating_sub(phase_started.elapsed());
                continue;
            }
            eprintln!("{line}");
            self.per_round[round].insert((sc.key.to_string(), mode == Mode::Open), (rps, foreign));
            let phase = Agg {
                cpu_names: sc.cpu.iter().map(|g| g.name).collect(),
                rates: vec![rps],
                foreign: vec![foreign],
                requests: res.total,
                cpu_ticks: cpu,
                upstream_ticks: own.0,
                loadgen_ticks: own.1,
                lat: res.lat,
                errors: res.errors,
                pacer_lag: res.pacer_lag,
                threads,
                deliveries,
                ..Agg::default()
            };
            self.push(sc.key, mode, phase);
            return;
        }
    }

    /// One attempt: (load result, deliveries, CPU ticks per group, (upstream, loadgen) ticks,
    /// other load in cores).
    #[allow(clippy::type_complexity)]
    fn run_once(
        &mut self,
        sc: &Scenario,
        mode: Mode,
        rate: f64,
        measure: Duration,
    ) -> (
        LoadResult,
        Option<Deliveries>,
        Vec<u64>,
        (u64, u64),
        f64,
        BTreeMap<String, u64>,
    ) {
        clear_records(&self.up);
        let threads0 = sc.split_pid.map(thread_ticks).unwrap_or_default();
        let _ = read_log(&self.c_log, &mut self.c_log_offset);
        let cpu0: Vec<u64> = sc.cpu.iter().map(|g| proc_ticks(&g.pids)).collect();
        let (up0, lg0) = own_ticks();
        let load0 = self.load_snapshot();
        let o = &self.opts;
        let warmup = match mode {
            Mode::Closed => o.closed_warmup,
            Mode::Open => o.open_warmup,
        };
        let warm_from = now_ns() + warmup.as_nanos() as u64;
        let wl = sc.workload.clone();
        let (conns, open_conns) = (o.conns, o.open_conns);
        let res = self.rt.block_on(async {
            match mode {
                Mode::Closed => closed_loop(sc.addr, &wl, conns, warmup, measure).await,
                Mode::Open => open_loop(sc.addr, &wl, rate, open_conns, warmup, measure).await,
            }
        });
        let foreign = self.foreign_since(load0);
        let deliveries = sc.fires.then(|| {
            let mut d = collect_deliveries(&self.up, warm_from, self.opts.drain_stall);
            d.log = read_log(&self.c_log, &mut self.c_log_offset);
            d
        });
        let cpu1: Vec<u64> = sc.cpu.iter().map(|g| proc_ticks(&g.pids)).collect();
        let (up1, lg1) = own_ticks();
        let cpu = cpu0
            .iter()
            .zip(&cpu1)
            .map(|(a, b)| b.saturating_sub(*a))
            .collect();
        let mut threads = sc.split_pid.map(thread_ticks).unwrap_or_default();
        for (k, v) in threads.iter_mut() {
            *v = v.saturating_sub(threads0.get(k).copied().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(100));
        (
            res,
            deliveries,
            cpu,
            (up1.saturating_sub(up0), lg1.saturating_sub(lg0)),
            foreign,
            threads,
        )
    }

    /// (machine busy ticks, ticks of the bench and its children, when).
    fn load_snapshot(&self) -> (u64, u64, Instant) {
        let ours = stat_ticks("/proc/self/stat") + proc_ticks(&self.all_pids());
        (machine_busy_ticks(), ours, Instant::now())
    }

    fn all_pids(&self) -> Vec<u32> {
        let mut pids = self.our_pids.clone();
        pids.retain(|p| proc_alive(*p));
        pids
    }

    /// CPU (in cores) spent since `snap` by processes that are not the bench's.
    fn foreign_since(&self, snap: (u64, u64, Instant)) -> f64 {
        let (busy0, ours0, t0) = snap;
        let (busy1, ours1, _) = self.load_snapshot();
        let foreign = busy1.saturating_sub(busy0) as f64 - ours1.saturating_sub(ours0) as f64;
        (foreign / clock_ticks() / t0.elapsed().as_secs_f64()).max(0.0)
    }

    /// Waits (at most `max_quiet_wait`) until other processes use less than `QUIET` cores.
    /// Waiting beyond 0.3 s is charged to the run's noise budget; an empty budget means no
    /// more waiting.
    fn wait_quiet(&mut self) -> Duration {
        let started = Instant::now();
        let limit = self
            .opts
            .max_quiet_wait
            .min(self.noise_left + Duration::from_millis(300));
        loop {
            let snap = self.load_snapshot();
            std::thread::sleep(Duration::from_millis(300));
            if self.foreign_since(snap) < QUIET || started.elapsed() >= limit {
                let waited = started.elapsed();
                self.noise_left = self
                    .noise_left
                    .saturating_sub(waited.saturating_sub(Duration::from_millis(300)));
                return waited;
            }
        }
    }
}

const SWEEP_KEYS: &[&str] = &["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"];

/// Other load (cores) below which the machine counts as quiet before a phase.
const QUIET: f64 = 0.05;
/// Other load (cores) above which a phase is repeated.
const MAX_FOREIGN: f64 = 0.10;
const MAX_RETRIES: usize = 2;

fn sorted(v: &[u64]) -> Vec<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-bare-proxy") {
        let get = |k: usize| {
            args.get(i + k)
                .expect("--serve-bare-proxy LISTEN UPSTREAM THREADS")
        };
        serve_bare_proxy(get(1), get(2), get(3).parse().expect("threads"));
    }
    epoch();
    install_signal_cleanup();
    let opts = Opts::parse(&args[1..]);
    run(opts);
}

fn cmd_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_string();
            }
            s
        })
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "| nproc | {cpus} |\n| CPU | {model} |\n| memory | {mem} |\n| kernel | {} |\n| rustc | {} |\n| nginx | {} |\n",
        kernel.trim(),
        cmd_output("rustc", &["-V"]),
        cmd_output("/usr/sbin/nginx", &["-v"]).replace("nginx version: ", ""),
    )
}

fn run(opts: Opts) {
    let started = Instant::now();
    let bin = posthook_bin();
    let bin_mtime = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (bin_mtime, newest_source_mtime()) {
        if b < s {
            eprintln!(
                "WARNING: {} is older than src/: run `cargo build --release` first",
                bin.display()
            );
        }
    }
    if bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!("WARNING: {} looks like a debug build", bin.display());
    }
    let dir = std::env::temp_dir().join(format!("posthook-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tmp = TempDir(dir.clone());

    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.upstream_threads)
        .thread_name("bench-upstream")
        .enable_all()
        .build()
        .expect("upstream runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.loadgen_threads)
        .thread_name("bench-loadgen")
        .enable_all()
        .build()
        .expect("load runtime");
    let up = Arc::new(Upstream::default());
    let listen = |kind: Serve| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let st = up.clone();
        upstream_rt.spawn(async move {
            let l = TcpListener::from_std(l).expect("listener");
            serve(l, st, kind).await
        });
        addr
    };
    let upstream = listen(Serve::Upstream);
    let sink = listen(Serve::Sink);
    let black_hole = listen(Serve::BlackHole);

    // The proxies.
    let hooks = hooks_yaml(sink);
    let start_posthook = |bin: &Path, name: &str, hooks: &str| -> (Proc, SocketAddr, Duration) {
        let addr = loopback(free_port());
        let conf = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &conf,
            posthook_yaml(addr, upstream, opts.proxy_threads, hooks),
        )
        .expect("config");
        let t = Instant::now();
        let mut p = Proc::spawn(
            name,
            Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .env(
                    "RUST_LOG",
                    std::env::var("POSTHOOK_RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null()),
            false,
            dir.join(format!("{name}.log")),
        );
        let took = p.wait_listening(addr, t);
        (p, addr, took)
    };
    let (b, b_addr, b_start) = start_posthook(&bin, "posthook-B", "");
    let (c, c_addr, c_start) = start_posthook(&bin, "posthook-C", &hooks);
    let start_bare = |exe: &Path, name: &str| -> (Proc, SocketAddr, Duration) {
        let addr = loopback(free_port());
        let t = Instant::now();
        let mut p = Proc::spawn(
            name,
            Command::new(exe)
                .arg("--serve-bare-proxy")
                .arg(addr.to_string())
                .arg(upstream.to_string())
                .arg(opts.proxy_threads.to_string())
                .stdin(Stdio::piped()),
            false,
            dir.join(format!("{name}.log")),
        );
        let took = p.wait_listening(addr, t);
        (p, addr, took)
    };
    let (e, e_addr, e_start) = start_bare(
        &std::env::current_exe().expect("current exe"),
        "bare-pingora",
    );
    let patched = patched_bins().map(|(posthook, bare)| {
        let (bp, bp_addr, _) = start_posthook(&posthook, "posthook-B-patched", "");
        let (ep, ep_addr, _) = start_bare(&bare, "bare-patched");
        eprintln!(
            "patched Pingora: posthook B' {bp_addr} ({}), bare E' {ep_addr} ({})",
            posthook.display(),
            bare.display()
        );
        (bp, bp_addr, ep, ep_addr)
    });
    let nginx_ports = NginxPorts {
        direct: loopback(free_port()),
        split: loopback(free_port()),
        chain: loopback(free_port()),
    };
    let nginx = opts.nginx.as_ref().map(|path| {
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_conf(&dir, opts.nginx_workers, upstream, c_addr, &nginx_ports),
        )
        .expect("nginx.conf");
        let t = Instant::now();
        let mut p = Proc::spawn(
            "nginx",
            Command::new(path)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("nginx-error.log"))
                .stdin(Stdio::null()),
            true,
            dir.join("nginx.log"),
        );
        p.wait_listening(nginx_ports.direct, t);
        p.wait_listening(nginx_ports.split, t);
        p.wait_listening(nginx_ports.chain, t);
        // Workers appear right after the master binds.
        let deadline = Instant::now() + Duration::from_secs(5);
        while children_of(p.pid()).len() < opts.nginx_workers && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        p.extra = children_of(p.pid());
        p
    });
    if nginx.is_none() {
        eprintln!("nginx not found at /usr/sbin/nginx (or --no-nginx): scenario D and the split deployment are skipped");
    }
    let procs = Procs {
        b,
        c,
        e,
        nginx,
        patched,
    };
    let idle_rss: Vec<(String, u64)> = vec![
        (
            "posthook B".into(),
            proc_status_kib(procs.b.pid(), "VmRSS:"),
        ),
        (
            "posthook C".into(),
            proc_status_kib(procs.c.pid(), "VmRSS:"),
        ),
        (
            "bare Pingora".into(),
            proc_status_kib(procs.e.pid(), "VmRSS:"),
        ),
    ];
    eprintln!(
        "started: upstream {upstream}, sink {sink}, posthook B {b_addr} ({:.2} s), posthook C {c_addr} with {HOOKS} hooks ({:.2} s), bare {e_addr} ({:.2} s); binary {}",
        b_start.as_secs_f64(),
        c_start.as_secs_f64(),
        e_start.as_secs_f64(),
        bin.display()
    );

    // The scenarios.
    let posts = posts_workload(10_000, false);
    let gets = get_workload("/api/v4/users/me");
    let ph = |p: &Proc| CpuGroup {
        name: "posthook",
        pids: vec![p.pid()],
    };
    let ngx = procs.nginx.as_ref().map(|n| CpuGroup {
        name: "nginx",
        pids: std::iter::once(n.pid())
            .chain(n.extra.iter().copied())
            .collect(),
    });
    let sc = |key, addr, workload: &Workload, cpu: Vec<CpuGroup>, fires| Scenario {
        key,
        group: key,
        addr,
        workload: workload.clone(),
        split_pid: cpu
            .iter()
            .find(|g: &&CpuGroup| g.name == "posthook")
            .and_then(|g| g.pids.first().copied()),
        cpu,
        fires,
    };
    let bare = CpuGroup {
        name: "bare",
        pids: vec![procs.e.pid()],
    };
    let mut main_scenarios = vec![
        sc("A", upstream, &posts, vec![], false),
        sc("B", b_addr, &posts, vec![ph(&procs.b)], false),
        sc("C", c_addr, &posts, vec![ph(&procs.c)], true),
    ];
    if let Some(n) = &ngx {
        main_scenarios.push(sc("D", nginx_ports.direct, &posts, vec![n.clone()], false));
    }
    main_scenarios.push(sc("E", e_addr, &posts, vec![bare], false));
    if let Some((bp, bp_addr, ep, ep_addr)) = &procs.patched {
        main_scenarios.push(sc("B'", *bp_addr, &posts, vec![ph(bp)], false));
        let bare = CpuGroup {
            name: "bare",
            pids: vec![ep.pid()],
        };
        main_scenarios.push(sc("E'", *ep_addr, &posts, vec![bare], false));
    }
    let c10k = sc("C10k", c_addr, &posts, vec![ph(&procs.c)], true);
    let mut split = vec![
        sc("Gdirect", upstream, &gets, vec![], false),
        sc("Gposthook", c_addr, &gets, vec![ph(&procs.c)], false),
    ];
    if let Some(n) = &ngx {
        let both = vec![n.clone(), ph(&procs.c)];
        split.push(sc(
            "Gsplit",
            nginx_ports.split,
            &gets,
            vec![n.clone()],
            false,
        ));
        split.push(sc("Gchain", nginx_ports.chain, &gets, both.clone(), false));
        split.push(sc("Psplit", nginx_ports.split, &posts, both, true));
    }
    let mut our_pids = vec![procs.b.pid(), procs.c.pid(), procs.e.pid()];
    if let Some((bp, _, ep, _)) = &procs.patched {
        our_pids.extend([bp.pid(), ep.pid()]);
    }
    if let Some(n) = &ngx {
        our_pids.extend(&n.pids);
    }

    let mut r = Runner {
        rt,
        up: up.clone(),
        c_log: procs.c.log.clone(),
        c_log_offset: 0,
        aggs: Vec::new(),
        per_round: (0..opts.rounds).map(|_| BTreeMap::new()).collect(),
        our_pids,
        repeats: 0,
        noise_left: opts.noise_budget,
        opts: opts.clone(),
    };
    for round in 0..opts.rounds {
        for s in &main_scenarios {
            r.phase(round, s, Mode::Closed, 0.0, opts.closed_measure);
        }
        for s in &main_scenarios {
            r.phase(round, s, Mode::Open, opts.open_rate, opts.open_measure);
        }
        r.phase(round, &c10k, Mode::Open, opts.c10k_rate, opts.c10k_measure);
        for s in &split {
            let saved = r.opts.closed_warmup;
            r.opts.closed_warmup = saved.min(Duration::from_millis(500));
            r.phase(round, s, Mode::Closed, 0.0, opts.split_measure);
            r.opts.closed_warmup = saved;
        }
    }
    // How many matching posts/s can posthook carry within the delivery target? One pass.
    for (i, &rate) in opts.sweep.iter().enumerate() {
        let s = Scenario {
            key: SWEEP_KEYS[i.min(SWEEP_KEYS.len() - 1)],
            group: "sweep",
            ..c10k.clone()
        };
        let saved = r.opts.open_warmup;
        r.opts.open_warmup = Duration::from_millis(500).min(opts.sweep_measure / 2);
        r.phase(0, &s, Mode::Open, rate, opts.sweep_measure);
        r.opts.open_warmup = saved;
    }

    let hwm: Vec<(String, u64)> = vec![
        (
            "posthook B".into(),
            proc_status_kib(procs.b.pid(), "VmHWM:"),
        ),
        (
            "posthook C".into(),
            proc_status_kib(procs.c.pid(), "VmHWM:"),
        ),
        (
            "bare Pingora".into(),
            proc_status_kib(procs.e.pid(), "VmHWM:"),
        ),
    ];
    let nginx_hwm: Vec<u64> = procs
        .nginx
        .as_ref()
        .map(|n| {
            n.extra
                .iter()
                .map(|p| proc_status_kib(*p, "VmHWM:"))
                .collect()
        })
        .unwrap_or_default();

    // Dead sink: a fresh posthook whose every hook points at the black hole.
    let dead = opts.wants("dead").then(|| {
        dead_sink_phase(
            &opts,
            &r.rt,
            &up,
            &|name: &str, hooks: &str| start_posthook(&bin, name, hooks),
            black_hole,
        )
    });
    let lookups = up.lookups.load(Ordering::Relaxed);
    drop(procs);
    let total = started.elapsed();

    print_report(
        &r,
        &opts,
        ReportExtra {
            idle_rss,
            hwm,
            nginx_hwm,
            starts: vec![
                ("posthook B", b_start),
                ("posthook C (10 000 hooks)", c_start),
                ("bare Pingora", e_start),
            ],
            dead,
            lookups,
            sink_unreadable: up.sink_unreadable.load(Ordering::Relaxed),
            upstream_bad: up.bad.load(Ordering::Relaxed),
            total,
            bin,
        },
    );
    let rt = r.rt;
    rt.shutdown_timeout(Duration::from_secs(1));
    upstream_rt.shutdown_timeout(Duration::from_secs(1));
    drop(tmp);
}

struct DeadResult {
    rps: f64,
    errors: u64,
    /// (seconds since start, VmRSS KiB)
    rss: Vec<(f64, u64)>,
    hwm: u64,
    idle: u64,
    log: LogCounts,
    created: u64,
    held_conns: u64,
    measure: f64,
}

fn dead_sink_phase(
    opts: &Opts,
    rt: &tokio::runtime::Runtime,
    up: &Arc<Upstream>,
    start_posthook: &dyn Fn(&str, &str) -> (Proc, SocketAddr, Duration),
    black_hole: SocketAddr,
) -> DeadResult {
    let (p, addr, _) = start_posthook("posthook-dead", &hooks_yaml(black_hole));
    let pid = p.pid();
    let idle = proc_status_kib(pid, "VmRSS:");
    clear_records(up);
    // Every post matches, so the bounded queue fills within a second and stays full.
    let wl = posts_workload(10_000, true);
    let measure = opts.dead_measure;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let samples = samples.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < measure + Duration::from_millis(300) {
                samples
                    .lock()
                    .unwrap()
                    .push((t0.elapsed().as_secs_f64(), proc_status_kib(pid, "VmRSS:")));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let res = rt.block_on(closed_loop(addr, &wl, opts.conns, Duration::ZERO, measure));
    let _ = sampler.join();
    let held_conns = up.blackhole_conns.load(Ordering::Relaxed);
    let hwm = proc_status_kib(pid, "VmHWM:");
    let mut offset = 0;
    let log = read_log(&p.log, &mut offset);
    let created = up.created.lock().unwrap().len() as u64;
    clear_records(up);
    drop(p);
    let rss = samples.lock().unwrap().clone();
    eprintln!(
        "dead sink: {:.0} req/s, errors {}, RSS {} → {} MiB, peak {} MiB, queue drops {}",
        res.ok as f64 / res.window,
        res.error_count(),
        mib(rss.first().map_or(0, |s| s.1)),
        mib(rss.last().map_or(0, |s| s.1)),
        mib(hwm),
        log.queue_drops
    );
    DeadResult {
        rps: res.ok as f64 / res.window,
        errors: res.error_count(),
        rss,
        hwm,
        idle,
        log,
        created,
        held_conns,
        measure: measure.as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

struct ReportExtra {
    idle_rss: Vec<(String, u64)>,
    hwm: Vec<(String, u64)>,
    nginx_hwm: Vec<u64>,
    starts: Vec<(&'static str, Duration)>,
    dead: Option<DeadResult>,
    lookups: u64,
    sink_unreadable: u64,
    upstream_bad: u64,
    total: Duration,
    bin: PathBuf,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn print_report(r: &Runner, o: &Opts, x: ReportExtra) {
    let tck = clock_ticks();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# posthook load test — results\n");
    if o.quick {
        let _ = writeln!(w, "> **--quick run**: short phases, one round; numbers are a smoke test, not a measurement.\n");
    }
    let _ = writeln!(
        w,
        "## Machine\n\n| | |\n|---|---|\n{}| posthook binary | `{}` |\n| run took | {:.0} s |\n",
        machine(),
        x.bin.display(),
        x.total.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "Settings: {} rounds; closed loop {} keep-alive connections, {:.1} s warm-up + {:.1} s measured; open loop {:.0} req/s, {:.1} s + {:.1} s, {} connections; C10k {:.0} posts/s for {:.1} s; split group {:.1} s measured; load generator {} threads, upstream {} threads, nginx {} workers; posthook and the bare proxy `threads: {}`. Load generator, upstream stand-in, sink and proxy all share the same {} cores.\n",
        o.rounds, o.conns, o.closed_warmup.as_secs_f64(), o.closed_measure.as_secs_f64(), o.open_rate, o.open_warmup.as_secs_f64(), o.open_measure.as_secs_f64(), o.open_conns, o.c10k_rate, o.c10k_measure.as_secs_f64(), o.split_measure.as_secs_f64(), o.loadgen_threads, o.upstream_threads, o.nginx_workers, o.proxy_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let _ = writeln!(
        w,
        "Other load: CPU used on the machine by processes that are not this bench's, during each kept phase (median, in cores). Phases with more than {MAX_FOREIGN:.2} cores of other load were repeated up to {MAX_RETRIES} times while the noise budget lasted: {} phases were repeated; {:.0} s of the budget were left.\n",
        r.repeats,
        r.noise_left.as_secs_f64()
    );
    let _ = writeln!(w, "Every table uses only the phases that ran on a quiet machine (other load ≤ {MAX_FOREIGN:.2} cores) when a scenario has any, else all of its phases; \"phases used\" says which. Ratios use only rounds in which both scenarios were quiet (else all rounds). Delivery counts (missing, duplicates) always cover every phase.\n");
    let cpu_cell = |a: &Agg| -> String {
        if a.cpu_ticks.is_empty() || a.requests == 0 {
            return "–".into();
        }
        a.cpu_ticks
            .iter()
            .zip(&a.cpu_names)
            .map(|(t, n)| format!("{n} {:.3}", *t as f64 / tck / a.requests as f64 * 1000.0))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let bench_cell = |a: &Agg| -> String {
        if a.requests == 0 {
            return "–".into();
        }
        let per = |t: u64| t as f64 / tck / a.requests as f64 * 1e6;
        format!(
            "{:.0} / {:.0} | {:.2} ({}/{})",
            per(a.loadgen_ticks),
            per(a.upstream_ticks),
            median(&a.foreign),
            a.phases_used,
            a.phases_total
        )
    };
    let lat_cells = |a: &Agg| -> String {
        let s = sorted(&a.lat);
        format!(
            "{} | {} | {} | {} | {}",
            us(pct(&s, 0.5)),
            us(pct(&s, 0.9)),
            us(pct(&s, 0.99)),
            us(pct(&s, 0.999)),
            us(s.last().copied().unwrap_or(0))
        )
    };
    let errors_cell = |a: &Agg| -> String {
        if a.error_count() == 0 {
            "0".into()
        } else {
            let kinds: Vec<String> = a.errors.iter().map(|(k, v)| format!("{v}× {k}")).collect();
            format!("**{}** ({})", a.error_count(), kinds.join(", "))
        }
    };
    let scenario_rows: &[(&str, &str)] = &[
        ("A", "direct to the upstream"),
        ("B", "posthook, no hooks"),
        (
            "C",
            "posthook, 10 000 hooks, 10% of posts match (deliveries + replies on)",
        ),
        ("D", "nginx proxy_pass, keep-alive"),
        ("E", "bare Pingora proxy (framework floor)"),
        ("B'", "posthook, no hooks, patched Pingora"),
        ("E'", "bare Pingora proxy, patched Pingora"),
    ];

    let _ = writeln!(
        w,
        "## Closed loop: maximum throughput (`POST /api/v4/posts`, {} connections)\n",
        o.conns
    );
    let _ = writeln!(w, "req/s: median of the rounds [min–max]. Latency in µs over all rounds' samples. CPU: the proxy process's user+system CPU seconds per 1 000 requests (0.050 s/1000 = 50 µs of CPU per request), warm-up included. Bench CPU: µs per request of the load generator / the upstream stand-in.\n");
    let _ = writeln!(w, "| | scenario | req/s | p50 | p90 | p99 | p99.9 | max | errors | CPU s/1000 req | bench CPU µs/req (loadgen / upstream) | other load, cores (phases used) |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|");
    for (key, what) in scenario_rows {
        if let Some(a) = &r.find(key, Mode::Closed) {
            let (lo, hi) = min_max(&a.rates);
            let _ = writeln!(
                w,
                "| {key} | {what} | {:.0} [{lo:.0}–{hi:.0}] | {} | {} | {} | {} |",
                median(&a.rates),
                lat_cells(a),
                errors_cell(a),
                cpu_cell(a),
                bench_cell(a)
            );
        }
    }

    // Ratios per round (the rounds alternate, so each ratio compares neighbours in time).
    let ratio = |num: &str, den: &str| -> Option<(f64, f64, f64)> {
        let v: Vec<f64> = r
            .per_round
            .iter()
            .filter_map(|m| {
                let a = m.get(&(num.to_string(), false))?;
                let b = m.get(&(den.to_string(), false))?;
                (a.1 <= MAX_FOREIGN && b.1 <= MAX_FOREIGN).then_some(a.0 / b.0)
            })
            .collect();
        // With no quiet round for the pair, every round counts.
        let v = if v.is_empty() {
            r.per_round
                .iter()
                .filter_map(|m| {
                    let a = m.get(&(num.to_string(), false))?;
                    let b = m.get(&(den.to_string(), false))?;
                    Some(a.0 / b.0)
                })
                .collect()
        } else {
            v
        };
        if v.is_empty() {
            return None;
        }
        let (lo, hi) = min_max(&v);
        Some((median(&v), lo, hi))
    };
    let _ = writeln!(w, "\n### Ratios (closed-loop req/s; median of per-round ratios [min–max])\n\n| ratio | value | target | |\n|---|---:|---|---|");
    for (num, den, target) in [
        ("B", "A", None),
        ("B", "D", Some(1.0)),
        ("B", "E", Some(0.95)),
        ("C", "B", Some(0.95)),
        ("B'", "B", None),
        ("E'", "E", None),
        ("B'", "D", None),
        ("B'", "E'", None),
    ] {
        if let Some((m, lo, hi)) = ratio(num, den) {
            let (t, verdict) = match target {
                Some(t) if num == "B" && den == "D" => (format!("≥ {t:.2} (stretch)"), met(m >= t)),
                Some(t) => (format!("≥ {t:.2}"), met(m >= t)),
                None => ("–".into(), ""),
            };
            let _ = writeln!(
                w,
                "| {num}/{den} | {m:.3} [{lo:.3}–{hi:.3}] | {t} | {verdict} |"
            );
        }
    }

    // posthook's CPU by thread.
    let mut rows = String::new();
    for (key, mode, name) in [
        ("B", Mode::Closed, "B closed loop"),
        ("C", Mode::Closed, "C closed loop"),
        ("C", Mode::Open, "C open loop"),
        ("C10k", Mode::Open, "C open loop, 1 000 matching/s"),
        ("Gposthook", Mode::Closed, "GET through posthook"),
    ] {
        let Some(a) = r.find(key, mode) else { continue };
        let a = &a;
        if a.threads.is_empty() || a.requests == 0 {
            continue;
        }
        let per = |t: u64| t as f64 / tck / a.requests as f64 * 1e6;
        let get = |k: &str| a.threads.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            rows,
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            per(get("proxy (Pingora service)")),
            per(get("webhook dispatcher")),
            per(get("other threads")),
            per(a.threads.values().sum())
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(w, "\n### posthook's CPU by thread (µs per request)\n\nThe proxy runs on Pingora's service thread (`threads: 1`); look-ups, webhook calls and replies on the dispatcher's own runtime thread. In C one post in ten matches, so the dispatcher's cost per matching post is ten times its per-request figure.\n\n| phase | proxy thread | dispatcher thread | other threads | total |\n|---|---:|---:|---:|---:|\n{rows}");
    }

    // Every process on the box shares the same 2 cores: throughput follows the sum.
    let mut rows = String::new();
    let mut totals: BTreeMap<&str, (f64, f64, f64, f64)> = BTreeMap::new();
    for (key, _) in scenario_rows {
        let Some(a) = r.find(key, Mode::Closed) else {
            continue;
        };
        if a.requests == 0 {
            continue;
        }
        let per = |t: u64| t as f64 / tck / a.requests as f64 * 1e6;
        let (lg, up, px) = (
            per(a.loadgen_ticks),
            per(a.upstream_ticks),
            per(a.cpu_ticks.iter().sum()),
        );
        let total = lg + up + px;
        totals.insert(key, (lg, up, px, total));
        let _ = writeln!(
            rows,
            "| {key} | {lg:.1} | {up:.1} | {px:.1} | {total:.1} | {:.0} | {:.0} |",
            2e6 / total,
            median(&a.rates)
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(w, "\n### Where the machine's CPU goes (closed loop, µs per request)\n\nThe load generator, the upstream stand-in (with the webhook sink, in C) and the proxy share the 2 cores, so a scenario's throughput follows the sum of their CPU per request: 2 cores ÷ total is the rate the box could reach if it were CPU-bound and nothing else ran.\n\n| | load generator | upstream (+ sink) | proxy | total | 2 cores ÷ total, req/s | measured req/s |\n|---|---:|---:|---:|---:|---:|---:|\n{rows}");
        if let (Some(b), Some(c)) = (totals.get("B"), totals.get("C")) {
            let _ = writeln!(
                w,
                "C/B if throughput followed CPU alone: {:.3} (B's total ÷ C's). C − B per request: {:+.1} µs (posthook {:+.1}, upstream and sink {:+.1}, load generator {:+.1}). For C/B ≥ 0.95 the difference would have to stay under {:.1} µs per request, {:.0} µs per matching post at one post in ten.",
                b.3 / c.3,
                c.3 - b.3,
                c.2 - b.2,
                c.1 - b.1,
                c.0 - b.0,
                b.3 / 0.95 - b.3,
                (b.3 / 0.95 - b.3) * 10.0
            );
        }
    }

    let _ = writeln!(
        w,
        "\n## Open loop at {:.0} req/s: latency from the intended send time\n",
        o.open_rate
    );
    let _ = writeln!(w, "Coordinated omission is corrected: each request's latency counts from when the schedule said to send it, so a stall is charged to every request due during it. The pacer's own lateness (included in these numbers) is shown separately.\n");
    let _ = writeln!(w, "| | scenario | achieved req/s | p50 | p90 | p99 | p99.9 | max | errors | CPU s/1000 req | pacer lag p50 / p99 µs | other load, cores (phases used) |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|");
    for (key, what) in scenario_rows {
        if let Some(a) = &r.find(key, Mode::Open) {
            let lag = sorted(&a.pacer_lag);
            let _ = writeln!(
                w,
                "| {key} | {what} | {:.0} | {} | {} | {} | {} |",
                median(&a.rates),
                lat_cells(a),
                errors_cell(a),
                cpu_cell(a),
                format_args!(
                    "{} / {} | {:.2} ({}/{})",
                    us(pct(&lag, 0.5)),
                    us(pct(&lag, 0.99)),
                    median(&a.foreign),
                    a.phases_used,
                    a.phases_total
                )
            );
        }
    }
    if let (Some(a), Some(b)) = (&r.find("A", Mode::Open), &r.find("B", Mode::Open)) {
        let (sa, sb) = (sorted(&a.lat), sorted(&b.lat));
        let _ = writeln!(
            w,
            "\nposthook (B) adds {:.0} µs at p50 and {:.0} µs at p99 over the direct path (A) at {:.0} req/s.",
            (pct(&sb, 0.5) as f64 - pct(&sa, 0.5) as f64) / 1000.0,
            (pct(&sb, 0.99) as f64 - pct(&sa, 0.99) as f64) / 1000.0,
            o.open_rate
        );
    }

    // Deliveries.
    let _ = writeln!(w, "\n## Webhook deliveries and replies (posthook C)\n");
    let _ = writeln!(w, "Delivery latency: the upstream wrote the 201 → the sink has read the webhook request. Reply latency: the sink wrote its answer → the upstream has read posthook's reply post. Every matching post must reach the sink exactly once and produce one reply; \"missing\" is expected − delivered after draining. Log counts are posthook's own outcome lines.\n");
    let _ = writeln!(w, "| phase | posts/s | matching posts | delivered | missing | duplicates | replies | delivery p50 / p90 / p99 / max µs | reply p50 / p99 µs | posthook log: delivered / failed / queue drops / replies posted / reply failed | drain |\n|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|");
    let mut c10k_p99 = None;
    for (key, mode, name) in [
        ("C", Mode::Closed, "C closed loop (max rate)"),
        ("C", Mode::Open, "C open loop"),
        ("C10k", Mode::Open, "C open loop, 1 000 matching posts/s"),
        (
            "Psplit",
            Mode::Closed,
            "nginx split → posthook, closed loop",
        ),
    ] {
        let Some(a) = r.find(key, mode) else { continue };
        let a = &a;
        let (Some(d), Some(all)) = (&a.deliveries, &a.all_deliveries) else {
            continue;
        };
        let (dl, rl) = (sorted(&d.delivery_lat), sorted(&d.reply_lat));
        if key == "C10k" {
            c10k_p99 = Some((
                pct(&dl, 0.99),
                median(&a.rates),
                all.missing() + all.duplicates + all.unknown,
                a.error_count(),
            ));
        }
        let lost = all.missing() + all.unknown;
        let missing = if lost > 0 {
            format!("**{lost}**")
        } else {
            "0".into()
        };
        let _ = writeln!(
            w,
            "| {name} | {:.0} | {} | {} | {missing} | {} | {} | {} / {} / {} / {} | {} / {} | {} / {} / {} / {} / {} | {:.2} s |",
            median(&a.rates),
            all.expected,
            all.delivered,
            all.duplicates,
            all.replied,
            us(pct(&dl, 0.5)),
            us(pct(&dl, 0.9)),
            us(pct(&dl, 0.99)),
            us(dl.last().copied().unwrap_or(0)),
            us(pct(&rl, 0.5)),
            us(pct(&rl, 0.99)),
            all.log.delivered,
            all.log.delivery_failed,
            all.log.queue_drops,
            all.log.replies_posted,
            all.log.reply_failed,
            all.drain.as_secs_f64()
        );
    }
    let _ = writeln!(w, "\nUpstream look-ups (channels/teams/users, all phases): {} — posthook caches them. Unreadable webhook payloads: {}. Rejected post bodies at the upstream: {}.", x.lookups, x.sink_unreadable, x.upstream_bad);

    // Capacity sweep.
    let mut best = None;
    let mut best_both = None;
    let mut rows = String::new();
    for (i, rate) in o.sweep.iter().enumerate() {
        let Some(a) = r.find(SWEEP_KEYS[i.min(SWEEP_KEYS.len() - 1)], Mode::Open) else {
            continue;
        };
        let a = &a;
        let d = a.deliveries.as_ref();
        let dl = sorted(d.map_or(&[][..], |d| &d.delivery_lat));
        let lat = sorted(&a.lat);
        let missing = a
            .all_deliveries
            .as_ref()
            .map_or(0, |d| d.missing() + d.unknown + d.duplicates);
        let clean = missing == 0 && a.error_count() == 0;
        if pct(&dl, 0.99) <= 10_000_000 && clean {
            best = Some(*rate);
        }
        if pct(&dl, 0.99) <= 10_000_000 && pct(&lat, 0.99) <= 10_000_000 && clean {
            best_both = Some(*rate);
        }
        let _ = writeln!(
            rows,
            "| {rate:.0} | {:.0} | {:.0} | {} / {} / {} | {} / {} / {} | {missing} | {} | {} | {:.2} |",
            rate / MATCH_EVERY as f64,
            median(&a.rates),
            us(pct(&lat, 0.5)),
            us(pct(&lat, 0.99)),
            us(lat.last().copied().unwrap_or(0)),
            us(pct(&dl, 0.5)),
            us(pct(&dl, 0.99)),
            us(dl.last().copied().unwrap_or(0)),
            errors_cell(a),
            cpu_cell(a),
            median(&a.foreign)
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(
            w,
            "\n### Capacity: posthook C, open loop, one pass per rate ({:.1} s each)\n",
            o.sweep_measure.as_secs_f64()
        );
        let _ = writeln!(w, "| posts/s offered | matching/s | achieved | request p50 / p99 / max µs | delivery p50 / p99 / max µs | missing | errors | CPU s/1000 req | other load |\n|---:|---:|---:|---|---|---:|---|---|---:|\n{rows}");
        match best {
            Some(b) => {
                let _ = writeln!(w, "Highest rate with delivery p99 ≤ 10 ms, nothing missing and no errors: **{b:.0} posts/s = {:.0} matching posts/s**.", b / MATCH_EVERY as f64);
            }
            None => {
                let _ = writeln!(
                    w,
                    "No rate met delivery p99 ≤ 10 ms with nothing missing and no errors."
                );
            }
        }
        if let Some(b) = best_both {
            let _ = writeln!(w, "Highest rate where the posts' own request p99 also stays ≤ 10 ms: **{b:.0} posts/s = {:.0} matching posts/s**.", b / MATCH_EVERY as f64);
        }
    }

    // Split deployment.
    let split_rows: &[(&str, &str)] = &[
        ("Gdirect", "GET /api/v4/users/me direct to the upstream"),
        (
            "Gsplit",
            "GET through nginx, split deployment (nginx → upstream)",
        ),
        ("Gposthook", "GET through posthook alone"),
        (
            "Gchain",
            "GET through nginx → posthook (everything through posthook)",
        ),
        (
            "Psplit",
            "POST /api/v4/posts through nginx split → posthook (10% match)",
        ),
    ];
    if r.find("Gdirect", Mode::Closed).is_some() {
        let _ = writeln!(w, "\n## Split deployment (issue item 5): nginx sends only `POST /api/v4/posts` to posthook\n");
        let _ = writeln!(w, "| | path | req/s | p50 | p90 | p99 | p99.9 | max | errors | CPU s/1000 req | bench CPU µs/req (loadgen / upstream) | other load, cores (phases used) |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|");
        for (key, what) in split_rows {
            if let Some(a) = &r.find(key, Mode::Closed) {
                let (lo, hi) = min_max(&a.rates);
                let _ = writeln!(
                    w,
                    "| {key} | {what} | {:.0} [{lo:.0}–{hi:.0}] | {} | {} | {} | {} |",
                    median(&a.rates),
                    lat_cells(a),
                    errors_cell(a),
                    cpu_cell(a),
                    bench_cell(a)
                );
            }
        }
        if let (Some(s), Some(c)) = (ratio("Gsplit", "Gchain"), ratio("Gposthook", "Gdirect")) {
            let _ = writeln!(w, "\nGET through the split ÷ through the chain: {:.2} [{:.2}–{:.2}]; GET through posthook alone ÷ direct: {:.2}.", s.0, s.1, s.2, c.0);
        }
    }

    // Memory.
    let _ = writeln!(w, "\n## Memory and start-up\n\n| process | RSS after start | peak RSS (VmHWM) over the run | start-up until listening |\n|---|---:|---:|---:|");
    for ((name, idle), (_, hwm)) in x.idle_rss.iter().zip(&x.hwm) {
        let start = x
            .starts
            .iter()
            .find(|(n, _)| n.starts_with(name.as_str()))
            .map_or("–".to_string(), |(_, d)| {
                format!("{:.2} s", d.as_secs_f64())
            });
        let _ = writeln!(
            w,
            "| {name} | {} MiB | {} MiB | {start} |",
            mib(*idle),
            mib(*hwm)
        );
    }
    if !x.nginx_hwm.is_empty() {
        let hw: Vec<String> = x.nginx_hwm.iter().map(|k| mib(*k)).collect();
        let _ = writeln!(w, "| nginx workers | | {} MiB | |", hw.join(" + "));
    }
    let c_hwm = x
        .hwm
        .iter()
        .find(|(n, _)| n == "posthook C")
        .map_or(0, |(_, k)| *k);
    if let Some(d) = &x.dead {
        let _ = writeln!(
            w,
            "\n### Dead sink: every hook aimed at an endpoint that accepts and never answers\n"
        );
        let _ = writeln!(w, "A fresh posthook with the same 10 000 hooks and shipped limits (queue 10 000, 64 jobs, 256 deliveries, 30 s timeout); closed loop, **every** post matching so the queue fills at once. {:.0} req/s for {:.0} s, {} client errors; {} matching posts created; {} connections held by the black hole at the end.\n", d.rps, d.measure, d.errors, d.created, d.held_conns);
        let _ = writeln!(w, "| t (s) | VmRSS (MiB) |\n|---:|---:|");
        let step = (d.rss.len() / 10).max(1);
        for (t, k) in d.rss.iter().step_by(step) {
            let _ = writeln!(w, "| {t:.1} | {} |", mib(*k));
        }
        if let Some((t, k)) = d.rss.last() {
            let _ = writeln!(w, "| {t:.1} | {} |", mib(*k));
        }
        let _ = writeln!(w, "\nRSS after start {} MiB, peak {} MiB. posthook log: {} queue drops, {} deliveries failed, {} other warnings.", mib(d.idle), mib(d.hwm), d.log.queue_drops, d.log.delivery_failed, d.log.other_warn);
    }

    // Targets.
    let _ = writeln!(w, "\n## Targets\n\n| target | measured | |\n|---|---|---|");
    if let Some((m, _, _)) = ratio("B", "E") {
        let _ = writeln!(
            w,
            "| B/E ≥ 0.95 (posthook vs bare Pingora) | {m:.3} | {} |",
            met(m >= 0.95)
        );
    }
    if let Some((m, _, _)) = ratio("C", "B") {
        let _ = writeln!(
            w,
            "| C/B ≥ 0.95 (10 000 hooks, 10% firing vs none) | {m:.3} | {} |",
            met(m >= 0.95)
        );
    }
    let _ = writeln!(
        w,
        "| matching ≤ 300 ns/post, flat 1..100k hooks | see `cargo bench --bench micro` | |"
    );
    if let Some((p99, rate, missing, errors)) = c10k_p99 {
        let ok = p99 <= 10_000_000 && missing == 0 && errors == 0;
        let _ = writeln!(w, "| delivery p99 ≤ 10 ms at 1 000 matching posts/s (open loop, {rate:.0} posts/s) | {} ms, {missing} missing, {errors} errors | {} |", us(p99).parse::<f64>().map_or("?".into(), |v| format!("{:.2}", v / 1000.0)), met(ok));
    }
    if c_hwm > 0 {
        let _ = writeln!(
            w,
            "| posthook RSS ≤ 64 MiB with 10 000 hooks (peak over the whole run) | {} MiB | {} |",
            mib(c_hwm),
            met(c_hwm <= 64 * 1024)
        );
    }
    if let Some(d) = &x.dead {
        let half: Vec<u64> = d
            .rss
            .iter()
            .filter(|(t, _)| *t >= d.measure / 2.0)
            .map(|(_, k)| *k)
            .collect();
        let (first, last) = (
            half.first().copied().unwrap_or(0),
            half.last().copied().unwrap_or(0),
        );
        let growth = last.saturating_sub(first);
        let ok = d.hwm <= 64 * 1024 && growth <= 4 * 1024 && d.log.queue_drops > 0;
        let _ = writeln!(w, "| RSS bounded with a dead sink | peak {} MiB; second half {} → {} MiB; queue full and dropping ({} drops) | {} |", mib(d.hwm), mib(first), mib(last), d.log.queue_drops, met(ok));
    }
    if let Some((m, _, _)) = ratio("B", "D") {
        let _ = writeln!(
            w,
            "| stretch: B/D ≥ 1.0 (posthook vs nginx) | {m:.3} | {} |",
            met(m >= 1.0)
        );
    }

    // Drift.
    let _ = writeln!(w, "\n## Per round (closed-loop req/s), for drift\n\n`*`: the phase ran under more than {MAX_FOREIGN:.2} cores of other load (not used when a quiet phase exists).\n");
    let keys: Vec<&str> = ["A", "B", "C", "D", "E", "B'", "E'"]
        .into_iter()
        .filter(|k| r.find(k, Mode::Closed).is_some())
        .collect();
    let _ = writeln!(
        w,
        "| round | {} |\n|---|{}",
        keys.join(" | "),
        "---:|".repeat(keys.len())
    );
    for (i, m) in r.per_round.iter().enumerate() {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| {
                m.get(&(k.to_string(), false)).map_or("–".into(), |v| {
                    let mark = if v.1 > MAX_FOREIGN { "*" } else { "" };
                    format!("{:.0}{mark}", v.0)
                })
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", i + 1, cells.join(" | "));
    }
    print!("{out}");
}
