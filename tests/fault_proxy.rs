//! A fault-injecting TCP proxy for the sync tests and the sync benchmark.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every connection to a
//! target (which can be changed while running, [`FaultProxy::set_target`]). The test
//! switches faults at any time with [`FaultProxy::set_fault`]; a fault applies to new
//! connections and, chunk by chunk, to the connections already open:
//!
//! | [`Fault`] | new connections | open connections |
//! | --- | --- | --- |
//! | `None` | forwarded | forwarded |
//! | `Drop` | accepted and closed at once | untouched (see [`FaultProxy::reset_all`]) |
//! | `Delay(d)` | forwarded, each chunk `d` late | each chunk `d` late |
//! | `Truncate(n)` | the server's bytes stop after `n`, then both sides are closed (FIN) | the same, counting from when the fault was seen |
//! | `Reset(n)` | after `n` bytes either way, both sides are reset (RST) | the same |
//! | `Blackhole` | accepted, never connected, never answered | bytes swallowed both ways |
//!
//! [`FaultProxy::reset_all`] resets every open connection (a client's keep-alive pool
//! otherwise keeps using connections made before a fault). [`FaultProxy::stats`]
//! counts connections, bytes each way (the wire-cost measurement: bytes client to
//! server) and how often each fault struck, so a test can wait until a fault has
//! really been exercised before moving on.
//!
//! The proxy runs on its own small tokio runtime (tokio's `TcpStream::set_zero_linger` is
//! what makes a real RST; std has no stable way), dropped with the proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic (see the module doc for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close new connections right after accepting them.
    Drop,
    /// Hold each chunk this long before forwarding it.
    Delay(Duration),
    /// Forward at most this many bytes from the server, then close both sides.
    Truncate(u64),
    /// Forward at most this many bytes (both directions together), then reset both.
    Reset(u64),
    /// Accept and never answer: swallow every byte.
    Blackhole,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes forwarded client -> server.
    pub bytes_up: u64,
    /// Bytes forwarded server -> client.
    pub bytes_down: u64,
    /// New connections closed by [`Fault::Drop`].
    pub dropped: u64,
    /// Chunks held back by [`Fault::Delay`].
    pub delayed: u64,
    /// Connections cut by [`Fault::Truncate`].
    pub truncated: u64,
    /// Connections reset by [`Fault::Reset`] or [`FaultProxy::reset_all`].
    pub reset: u64,
    /// Connections that met [`Fault::Blackhole`].
    pub blackholed: u64,
    /// Connections the target refused (or did not accept in time).
    pub connect_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
    truncated: AtomicU64,
    reset: AtomicU64,
    blackholed: AtomicU64,
    connect_failed: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    target: Mutex<SocketAddr>,
    /// Bumped by [`FaultProxy::reset_all`]; every connection task watches it.
    kill: watch::Sender<u64>,
    counters: Counters,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().expect("fault lock")
    }

    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`, with no fault.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let (kill, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            target: Mutex::new(target),
            kill,
            counters: Counters::default(),
        });
        let accept_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors or similar: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                Shared::bump(&accept_shared.counters.connections, 1);
                tokio::spawn(connection(client, Arc::clone(&accept_shared)));
            }
        });
        FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault (new and open connections, see the module doc).
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().expect("fault lock") = fault;
    }

    /// Forwards new connections to `target` from now on.
    #[allow(dead_code)] // API for tests that move HQ; the current ones keep its port
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("target lock") = target;
    }

    /// Resets (RST) every open connection.
    pub fn reset_all(&self) {
        self.shared.kill.send_modify(|g| *g += 1);
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            dropped: get(&c.dropped),
            delayed: get(&c.delayed),
            truncated: get(&c.truncated),
            reset: get(&c.reset),
            blackholed: get(&c.blackholed),
            connect_failed: get(&c.connect_failed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How a connection ends.
enum End {
    /// Both sides closed cleanly (or one failed): drop everything, FIN where possible.
    Close,
    /// Abort both sides with RST.
    Reset,
}

/// One direction's state.
struct Pump {
    up: bool,
    open: bool,
    /// Bytes this direction may still forward under a `Truncate` fault.
    truncate_budget: Option<u64>,
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut kill = shared.kill.subscribe();
    let counters = &shared.counters;
    match shared.fault() {
        Fault::Drop => {
            Shared::bump(&counters.dropped, 1);
            return;
        }
        Fault::Blackhole => {
            Shared::bump(&counters.blackholed, 1);
            let (mut read, write) = client.into_split();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                tokio::select! {
                    r = read.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
                    _ = kill.changed() => {
                        Shared::bump(&counters.reset, 1);
                        abort(read, write);
                        return;
                    }
                }
            }
        }
        _ => {}
    }
    let target = *shared.target.lock().expect("target lock");
    let server =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            _ => {
                Shared::bump(&counters.connect_failed, 1);
                // The target is down: the client sees its connection reset, as close
                // as a proxy gets to "connection refused".
                let (r, w) = client.into_split();
                abort(r, w);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = Pump {
        up: true,
        open: true,
        truncate_budget: None,
    };
    let mut down = Pump {
        up: false,
        open: true,
        truncate_budget: None,
    };
    // Bytes both ways may still forward under a `Reset` fault.
    let mut reset_budget: Option<u64> = None;
    let mut up_buf = vec![0u8; 16 * 1024];
    let mut down_buf = vec![0u8; 16 * 1024];
    let end = loop {
        if !up.open && !down.open {
            break End::Close;
        }
        let step = tokio::select! {
            r = client_read.read(&mut up_buf), if up.open => {
                relay(&shared, &mut up, &mut reset_budget, r, &up_buf, &mut server_write).await
            }
            r = server_read.read(&mut down_buf), if down.open => {
                relay(&shared, &mut down, &mut reset_budget, r, &down_buf, &mut client_write).await
            }
            _ = kill.changed() => Some(End::Reset),
        };
        if let Some(end) = step {
            break end;
        }
    };
    match end {
        End::Close => drop((client_read, client_write, server_read, server_write)),
        End::Reset => {
            Shared::bump(&counters.reset, 1);
            abort(client_read, client_write);
            abort(server_read, server_write);
        }
    }
}

/// Forwards one read's result in one direction, applying the current fault. `None`:
/// carry on; `Some(end)`: the connection ends.
async fn relay(
    shared: &Shared,
    pump: &mut Pump,
    reset_budget: &mut Option<u64>,
    read: std::io::Result<usize>,
    buf: &[u8],
    to: &mut OwnedWriteHalf,
) -> Option<End> {
    let n = match read {
        Ok(0) => {
            // Half close: pass the FIN on, keep the other direction running.
            pump.open = false;
            let _ = to.shutdown().await;
            return None;
        }
        Ok(n) => n,
        Err(_) => return Some(End::Reset),
    };
    let counters = &shared.counters;
    let mut chunk = &buf[..n];
    let mut end = None;
    let fault = shared.fault();
    if !matches!(fault, Fault::Truncate(_)) {
        pump.truncate_budget = None;
    }
    if !matches!(fault, Fault::Reset(_)) {
        *reset_budget = None;
    }
    match fault {
        Fault::None | Fault::Drop => {}
        Fault::Delay(d) => {
            Shared::bump(&counters.delayed, 1);
            tokio::time::sleep(d).await;
        }
        Fault::Blackhole => return None,
        Fault::Truncate(limit) => {
            if !pump.up {
                let budget = pump.truncate_budget.get_or_insert(limit);
                if chunk.len() as u64 >= *budget {
                    chunk = &chunk[..usize::try_from(*budget).unwrap_or(usize::MAX)];
                    Shared::bump(&counters.truncated, 1);
                    end = Some(End::Close);
                } else {
                    *budget -= chunk.len() as u64;
                }
            }
        }
        Fault::Reset(limit) => {
            let budget = reset_budget.get_or_insert(limit);
            if chunk.len() as u64 >= *budget {
                chunk = &chunk[..usize::try_from(*budget).unwrap_or(usize::MAX)];
                end = Some(End::Reset);
            } else {
                *budget -= chunk.len() as u64;
            }
        }
    }
    if !chunk.is_empty() {
        if to.write_all(chunk).await.is_err() {
            return Some(End::Reset);
        }
        let counter = if pump.up {
            &counters.bytes_up
        } else {
            &counters.bytes_down
        };
        Shared::bump(counter, chunk.len() as u64);
    }
    end
}

/// Closes a connection with RST instead of FIN (linger 0, no shutdown of the write
/// half first).
fn abort(read: OwnedReadHalf, write: OwnedWriteHalf) {
    let _ = write.as_ref().set_zero_linger();
    write.forget();
    drop(read);
}
