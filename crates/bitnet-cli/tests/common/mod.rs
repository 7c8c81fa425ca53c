//! Talking to a `bitnet serve` child process: wait until its model has loaded, send HTTP requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
use std::process::ChildStderr;
use std::time::Duration;

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads a server's stderr until its model has loaded; returns the address it listens on and the
/// rest of its stderr.
pub fn wait_until_loaded(stderr: ChildStderr) -> (String, Lines<BufReader<ChildStderr>>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(a) = l.strip_prefix("listening on http://") {
            addr = Some(a.to_string());
        }
        if l.starts_with("model loaded") {
            break;
        }
    }
    (addr.expect("the server printed its address"), lines)
}
