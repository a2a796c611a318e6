//! The bench's child processes (posthook, nginx, the bare proxy): finding the binaries, starting
//! them with their output in the run's scratch directory, waiting until they listen, and
//! stopping them however the run ends (on drop, also when a phase panics, and from a signal
//! thread on SIGINT or SIGTERM), so that no proxy outlives the bench and keeps its port and CPU.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::procfs::{proc_alive, proc_status_kib};

/// Pids of running children, for the signal thread: (pid, stop with SIGTERM first).
static LIVE: Mutex<Vec<(u32, bool)>> = Mutex::new(Vec::new());

fn send_signal(pid: u32, sig: &str) {
    // std has no kill(2); the `kill` utility avoids a libc dependency for this one call.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child process that is stopped when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// nginx: SIGTERM lets the master stop its workers.
    gentle: bool,
    pub log: PathBuf,
    /// Extra pids to kill after the child (nginx workers).
    pub extra: Vec<u32>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, gentle: bool, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        LIVE.lock().unwrap().push((child.id(), gentle));
        Proc {
            name: name.to_string(),
            child: Some(child),
            gentle,
            log,
            extra: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the child accepts connections on `addr`; returns how long that took.
    pub fn wait_listening(&mut self, addr: SocketAddr, started: Instant) -> Duration {
        let deadline = started + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return started.elapsed();
            }
            if !self.alive() {
                panic!("{} exited during start-up:\n{}", self.name, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {addr}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if self.gentle {
            send_signal(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        for pid in &self.extra {
            if proc_alive(*pid) {
                send_signal(*pid, "KILL");
            }
        }
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|(p, _)| *p != pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// On SIGINT or SIGTERM: stop every child, then exit.
pub fn install_signal_cleanup() {
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("signal runtime");
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            let live = std::mem::take(&mut *LIVE.lock().unwrap());
            for (pid, gentle) in live {
                send_signal(pid, if gentle { "TERM" } else { "KILL" });
            }
            eprintln!("load: interrupted; children stopped");
            std::process::exit(130);
        })
        .expect("signal thread");
}

/// A scratch directory for configs and logs, removed at the end (kept after a panic).
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The posthook binary: $POSTHOOK_BIN, Cargo's CARGO_BIN_EXE_posthook, or the `posthook` next
/// to this bench's `deps/` directory (where `cargo bench` and `cargo build --release` put it).
pub fn posthook_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("POSTHOOK_BIN") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_posthook") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("posthook"));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/posthook"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/posthook"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("posthook binary not found: run `cargo build --release` or set POSTHOOK_BIN")
        })
}

pub fn newest_source_mtime() -> Option<SystemTime> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

pub struct Procs {
    pub b: Proc,
    pub c: Proc,
    pub e: Proc,
    pub nginx: Option<Proc>,
    /// posthook without hooks (B') and the bare proxy (E') built against a patched Pingora.
    pub patched: Option<(Proc, SocketAddr, Proc, SocketAddr)>,
}

impl Procs {
    /// One `Vm…:` line (KiB) of posthook B, posthook C and the bare proxy, named as the memory
    /// table names them; read after start-up and again after the rounds.
    pub fn memory_kib(&self, key: &str) -> Vec<(String, u64)> {
        vec![
            ("posthook B".into(), proc_status_kib(self.b.pid(), key)),
            ("posthook C".into(), proc_status_kib(self.c.pid(), key)),
            ("bare Pingora".into(), proc_status_kib(self.e.pid(), key)),
        ]
    }
}

/// `POSTHOOK_PATCHED_BIN` and `BARE_PATCHED_BIN`: posthook and this bench built against a
/// patched Pingora (`benches/profile/patched-pingora.sh` builds both and prints the command).
/// With both set, scenarios B' and E' run those binaries next to B and E in the same rounds.
pub fn patched_bins() -> Option<(PathBuf, PathBuf)> {
    let posthook = PathBuf::from(std::env::var_os("POSTHOOK_PATCHED_BIN")?);
    let bare = PathBuf::from(std::env::var_os("BARE_PATCHED_BIN")?);
    for p in [&posthook, &bare] {
        assert!(p.is_file(), "{} is not a file", p.display());
    }
    Some((posthook, bare))
}
