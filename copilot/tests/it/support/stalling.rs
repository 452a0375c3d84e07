//! An HTTP server whose body stalls: a large Content-Length, 64 KiB of it, then
//! nothing until dropped (for timeouts, signals and progress mid-transfer).
use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// An HTTP server that answers every GET with a large Content-Length, sends
/// 64 KiB of it and then stalls until dropped.
pub struct StallingServer {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StallingServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
                    while !flag.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        Self { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/big.bin", self.port)
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
