//! Aggregation of the kept phases (percentiles, medians, CPU per request) and the markdown
//! report. Only the report goes to stdout (progress lines go to stderr), so that
//! `cargo bench --bench load > report.md` keeps just the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::deliveries::Deliveries;
use crate::fixtures::MATCH_EVERY;
use crate::procfs::clock_ticks;
use crate::retrying::RetryResult;
use crate::scenarios::{DeadResult, Mode, Runner, MAX_FOREIGN, MAX_RETRIES, SWEEP_KEYS};
use crate::Opts;

#[derive(Default)]
pub struct Agg {
    pub rates: Vec<f64>,
    pub lat: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    pub requests: u64,
    pub cpu_ticks: Vec<u64>,
    pub upstream_ticks: u64,
    pub loadgen_ticks: u64,
    pub pacer_lag: Vec<u64>,
    pub deliveries: Option<Deliveries>,
    /// Names of the CPU groups, as charged.
    pub cpu_names: Vec<&'static str>,
    /// Other load on the machine during each kept phase (cores).
    pub foreign: Vec<f64>,
    /// posthook's CPU ticks by thread.
    pub threads: BTreeMap<String, u64>,
    /// Phases merged into this result / phases run.
    pub phases_used: usize,
    pub phases_total: usize,
    /// Deliveries of every phase, quiet or not (the correctness check).
    pub all_deliveries: Option<Deliveries>,
}

impl Agg {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn absorb(&mut self, o: &Agg) {
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

pub fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn us(ns: u64) -> String {
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

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub fn sorted(v: &[u64]) -> Vec<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

pub struct ReportExtra {
    pub idle_rss: Vec<(String, u64)>,
    pub hwm: Vec<(String, u64)>,
    pub nginx_hwm: Vec<u64>,
    pub starts: Vec<(&'static str, Duration)>,
    pub dead: Option<DeadResult>,
    pub retry: Option<RetryResult>,
    pub lookups: u64,
    pub sink_unreadable: u64,
    pub upstream_bad: u64,
    pub total: Duration,
    pub bin: PathBuf,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

pub fn print_report(r: &Runner, o: &Opts, x: ReportExtra) {
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
    // Closed-loop rows, for the main scenarios' table and the split deployment's.
    let closed_rows = |rows: &[(&str, &str)]| -> String {
        let mut out = String::new();
        for (key, what) in rows {
            if let Some(a) = &r.find(key, Mode::Closed) {
                let (lo, hi) = min_max(&a.rates);
                let _ = writeln!(
                    out,
                    "| {key} | {what} | {:.0} [{lo:.0}–{hi:.0}] | {} | {} | {} | {} |",
                    median(&a.rates),
                    lat_cells(a),
                    errors_cell(a),
                    cpu_cell(a),
                    bench_cell(a)
                );
            }
        }
        out
    };
    let scenario_rows: &[(&str, &str)] = &[
        ("A", "direct to the upstream"),
        ("B", "posthook, no hooks"),
        (
            "C",
            "posthook, 10 000 hooks, 10% of posts match (deliveries + replies on)",
        ),
        ("Cs", "C with store: sqlite (every delivery written first)"),
        ("Cp", "C with store: PostgreSQL (a local cluster, fsync on)"),
        ("D", "nginx proxy_pass, keep-alive"),
        ("E", "bare Pingora proxy (framework floor)"),
        ("B~", "B run by POSTHOOK_OTHER_BIN"),
        ("C~", "C run by POSTHOOK_OTHER_BIN"),
        ("Cs~", "Cs run by POSTHOOK_OTHER_BIN"),
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
    w.push_str(&closed_rows(scenario_rows));

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
        ("Cs", "C", Some(0.95)),
        ("Cp", "C", Some(0.90)),
        ("B~", "B", None),
        ("C~", "C", None),
        ("Cs~", "Cs", None),
        ("Cs~", "C~", None),
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
        ("Cs", Mode::Open, "Cs open loop"),
        ("Cp", Mode::Open, "Cp open loop"),
        ("C~", Mode::Open, "C~ open loop"),
        ("Cs~", Mode::Open, "Cs~ open loop"),
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
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            per(get("proxy (Pingora service)")),
            per(get("webhook dispatcher")),
            per(get("store writer")),
            per(get("other threads")),
            per(a.threads.values().sum())
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(w, "\n### posthook's CPU by thread (µs per request)\n\nThe proxy runs on Pingora's service thread (`threads: 1`); look-ups, webhook calls and replies on the dispatcher's own runtime thread. In C one post in ten matches, so the dispatcher's cost per matching post is ten times its per-request figure.\n\n| phase | proxy thread | dispatcher thread | SQLite writer thread | other threads | total |\n|---|---:|---:|---:|---:|---:|\n{rows}");
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
    let _ = writeln!(
        w,
        "\n## Webhook deliveries and replies (posthook C, Cs, Cp)\n"
    );
    let _ = writeln!(w, "Delivery latency: the upstream wrote the 201 → the sink has read the webhook request. Reply latency: the sink wrote its answer → the upstream has read posthook's reply post. Every matching post must reach the sink exactly once and produce one reply; \"missing\" is expected − delivered after draining. Log counts are posthook's own outcome lines.\n");
    let _ = writeln!(w, "| phase | posts/s | matching posts | delivered | missing | duplicates | replies | delivery p50 / p90 / p99 / max µs | reply p50 / p99 µs | posthook log: delivered / failed / queue drops / replies posted / reply failed | drain |\n|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|");
    let mut c10k_p99 = None;
    let mut cs10k_p99 = None;
    let mut cs1k_p99 = None;
    for (key, mode, name) in [
        ("C", Mode::Closed, "C closed loop (max rate)"),
        ("C", Mode::Open, "C open loop"),
        ("C10k", Mode::Open, "C open loop, 1 000 matching posts/s"),
        ("Cs", Mode::Closed, "Cs (SQLite) closed loop (max rate)"),
        ("Cs", Mode::Open, "Cs (SQLite) open loop"),
        (
            "Cs10k",
            Mode::Open,
            "Cs (SQLite) open loop, 1 000 matching posts/s",
        ),
        ("Cp", Mode::Closed, "Cp (PostgreSQL) closed loop (max rate)"),
        ("Cp", Mode::Open, "Cp (PostgreSQL) open loop"),
        (
            "Cp10k",
            Mode::Open,
            "Cp (PostgreSQL) open loop, 1 000 matching posts/s",
        ),
        (
            "C1k",
            Mode::Open,
            "C open loop, 1 000 posts/s, every one matching",
        ),
        (
            "Cs1k",
            Mode::Open,
            "Cs (SQLite) open loop, 1 000 posts/s, every one matching",
        ),
        (
            "Cp1k",
            Mode::Open,
            "Cp (PostgreSQL) open loop, 1 000 posts/s, every one matching",
        ),
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
        let summary = Some((
            pct(&dl, 0.99),
            median(&a.rates),
            all.missing() + all.duplicates + all.unknown,
            a.error_count(),
        ));
        match key {
            "C10k" => c10k_p99 = summary,
            "Cs10k" => cs10k_p99 = summary,
            "Cs1k" => cs1k_p99 = summary,
            _ => {}
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
        w.push_str(&closed_rows(split_rows));
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

    // The healthy deliveries' p99 next to the dead endpoint, beside Cs's open loop.
    let cs_open_p99 = r.find("Cs", Mode::Open).and_then(|a| {
        a.deliveries
            .as_ref()
            .map(|d| pct(&sorted(&d.delivery_lat), 0.99))
    });
    if let Some(x) = &x.retry {
        let d = &x.deliveries;
        let dl = sorted(&d.delivery_lat);
        let _ = writeln!(w, "\n### Dead endpoint with retries (store: sqlite)\n");
        let _ = writeln!(w, "A fresh posthook with C's 10 000 hooks and an SQLite store, plus one pattern hook that fires on every matching post and is aimed at a closed port with `retry: {{attempts: 5, initial_seconds: 1, max_seconds: 4}}`. Open loop at {:.0} posts/s ({:.0} achieved) for {:.0} s, {} client errors; request p50 / p99 {} / {} µs; posthook CPU {:.3} s per 1 000 requests.\n", x.rate, x.achieved, x.measure, x.errors, us(pct(&x.request_lat, 0.5)), us(pct(&x.request_lat, 0.99)), x.cpu_per_1000);
        let _ = writeln!(w, "Healthy deliveries: {} of {} matching posts delivered, {} duplicates, {} replies; delivery p50 / p90 / p99 / max {} / {} / {} / {} µs (Cs open loop in this run: p99 {} µs). Dead endpoint: {} attempts scheduled again, {} deliveries failed after their last attempt.\n", d.delivered, d.expected, d.duplicates, d.replied, us(pct(&dl, 0.5)), us(pct(&dl, 0.9)), us(pct(&dl, 0.99)), us(pct(&dl, 1.0)), cs_open_p99.map_or("–".into(), us), d.log.retries, d.log.delivery_failed);
        let _ = writeln!(w, "| t (s) | VmRSS (MiB) |\n|---:|---:|");
        let step = (x.rss.len() / 12).max(1);
        for (t, k) in x.rss.iter().step_by(step) {
            let _ = writeln!(w, "| {t:.1} | {} |", mib(*k));
        }
        if let Some((t, k)) = x.rss.last() {
            let _ = writeln!(w, "| {t:.1} | {} |", mib(*k));
        }
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
    for (summary, what) in [
        (cs1k_p99, "every post matching"),
        (cs10k_p99, "10 % matching"),
    ] {
        let Some((p99, rate, missing, errors)) = summary else {
            continue;
        };
        let ok = p99 <= 20_000_000 && missing == 0 && errors == 0;
        let _ = writeln!(w, "| delivery p99 ≤ 20 ms at 1 000 matching posts/s with store: sqlite (open loop, {rate:.0} posts/s, {what}) | {} ms, {missing} missing, {errors} errors | {} |", us(p99).parse::<f64>().map_or("?".into(), |v| format!("{:.2}", v / 1000.0)), met(ok));
    }
    for (num, t) in [("Cs", 0.95), ("Cp", 0.90)] {
        if let Some((m, _, _)) = ratio(num, "C") {
            let _ = writeln!(
                w,
                "| {num}/C ≥ {t:.2} (the same load, deliveries kept in the store) | {m:.3} | {} |",
                met(m >= t)
            );
        }
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
    if let Some(x) = &x.retry {
        let tail: Vec<u64> = x
            .rss
            .iter()
            .filter(|(t, _)| *t >= x.measure * 0.75)
            .map(|(_, k)| *k)
            .collect();
        let (first, last) = (
            tail.first().copied().unwrap_or(0),
            tail.last().copied().unwrap_or(0),
        );
        let ok = last.saturating_sub(first) <= 2 * 1024 && x.deliveries.log.retries > 0;
        let _ = writeln!(w, "| RSS flat with a dead endpoint retried (last quarter) | {} → {} MiB, peak {} MiB; {} retries | {} |", mib(first), mib(last), mib(x.hwm), x.deliveries.log.retries, met(ok));
        let d = &x.deliveries;
        let p99 = pct(&sorted(&d.delivery_lat), 0.99);
        if let Some(base) = cs_open_p99 {
            let ok = (p99 as f64) <= (base as f64) * 1.5 && d.missing() == 0 && d.duplicates == 0;
            let _ = writeln!(w, "| healthy deliveries keep their p99 beside a dead endpoint (≤ 1.5 × Cs's open loop, none missing) | {} µs vs {} µs, {} missing | {} |", us(p99), us(base), d.missing(), met(ok));
        }
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
    let keys: Vec<&str> = [
        "A", "B", "C", "Cs", "Cp", "D", "E", "B'", "E'", "B~", "C~", "Cs~",
    ]
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
