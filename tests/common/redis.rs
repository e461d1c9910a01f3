//! A real `redis-server` (Debian's `redis-server` package) for the fleet tests: started on a
//! free loopback port with nothing persisted, stopped (SIGKILL), frozen (SIGSTOP) and started
//! again on the same port by its PID, and read back whole (every key and value) for the
//! no-secrets check. Missing binary: the test prints SKIPPED, or fails when `CI` is set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started server gets to answer PING.
const READY: Duration = Duration::from_secs(15);

pub struct RedisServer {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server (with `requirepass` when `password` is given); `None` = skipped.
    pub fn start(test: &str, password: Option<&str>) -> Option<RedisServer> {
        let bin = super::external_tool("redis-server", "redis-server", test)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut server = RedisServer {
            bin,
            child: None,
            port,
            password: password.map(str::to_owned),
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + READY;
        while self.try_ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} not ready within {READY:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        self.url_with(self.password.as_deref())
    }

    /// The URL with another password (or none).
    pub fn url_with(&self, password: Option<&str>) -> String {
        match password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kills the server (SIGKILL by PID) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `kill -<sig> <pid>` (`STOP` freezes the server: calls hang; `CONT` resumes it).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn try_ping(&self) -> redis::RedisResult<String> {
        let mut c = self.connection()?;
        redis::cmd("PING").query(&mut c)
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Every key (by SCAN) with its TTL in ms (`-1` = none) and its serialized value (`DUMP`).
    pub fn dump_all(&self) -> Vec<(String, i64, Vec<u8>)> {
        let mut c = self.connection().unwrap();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).query(&mut c).unwrap();
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
                let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap_or_default();
                (k, ttl, dump)
            })
            .collect()
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.dump_all().into_iter().map(|(k, _, _)| k).collect();
        k.sort();
        k
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (SIGSTOP) server too.
        self.stop();
    }
}
