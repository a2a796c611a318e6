//! End-to-end load test (issue #4): posthook between a load generator and a cheap Mattermost
//! stand-in, compared with the same traffic sent directly, through nginx and through a bare
//! Pingora proxy, all on 127.0.0.1, scenarios alternated in rounds (every other round in
//! reverse order) so that machine drift hits each alike. Every number printed comes from the
//! run that prints it; BENCHMARKS.md explains how to read them.
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
//!               ─ posthook C with store: sqlite (Cs), and with PostgreSQL (Cp, a throwaway
//!                 cluster with fsync on, when PostgreSQL is installed)
//!               ─ bare Pingora proxy (E): this binary re-executed with --serve-bare-proxy
//!               ─ nginx (D, split, chain), when /usr/sbin/nginx exists
//!               ─ posthook, 10 000 hooks aimed at a black hole (dead sink; last)
//!               ─ posthook Cs plus a hook on a closed port with retries (dead endpoint)
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
mod report;
mod retrying;
mod scenarios;
#[path = "../../tests/support/mod.rs"]
mod support;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use bare_proxy::serve_bare_proxy;
use clock::epoch;
use configs::{hooks_yaml, nginx_conf, posthook_yaml, NginxPorts};
use fixtures::HOOKS;
use loadgen::{get_workload, posts_workload, Workload};
use procfs::{children_of, proc_status_kib};
use procs::{
    free_port, install_signal_cleanup, loopback, newest_source_mtime, patched_bins, posthook_bin,
    Proc, Procs, TempDir,
};
use report::{print_report, ReportExtra};
use scenarios::{dead_sink_phase, CpuGroup, Mode, Runner, Scenario, SWEEP_KEYS};
use upstream::{serve, Serve, Upstream};

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
                "--dead-seconds" => o.dead_measure = s(num("--dead-seconds")),
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
  --dead-seconds S      how long the dead-sink and dead-endpoint phases run (default 20, --quick 4)
  --only K,K            run only these scenario keys (A B C Cs Cp D E B' E' C10k Cs10k Cp10k C1k Cs1k Cp1k Gdirect Gsplit Gposthook Gchain Psplit sweep dead retry)
  --no-nginx            skip the nginx scenarios
  --loadgen-threads N, --upstream-threads N, --nginx-workers N  (defaults 2, 2, 2)
  --proxy-threads N     `threads` of posthook and of the bare Pingora proxy (default 1)
  env POSTHOOK_BIN      the posthook binary (default: next to this bench, target/release/posthook)
  env POSTHOOK_BENCH_PG_QUERY   more parameters for Cp's store URL, e.g.
                        options=-c%20synchronous_commit%3Doff
  env POSTHOOK_OTHER_BIN   another posthook build (e.g. another allocator): adds scenarios
                        B~, C~ and Cs~ (B, C and Cs run by that build) to every round
  env POSTHOOK_PATCHED_BIN, BARE_PATCHED_BIN   posthook and this bench built against a patched
                        Pingora (benches/profile/patched-pingora.sh): adds scenarios B' and E'";

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
    // C again, with every delivery kept in an SQLite store (issue 12's ratio Cs/C).
    // POSTHOOK_BENCH_STORE: more `store` keys for Cs and Cp, e.g. "commit_interval_ms: 5".
    let store_extra: String = std::env::var("POSTHOOK_BENCH_STORE")
        .map(|s| s.lines().map(|l| format!("  {l}\n")).collect())
        .unwrap_or_default();
    let with_store = format!(
        "store:\n  url: \"sqlite:{}\"\n{store_extra}{hooks}",
        dir.join("posthook-Cs.db").display()
    );
    let (cs, cs_addr, _) = start_posthook(&bin, "posthook-Cs", &with_store);
    // And with a PostgreSQL store (issue 12's ratio Cp/C): a throwaway cluster on a unix socket,
    // syncing its commits as a production one does; skipped when PostgreSQL is not installed.
    let pg = (opts.wants("Cp") || opts.wants("Cp10k") || opts.wants("Cp1k"))
        .then(|| {
            if support::postgres_installed() {
                Some(support::PgCluster::start_synced())
            } else {
                eprintln!("PostgreSQL is not installed: scenario Cp skipped");
                None
            }
        })
        .flatten();
    let cp = pg.as_ref().map(|pg| {
        // POSTHOOK_BENCH_PG_QUERY: more URL parameters, e.g.
        // "options=-c%20synchronous_commit%3Doff" (the session settings an admin may choose).
        let url = match std::env::var("POSTHOOK_BENCH_PG_QUERY") {
            Ok(q) => format!("{}&{q}", pg.url),
            Err(_) => pg.url.clone(),
        };
        let with_pg = format!("store:\n  url: \"{url}\"\n{store_extra}{hooks}");
        start_posthook(&bin, "posthook-Cp", &with_pg)
    });
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
    // Another build of posthook beside this one (POSTHOOK_OTHER_BIN): B~, C~ and Cs~.
    let other = std::env::var_os("POSTHOOK_OTHER_BIN").map(|path| {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{} is not a file", path.display());
        let with_store = format!(
            "store:\n  url: \"sqlite:{}\"\n{store_extra}{hooks}",
            dir.join("posthook-Cs-other.db").display()
        );
        let started = [
            start_posthook(&path, "posthook-B-other", ""),
            start_posthook(&path, "posthook-C-other", &hooks),
            start_posthook(&path, "posthook-Cs-other", &with_store),
        ];
        eprintln!("other build: {}", path.display());
        started
    });
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
    let idle_rss = procs.memory_kib("VmRSS:");
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
        tree: false,
    };
    // PostgreSQL's server and backends, charged to Cp beside posthook.
    let pg_group = pg.as_ref().map(|pg| CpuGroup {
        name: "postgres",
        pids: vec![pg.server_pid()],
        tree: true,
    });
    let ngx = procs.nginx.as_ref().map(|n| CpuGroup {
        name: "nginx",
        pids: std::iter::once(n.pid())
            .chain(n.extra.iter().copied())
            .collect(),
        tree: false,
    });
    let sc = |key, addr, workload: &Workload, cpu: Vec<CpuGroup>, fires: Option<&Proc>| Scenario {
        key,
        group: key,
        addr,
        workload: workload.clone(),
        log: fires.map(|p| p.log.clone()),
        split_pid: cpu
            .iter()
            .find(|g: &&CpuGroup| g.name == "posthook")
            .and_then(|g| g.pids.first().copied()),
        cpu,
        fires: fires.is_some(),
    };
    let bare = CpuGroup {
        name: "bare",
        pids: vec![procs.e.pid()],
        tree: false,
    };
    let mut main_scenarios = vec![
        sc("A", upstream, &posts, vec![], None),
        sc("B", b_addr, &posts, vec![ph(&procs.b)], None),
        sc("C", c_addr, &posts, vec![ph(&procs.c)], Some(&procs.c)),
        sc("Cs", cs_addr, &posts, vec![ph(&cs)], Some(&cs)),
    ];
    if let Some((cp, cp_addr, _)) = &cp {
        let cpu: Vec<CpuGroup> = vec![ph(cp)].into_iter().chain(pg_group.clone()).collect();
        main_scenarios.push(sc("Cp", *cp_addr, &posts, cpu, Some(cp)));
    }
    if let Some(n) = &ngx {
        main_scenarios.push(sc("D", nginx_ports.direct, &posts, vec![n.clone()], None));
    }
    main_scenarios.push(sc("E", e_addr, &posts, vec![bare], None));
    if let Some((bp, bp_addr, ep, ep_addr)) = &procs.patched {
        main_scenarios.push(sc("B'", *bp_addr, &posts, vec![ph(bp)], None));
        let bare = CpuGroup {
            name: "bare",
            pids: vec![ep.pid()],
            tree: false,
        };
        main_scenarios.push(sc("E'", *ep_addr, &posts, vec![bare], None));
    }
    if let Some([(bo, bo_addr, _), (co, co_addr, _), (cso, cso_addr, _)]) = &other {
        main_scenarios.push(sc("B~", *bo_addr, &posts, vec![ph(bo)], None));
        main_scenarios.push(sc("C~", *co_addr, &posts, vec![ph(co)], Some(co)));
        main_scenarios.push(sc("Cs~", *cso_addr, &posts, vec![ph(cso)], Some(cso)));
    }
    let c10k = sc("C10k", c_addr, &posts, vec![ph(&procs.c)], Some(&procs.c));
    // 1 000 posts/s, every one matching: 1 000 deliveries/s on a machine that is not saturated
    // by the proxying itself (at 10 000 posts/s it is, even for C).
    let all_match = posts_workload(10_000, true);
    let mut at1k = vec![sc(
        "C1k",
        c_addr,
        &all_match,
        vec![ph(&procs.c)],
        Some(&procs.c),
    )];
    at1k.push(sc("Cs1k", cs_addr, &all_match, vec![ph(&cs)], Some(&cs)));
    // The same 1 000 matching posts/s through the stores (the delivery p99 target with SQLite).
    let mut stores10k = vec![sc("Cs10k", cs_addr, &posts, vec![ph(&cs)], Some(&cs))];
    if let Some((cp, cp_addr, _)) = &cp {
        let cpu: Vec<CpuGroup> = vec![ph(cp)].into_iter().chain(pg_group.clone()).collect();
        stores10k.push(sc("Cp10k", *cp_addr, &posts, cpu.clone(), Some(cp)));
        at1k.push(sc("Cp1k", *cp_addr, &all_match, cpu, Some(cp)));
    }
    let mut split = vec![
        sc("Gdirect", upstream, &gets, vec![], None),
        sc("Gposthook", c_addr, &gets, vec![ph(&procs.c)], None),
    ];
    if let Some(n) = &ngx {
        let both = vec![n.clone(), ph(&procs.c)];
        split.push(sc(
            "Gsplit",
            nginx_ports.split,
            &gets,
            vec![n.clone()],
            None,
        ));
        split.push(sc("Gchain", nginx_ports.chain, &gets, both.clone(), None));
        split.push(sc(
            "Psplit",
            nginx_ports.split,
            &posts,
            both,
            Some(&procs.c),
        ));
    }
    let mut our_pids = vec![procs.b.pid(), procs.c.pid(), cs.pid(), procs.e.pid()];
    if let Some((cp, _, _)) = &cp {
        our_pids.push(cp.pid());
    }
    if let Some((bp, _, ep, _)) = &procs.patched {
        our_pids.extend([bp.pid(), ep.pid()]);
    }
    for (p, _, _) in other.iter().flatten() {
        our_pids.push(p.pid());
    }
    if let Some(n) = &ngx {
        our_pids.extend(&n.pids);
    }

    let mut r = Runner {
        rt,
        up: up.clone(),
        log_offsets: BTreeMap::new(),
        aggs: Vec::new(),
        per_round: (0..opts.rounds).map(|_| BTreeMap::new()).collect(),
        our_pids,
        our_trees: pg_group.into_iter().collect(),
        repeats: 0,
        noise_left: opts.noise_budget,
        opts: opts.clone(),
    };
    for round in 0..opts.rounds {
        // Every other round runs them in reverse order, so that the machine's drift within a
        // round favours neither side of a ratio.
        let order: Vec<&Scenario> = if round % 2 == 0 {
            main_scenarios.iter().collect()
        } else {
            main_scenarios.iter().rev().collect()
        };
        for s in &order {
            r.phase(round, s, Mode::Closed, 0.0, opts.closed_measure);
        }
        for s in &order {
            r.phase(round, s, Mode::Open, opts.open_rate, opts.open_measure);
        }
        r.phase(round, &c10k, Mode::Open, opts.c10k_rate, opts.c10k_measure);
        for s in &stores10k {
            r.phase(round, s, Mode::Open, opts.c10k_rate, opts.c10k_measure);
        }
        for s in &at1k {
            r.phase(round, s, Mode::Open, 1_000.0, opts.c10k_measure);
        }
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

    let hwm = procs.memory_kib("VmHWM:");
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
    // Dead endpoint with retries: a fresh posthook with an SQLite store.
    let retry = opts.wants("retry").then(|| {
        let dead = loopback(free_port());
        retrying::dead_endpoint_phase(
            &opts,
            &r.rt,
            &up,
            &|name: &str, hooks: &str| start_posthook(&bin, name, hooks),
            sink,
            dead,
            &dir,
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
            retry,
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
