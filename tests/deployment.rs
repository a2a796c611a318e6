//! The deployment kit in `conf/`: the systemd unit passes `systemd-analyze verify` (where
//! systemd is installed) and keeps its hardening; every query of the Grafana dashboard and every
//! alert rule names metrics the binary exports (scraped from a running posthook), and the rules
//! pass `promtool check rules` where promtool is installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::binary::{Proc, BIN};
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn conf(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(path)
}

fn installed(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The unit's `Key=value` lines of its `[Service]` section.
fn service_keys(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut keys = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                keys.push((k.to_string(), v.to_string()));
            }
        }
    }
    keys
}

#[test]
fn the_systemd_unit_is_hardened_and_reloads_with_hup() {
    let unit = std::fs::read_to_string(conf("posthook.service")).unwrap();
    let keys = service_keys(&unit);
    let has = |k: &str, v: &str| keys.iter().any(|(kk, vv)| kk == k && vv == v);
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "posthook"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        (
            "ExecStartPre",
            "/usr/local/bin/posthook -c /etc/posthook/posthook.yaml -t",
        ),
        (
            "ExecStart",
            "/usr/local/bin/posthook -c /etc/posthook/posthook.yaml",
        ),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(has(k, v), "posthook.service lacks {k}={v}");
    }
    // The state directory is where the README and the unit's comment put the SQLite store.
    assert!(unit.contains("sqlite:/var/lib/posthook/posthook.db"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = installed("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: verify skipped");
        return;
    };
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let unit = std::fs::read_to_string(conf("posthook.service"))
        .unwrap()
        .replace("/usr/local/bin/posthook", BIN);
    let dir = std::env::temp_dir().join(format!("posthook-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("posthook.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown or misspelt key is only a warning (exit 0): any line naming the unit fails.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("posthook.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The metric names a running posthook exports (histograms with their series suffixes).
async fn exported_metrics() -> BTreeSet<String> {
    let mm = standin().await;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (text, listen) = loop {
        let (text, listen) = config_text(
            &mm.base_url(),
            &format!("metrics_listen: \"{metrics}\"\nhooks: []\n"),
        );
        if listen != metrics {
            break (text, listen);
        }
    };
    let _posthook = Proc::start(&text, listen).await;
    let deadline = std::time::Instant::now() + T;
    let mut tcp = loop {
        match tokio::net::TcpStream::connect(metrics).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "metrics: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_string());
            }
        }
    }
    assert!(names.len() > 20, "too few metrics scraped:\n{body}");
    names
}

/// Every `posthook_…` name in `expr`.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("posthook_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(conf("grafana/posthook.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_string();
        for target in panel["targets"].as_array().unwrap() {
            out.push((title.clone(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn rule_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(conf("prometheus/posthook-rules.yml")).unwrap();
    let rules: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            out.push((name, rule["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[tokio::test]
async fn dashboard_and_alert_rules_name_only_exported_metrics() {
    let exported = exported_metrics().await;
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    for (place, expr) in dashboard.iter().chain(&rules) {
        let names = names_in(expr);
        assert!(
            !names.is_empty(),
            "{place}: {expr} names no posthook metric"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "{place}: {n} is not exported by the binary ({exported:?})"
            );
        }
    }
    // The panels the issue lists, and the three alerts.
    let titles: BTreeSet<&str> = dashboard.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "Traffic",
        "Matches",
        "Deliveries by outcome",
        "Delivery latency",
        "Queue depth",
        "Replies",
        "Look-up cache hit ratio",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "no dashboard panel {want:?} in {titles:?}"
        );
    }
    let alerts: BTreeSet<&str> = rules.iter().map(|(a, _)| a.as_str()).collect();
    for want in [
        "PosthookDeliveriesFailing",
        "PosthookQueueNearCapacity",
        "PosthookLookupsFailing",
    ] {
        assert!(alerts.contains(want), "no alert {want} in {alerts:?}");
    }
    // The latency panel's quantiles come from the histogram's buckets.
    assert!(dashboard
        .iter()
        .any(|(t, e)| t.starts_with("Delivery latency")
            && e.contains("histogram_quantile(0.99")
            && e.contains("posthook_delivery_duration_seconds_bucket")));
}

#[test]
fn the_alert_rules_pass_promtool() {
    let Some(promtool) = installed("promtool") else {
        eprintln!("promtool is not installed: check skipped (the metric names are checked above)");
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(conf("prometheus/posthook-rules.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
