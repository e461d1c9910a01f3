//! Subprocesses: the gateway binary (or any command) with its stdout and stderr lines read
//! through a channel, waits on log lines and on exit, signals, and `serve` with its bound
//! addresses. Every wait has a deadline; a process still running is killed on drop.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_etelecom-gateway");

/// Bound for a process to start or to exit after a signal (build artefacts are warm; this only
/// absorbs a loaded box).
pub const START: Duration = Duration::from_secs(30);

/// A running subprocess whose stdout and stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = spawn_piped(&mut cmd, Stdio::null());
        let (tx, lines) = mpsc::channel();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // Only the reader threads hold senders now: the channel disconnects when both pipes
        // close, i.e. when the process has exited.
        drop(tx);
        Proc {
            child,
            lines,
            log: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.join("\n")
    }

    /// Reads lines until one satisfies `pred` (returned), for at most `within`.
    pub fn wait_line(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no log line {what} within {within:?}; got:\n{}",
                        self.log_text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the process exited ({:?}) before a log line {what}; got:\n{}",
                    self.child.try_wait(),
                    self.log_text()
                ),
            }
        }
    }

    /// Reads lines until one contains `needle` (returned), for at most `within`.
    pub fn wait_for(&mut self, within: Duration, needle: &str) -> String {
        self.wait_line(within, &format!("{needle:?}"), |l| l.contains(needle))
    }

    /// Waits (at most `within` in all) until every needle has appeared in a line read so far or
    /// to come, whatever their order (stdout and stderr lines interleave freely); returns the
    /// line of each.
    pub fn wait_for_each(&mut self, within: Duration, needles: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + within;
        needles
            .iter()
            .map(|n| match self.log.iter().find(|l| l.contains(n)) {
                Some(l) => l.clone(),
                None => self.wait_for(deadline.saturating_duration_since(Instant::now()), n),
            })
            .collect()
    }

    /// Takes the lines already available, without waiting; returns how many there were.
    pub fn read_available(&mut self) -> usize {
        let mut n = 0;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.log.push(line);
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return n,
            }
        }
    }

    /// Sends `SIG<sig>` (e.g. `"TERM"`, `"HUP"`, `"INT"`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most `within`) for the process to exit, reading the rest of its output.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("still running after {within:?}; log:\n{}", self.log_text())
                }
            }
        }
        // Both pipes are closed: the process has exited (it starts no children).
        self.child.wait().unwrap()
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit, reading the rest of the output; returns
    /// the exit code.
    pub fn interrupt(&mut self) -> Option<i32> {
        self.signal("INT");
        self.wait_exit(START).code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etelecom-gateway serve` and the addresses it logged in its "gateway listening" line.
pub struct Gateway {
    pub proc: Proc,
    pub public: SocketAddr,
    /// The admin listener (the config must have an `[admin]` section).
    pub admin: SocketAddr,
}

impl Gateway {
    /// `serve --config <config>` at log level `info`.
    pub fn start(config: &Path) -> Gateway {
        Self::start_with(config, &[])
    }

    /// [`Gateway::start`] with extra environment variables (`RUST_LOG` among them overrides
    /// the level).
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("ETELECOM_GATEWAY_CONFIG")
            .envs(env.iter().copied());
        let mut proc = Proc::spawn(cmd);
        let line = proc.wait_for(START, "gateway listening");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |field: &str| -> SocketAddr {
            v[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {field} address in {line}"))
        };
        let (public, admin) = (addr("listen"), addr("admin"));
        Gateway {
            proc,
            public,
            admin,
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// `etelecom-gateway check --probe --config <config>` with extra environment variables, bounded
/// at 60 s: (exit code, stdout and stderr).
pub fn check_probe(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--probe", "--config"])
        .arg(config)
        .env_remove("ETELECOM_GATEWAY_CONFIG")
        .envs(env.iter().copied());
    let out = run_bounded(cmd, b"", Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs `cmd` to completion with `stdin` as its input, for at most `within`; killed when it
/// takes longer.
pub fn run_bounded(mut cmd: Command, stdin: &[u8], within: Duration) -> Output {
    let mut child = spawn_piped(&mut cmd, Stdio::piped());
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Writing from its own thread: a child that answers before reading all its input cannot
    // block us. The pipe closes when the thread is done.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {within:?}")
        }
    }
}

/// Spawns `cmd` with `stdin` and with stdout and stderr piped.
fn spawn_piped(cmd: &mut Command, stdin: Stdio) -> Child {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}
