//! Scenarios (address, workload, whose CPU is charged) and the phases that run them. The box is
//! shared, so each phase first waits for a quiet machine, measures the CPU of its own processes
//! and of the machine as a whole, and is repeated when other load shared the cores with it.
//! Also the dead-sink phase, run once at the end against a fresh posthook.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::configs::hooks_yaml;
use crate::deliveries::{clear_records, collect_deliveries, read_log, Deliveries, LogCounts};
use crate::loadgen::{closed_loop, open_loop, posts_workload, LoadResult, Workload};
use crate::procfs::{
    children_of, clock_ticks, machine_busy_ticks, proc_alive, proc_status_kib, proc_ticks,
    stat_ticks,
};
use crate::procs::Proc;
use crate::report::{mib, pct, sorted, us, Agg};
use crate::upstream::Upstream;
use crate::Opts;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Closed,
    Open,
}

/// A process group whose CPU is charged to a scenario.
#[derive(Clone)]
pub struct CpuGroup {
    pub name: &'static str,
    pub pids: Vec<u32>,
    /// The pids' descendants count too, as they are at each reading (PostgreSQL's backends).
    pub tree: bool,
}

impl CpuGroup {
    pub fn all_pids(&self) -> Vec<u32> {
        if !self.tree {
            return self.pids.clone();
        }
        let mut all = self.pids.clone();
        let mut i = 0;
        while i < all.len() {
            all.extend(children_of(all[i]));
            i += 1;
        }
        all
    }
}

#[derive(Clone)]
pub struct Scenario {
    pub key: &'static str,
    /// `--only` selects by key or by group.
    pub group: &'static str,
    pub addr: SocketAddr,
    pub workload: Workload,
    pub cpu: Vec<CpuGroup>,
    /// posthook C (or Cs, Cp) is behind it: matching posts must reach the sink.
    pub fires: bool,
    /// The log of the posthook whose outcome lines are counted (with `fires`).
    pub log: Option<PathBuf>,
    /// A posthook whose CPU is also reported per thread.
    pub split_pid: Option<u32>,
}

pub struct Runner {
    pub opts: Opts,
    pub rt: tokio::runtime::Runtime,
    pub up: Arc<Upstream>,
    /// How far each posthook's log was read.
    pub log_offsets: BTreeMap<PathBuf, u64>,
    /// (key, mode) → each kept phase's results, in first-run order.
    pub aggs: Vec<((String, Mode), Vec<Agg>)>,
    /// Per round: (key, open loop) → (req/s, other load), for the drift table and ratios.
    pub per_round: Vec<BTreeMap<(String, bool), (f64, f64)>>,
    /// Every child pid (for telling other load on the machine from ours).
    pub our_pids: Vec<u32>,
    /// Children whose descendants are ours too (the PostgreSQL server).
    pub our_trees: Vec<CpuGroup>,
    /// Phases discarded because of other load.
    pub repeats: u64,
    /// Time the run may still spend waiting for a quiet machine and repeating phases.
    pub noise_left: Duration,
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
    pub fn find(&self, key: &str, mode: Mode) -> Option<Agg> {
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
    pub fn phase(&mut self, round: usize, sc: &Scenario, mode: Mode, rate: f64, measure: Duration) {
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
        if let Some(log) = &sc.log {
            let _ = read_log(log, self.log_offsets.entry(log.clone()).or_default());
        }
        let cpu0: Vec<u64> = sc.cpu.iter().map(|g| proc_ticks(&g.all_pids())).collect();
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
            if let Some(log) = &sc.log {
                d.log = read_log(log, self.log_offsets.entry(log.clone()).or_default());
            }
            d
        });
        let cpu1: Vec<u64> = sc.cpu.iter().map(|g| proc_ticks(&g.all_pids())).collect();
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
        for g in &self.our_trees {
            pids.extend(g.all_pids());
        }
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

pub const SWEEP_KEYS: &[&str] = &["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"];

/// Other load (cores) below which the machine counts as quiet before a phase.
const QUIET: f64 = 0.05;
/// Other load (cores) above which a phase is repeated.
pub const MAX_FOREIGN: f64 = 0.10;
pub const MAX_RETRIES: usize = 2;

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
            // Pingora names a service's threads after the service: "Pingora HTTP Proxy
            // Service" before posthook had its own edge, "posthook proxy" since.
            let name = if name.starts_with("Pingora") || name.starts_with("posthook proxy") {
                "proxy (Pingora service)".to_string()
            } else if name.contains("webhook") {
                "webhook dispatcher".to_string()
            } else if name == "posthook-store" {
                "store writer".to_string()
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

pub struct DeadResult {
    pub rps: f64,
    pub errors: u64,
    /// (seconds since start, VmRSS KiB)
    pub rss: Vec<(f64, u64)>,
    pub hwm: u64,
    pub idle: u64,
    pub log: LogCounts,
    pub created: u64,
    pub held_conns: u64,
    pub measure: f64,
}

pub fn dead_sink_phase(
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
