//! A throwaway PostgreSQL cluster: `initdb` in a temporary directory, the server on a unix
//! socket only (no TCP port), trust authentication, fsync off (on for benches); stopped and
//! removed on drop.
//! As root, the cluster runs as the `postgres` user (PostgreSQL refuses root).
//!
//! The binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`) or the
//! `PATH`; without them the test fails and says how to install them (`make test` does).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster; dropping it stops the server and removes its directory.
#[allow(dead_code)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    fsync: bool,
    server: Child,
    /// `postgres://posthook@/postgres?host=DIR&port=PORT`.
    pub url: String,
}

/// The value of `r`, or a panic saying what failed (support code never unwraps).
#[allow(dead_code)]
fn must<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// Whether PostgreSQL's server binaries are installed (benches skip what needs them).
#[allow(dead_code)]
pub fn postgres_installed() -> bool {
    find_bin_dir().is_some()
}

#[allow(dead_code)]
fn bin_dir() -> PathBuf {
    find_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no initdb): apt-get install postgresql, or run scripts/test-deps.sh (make test does)"
        )
    })
}

#[allow(dead_code)]
fn find_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    if let Some(dir) = found.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").exists())
}

/// `program` as the user the cluster runs as: `postgres` when this process is root.
#[allow(dead_code)]
fn command(program: &Path) -> Command {
    // SAFETY-free check of the effective user: /proc/self/status would do as well.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

#[allow(dead_code)]
impl PgCluster {
    /// A cluster with fsync off (the tests' data is thrown away).
    pub fn start() -> PgCluster {
        PgCluster::start_with(false)
    }

    /// A cluster that syncs its commits to disk as a production one does (benches).
    pub fn start_synced() -> PgCluster {
        PgCluster::start_with(true)
    }

    fn start_with(fsync: bool) -> PgCluster {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "posthook-pg-{}-{}",
            std::process::id(),
            super::random_id()
        ));
        must(
            std::fs::create_dir_all(&dir),
            "create the cluster's directory",
        );
        // The postgres user must own the directory when the cluster runs as it.
        must(
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)),
            "open the cluster's directory to its user",
        );
        let data = dir.join("data");
        let mut out = command(&bin.join("initdb"));
        out.current_dir(&dir)
            .args(["-D", &data.to_string_lossy()])
            .args(["-U", "posthook", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = must(out.output(), "run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = must(std::net::TcpListener::bind("127.0.0.1:0"), "bind a port");
            must(l.local_addr(), "read the port").port()
        };
        let server = serve(&bin, &dir, port, fsync);
        let url = format!(
            "postgres://posthook@localhost/postgres?host={}&port={port}",
            dir.display()
        );
        PgCluster {
            dir,
            bin,
            port,
            fsync,
            server,
            url,
        }
    }
}

#[allow(dead_code)]
impl PgCluster {
    /// Stops the server at once (its clients see their connections fail), keeping the data.
    pub fn stop(&mut self) {
        let _ = command(&self.bin.join("pg_ctl"))
            .current_dir(&self.dir)
            .args(["stop", "-s", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.server.wait();
    }

    /// The pid of the process that started the server (the server, or `runuser` above it);
    /// the server's backends are its descendants.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// Starts the stopped server again, on the same socket, with the same data.
    pub fn restart(&mut self) {
        self.server = serve(&self.bin, &self.dir, self.port, self.fsync);
    }
}

/// Starts `postgres` on the cluster in `dir`, listening on the unix socket for `port` only, and
/// waits until it accepts logins.
#[allow(dead_code)]
fn serve(bin: &Path, dir: &Path, port: u16, fsync: bool) -> Child {
    let data = dir.join("data");
    let mut server = command(&bin.join("postgres"));
    server
        .current_dir(dir)
        .args(["-D", &data.to_string_lossy()])
        .args(["-k", &dir.to_string_lossy()])
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses="])
        .args(["-c", if fsync { "fsync=on" } else { "fsync=off" }])
        .args(["-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = must(server.spawn(), "start postgres");
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The socket appears before the server accepts logins: wait for a real answer.
    let ready = bin.join("pg_isready");
    while !Command::new(&ready)
        .args(["-h", &dir.to_string_lossy(), "-p", &port.to_string()])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not accept logins"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate shutdown: a throwaway cluster needs no checkpoint.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
