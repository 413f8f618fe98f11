//! A TCP proxy in front of a real registry that spoils one blob's download: cut it short,
//! stall it, or flip a byte. Everything else passes through unchanged. One request per
//! connection (`Connection: close` is forced), so requests are easy to tell apart.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::error::{io_err, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything.
    None,
    /// Close the connection after this many body bytes.
    Truncate(usize),
    /// Stop sending (but keep the connection open) after this many body bytes.
    Stall(usize),
    /// Flip the byte at this body offset.
    Corrupt(usize),
}

pub struct FaultProxy {
    pub addr: String,
    fault: Arc<Mutex<(String, Fault)>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies to `upstream`; `fault` applies to GETs of blob `digest`.
    pub fn start(upstream: &str) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("proxy addr"))?
            .to_string();
        let fault = Arc::new(Mutex::new((String::new(), Fault::None)));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, up) = (fault.clone(), stop.clone(), upstream.to_string());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, s, up) = (f.clone(), s.clone(), up.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &up, &f, &s);
                });
            }
        });
        Ok(FaultProxy { addr, fault, stop })
    }

    /// Spoils GETs of `digest` from now on.
    pub fn set(&self, digest: &str, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = (digest.to_string(), fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
        if head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    fault: &Mutex<(String, Fault)>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let head = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or("").to_string();
    let (digest, f) = fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let spoil = if !digest.is_empty()
        && request_line.starts_with("GET ")
        && request_line.contains(&format!("/blobs/{digest}"))
    {
        f
    } else {
        Fault::None
    };
    // Force one request per connection; keep the rest of the head as it was.
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(out.as_bytes())?;
    // A request body (not used by pulls, but pass it on).
    let len = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    if len > 0 {
        let mut body = vec![0u8; len];
        client.read_exact(&mut body)?;
        up.write_all(&body)?;
    }
    // Response: head as is, then the body with the fault applied.
    let resp_head = read_head(&mut up)?;
    client.write_all(&resp_head)?;
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match spoil {
            Fault::Truncate(at) | Fault::Stall(at) if sent + n > at => {
                client.write_all(&chunk[..at - sent])?;
                client.flush()?;
                if let Fault::Stall(_) = spoil {
                    // Hold the connection open, silent, until the proxy goes away.
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fault::Corrupt(at) if at >= sent && at < sent + n => {
                chunk[at - sent] ^= 0xff;
                client.write_all(chunk)?;
            }
            _ => client.write_all(chunk)?,
        }
        sent += n;
    }
    Ok(())
}
