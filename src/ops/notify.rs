//! The systemd notification protocol (`sd_notify`), for `Type=notify` services: `READY=1` once the
//! daemon can work, `STATUS=…` lines with live progress, `WATCHDOG=1` pings and `STOPPING=1`.
//!
//! The protocol is one datagram per message to the Unix socket named by `$NOTIFY_SOCKET`: an absolute
//! path, or an abstract socket written with a leading `@`. When the variable is unset (not under
//! systemd, tests, the demo) every call does nothing. It is a dozen lines over
//! `std::os::unix::net::UnixDatagram`, so no crate: libsystemd would bring a C dependency, and the
//! Rust wrappers add nothing for four messages.
//!
//! Sends never fail the daemon: a notification that cannot be delivered is logged once and forgotten
//! (systemd then notices by itself, through its start timeout or watchdog).
//!
//! The watchdog: when `$WATCHDOG_USEC` is set (and `$WATCHDOG_PID`, if set, is this process), a task
//! pings at half that interval, but only while [`Liveness`] shows that the dispatcher's main loop
//! turned within the watchdog period. A loop stuck (say on a database call that never returns) stops
//! the pings, and systemd restarts the service, which is safe: leases make the daemon crash-safe.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where notifications go; cheap to clone. [`Notifier::disabled`] when not under systemd.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
    watchdog: Option<Duration>,
}

struct Inner {
    socket: UnixDatagram,
    target: Target,
    /// A failed send is logged once, not at every heartbeat.
    warned: AtomicBool,
}

enum Target {
    Path(std::path::PathBuf),
    Abstract(std::os::unix::net::SocketAddr),
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.inner.is_some())
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. Unset or unusable: disabled (an
    /// unusable value is logged).
    pub fn from_env() -> Self {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Self::disabled();
        };
        let mut notifier = match Self::connect(&socket) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; no systemd notifications");
                return Self::disabled();
            }
        };
        notifier.watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        notifier
    }

    /// A notifier sending to `socket` (a path, or `@name` for an abstract socket).
    pub fn connect(socket: &std::ffi::OsStr) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = socket.as_bytes();
        let target = match bytes.first() {
            Some(b'/') => Target::Path(socket.into()),
            Some(b'@') => {
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    Target::Abstract(std::os::unix::net::SocketAddr::from_abstract_name(
                        &bytes[1..],
                    )?)
                }
                #[cfg(not(target_os = "linux"))]
                {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "abstract sockets exist only on Linux",
                    ));
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{:?}: expected an absolute path or @name (vsock is not supported)",
                        socket
                    ),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A datagram to a local socket does not wait in practice; the bound keeps a wedged receiver
        // from stalling a runtime thread.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Notifier {
            inner: Some(Arc::new(Inner {
                socket,
                target,
                warned: AtomicBool::new(false),
            })),
            watchdog: None,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// How often to ping the watchdog (half of `$WATCHDOG_USEC`), when systemd asked for pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.is_enabled())
    }

    /// Sends one message (newline-separated `KEY=VALUE` assignments). Does nothing when disabled.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let result = match &inner.target {
            Target::Path(path) => inner.socket.send_to(message.as_bytes(), path),
            Target::Abstract(addr) => inner.socket.send_to_addr(message.as_bytes(), addr),
        };
        result.map(drop).inspect_err(|e| {
            if !inner.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
            }
        })
    }

    /// `READY=1`: startup checks passed, the service is up.
    pub fn ready(&self, status: &str) {
        let _ = self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…`: a free-form line shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        let _ = self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: the shutdown began (draining).
    pub fn stopping(&self, status: &str) {
        let _ = self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        let _ = self.send("WATCHDOG=1");
    }

    /// Pings the watchdog at [`Notifier::watchdog_interval`] while `liveness` allows. Returns `None`
    /// when systemd asked for no watchdog. Abort the handle to stop.
    pub fn spawn_watchdog(&self, liveness: Arc<Liveness>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog_interval()?;
        // systemd gives up after the full period (twice the ping interval) without a ping.
        let period = every * 2;
        let notifier = self.clone();
        Some(tokio::spawn(async move {
            let mut stalled_logged = false;
            loop {
                if liveness.alive_within(period) {
                    notifier.watchdog();
                    stalled_logged = false;
                } else if !stalled_logged {
                    tracing::error!(
                        period_secs = period.as_secs_f64(),
                        "the dispatcher's main loop has not turned within the watchdog period; withholding watchdog pings so that systemd restarts the service"
                    );
                    stalled_logged = true;
                }
                tokio::time::sleep(every).await;
            }
        }))
    }
}

/// Half of `WATCHDOG_USEC`, when it is a positive number and `WATCHDOG_PID` (if set) is `pid`.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// A status is one line: systemd shows only the first.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// When the dispatcher's main loop last turned, for the watchdog. Before the loop starts (startup
/// checks) and once it has ended (the drain, bounded by `drain_secs`) it counts as alive: those phases
/// have their own time limits (`TimeoutStartSec`, `TimeoutStopSec`).
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    /// Milliseconds since `start` of the last turn, or [`Liveness::UNWATCHED`].
    last: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            start: Instant::now(),
            last: AtomicU64::new(Self::UNWATCHED),
        }
    }
}

impl Liveness {
    const UNWATCHED: u64 = u64::MAX;

    /// The main loop turned.
    pub fn beat(&self) {
        let ms = self
            .start
            .elapsed()
            .as_millis()
            .min(u128::from(u64::MAX - 1)) as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// The main loop ended (or has not begun): stop judging it.
    pub fn unwatch(&self) {
        self.last.store(Self::UNWATCHED, Ordering::Relaxed);
    }

    /// True when unwatched, or when the last turn is at most `period` ago.
    pub fn alive_within(&self, period: Duration) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last == Self::UNWATCHED {
            return true;
        }
        let now = self.start.elapsed().as_millis() as u64;
        now.saturating_sub(last) <= period.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_and_respects_the_pid() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.as_os_str()).unwrap();
        n.ready("up\nand running");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up and running");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("breach-notifier-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        n.watchdog();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_disabled_notifier_does_nothing_and_a_relative_socket_is_refused() {
        let n = Notifier::disabled();
        assert!(n.send("READY=1").is_ok());
        assert!(n.watchdog_interval().is_none());
        assert!(Notifier::connect(std::ffi::OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn liveness() {
        let l = Liveness::default();
        assert!(l.alive_within(Duration::ZERO), "unwatched counts as alive");
        l.beat();
        assert!(l.alive_within(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!l.alive_within(Duration::from_millis(5)));
        l.unwatch();
        assert!(l.alive_within(Duration::ZERO));
    }
}
