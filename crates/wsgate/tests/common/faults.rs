//! A fault-injecting TCP proxy for the store tests, in the manner of
//! Toxiproxy: the gateway talks to Redis through it, and the test turns the
//! path up, silent, slow or reset at will, on live connections too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the path does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Up,
    /// Connections stay open, bytes are swallowed (a dead path behind a
    /// middlebox): nothing errors, nothing answers. New connections are
    /// accepted and swallowed too.
    BlackHole,
    /// Every connection is reset, and new ones are reset at once.
    Reset,
    /// Bytes flow, each chunk delayed by this long.
    Latency(Duration),
}

/// A proxy on 127.0.0.1 in front of `target`, stopped on drop.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, watcher) = watch::channel(Mode::Up);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let watcher = watcher.clone();
                tokio::spawn(async move {
                    if *watcher.borrow() == Mode::Reset {
                        let _ = client.set_zero_linger();
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        let _ = client.set_zero_linger();
                        return;
                    };
                    relay(client, server, watcher).await;
                });
            }
        });
        FaultProxy { addr, mode, task }
    }

    /// Changes what the path does, for live and new connections.
    pub fn set(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }

    /// `redis://` through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, watcher: watch::Receiver<Mode>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let sw = Arc::new(tokio::sync::Mutex::new(sw));
    let up = pump(cr, sw.clone(), watcher.clone());
    let down = pump(sr, cw.clone(), watcher.clone());
    let mut reset = watcher.clone();
    let resetting = async move {
        loop {
            if *reset.borrow_and_update() == Mode::Reset {
                return;
            }
            if reset.changed().await.is_err() {
                // The proxy is gone: hang up.
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        () = resetting => {}
    }
    // Hang up both sides; a reset mode makes it an RST.
    for w in [cw.lock().await.as_ref(), sw.lock().await.as_ref()] {
        let _ = w.set_zero_linger();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    watcher: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mode = *watcher.borrow();
        match mode {
            Mode::Up => {}
            Mode::BlackHole => continue,
            Mode::Reset => return,
            Mode::Latency(d) => tokio::time::sleep(d).await,
        }
        if to.lock().await.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
