//! The posthook binary as a child process, for the tests that need a real process: signals,
//! `kill -9`, the command-line interface.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::T;

pub const BIN: &str = env!("CARGO_BIN_EXE_posthook");

/// The posthook binary as a child process, with its log lines collected.
pub struct Proc {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    /// The config file it runs with.
    pub path: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub async fn start(config: &str, addr: std::net::SocketAddr) -> Proc {
        Proc::start_after(config, addr, "").await
    }

    /// Like [`Proc::start`], with the shell command `setup` run first in the process that
    /// becomes posthook (e.g. `ulimit -n 400`).
    pub async fn start_after(config: &str, addr: std::net::SocketAddr, setup: &str) -> Proc {
        let dir = std::env::temp_dir().join(format!(
            "posthook-life-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("posthook.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = if setup.is_empty() {
            let mut c = Command::new(BIN);
            c.args(["-c", path.to_str().unwrap()]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args([
                "-c",
                &format!("{setup} && exec \"$0\" -c \"$1\""),
                BIN,
                path.to_str().unwrap(),
            ]);
            c
        };
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + T;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "posthook did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Proc {
            child,
            addr,
            path,
            logs,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub async fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + T;
        while !self.logs.lock().unwrap().iter().any(|l| l.contains(what)) {
            assert!(
                Instant::now() < deadline,
                "no log line with {what:?}; logs:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn count_log(&self, what: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }

    /// Waits for the process to exit; returns how long that took from `since`.
    pub async fn wait_exit(&mut self, since: Instant, limit: Duration) -> Duration {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit status {status}; logs:\n{}",
                    self.logs.lock().unwrap().join("\n")
                );
                return since.elapsed();
            }
            assert!(
                since.elapsed() < limit,
                "still running after {limit:?}; logs:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The config's directory (tests that restart a process reuse the file before this).
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the binary with `args` to its end; returns its exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
