//! tough's `Transport` over HTTPS with rustls, trusting only the manufacturer's CA.
//!
//! A deliberately small HTTP/1.1 client: one `GET` per connection (`Connection: close`), a
//! response body bounded by `max_bytes`, `Content-Length`, chunked or close-delimited bodies,
//! no redirects, no proxies, no cookies. TUF verifies everything it fetches, so the transport
//! only has to be correct and bounded, not clever. Only `https` URLs are fetched; the web PKI is
//! not consulted: the root store holds the pinned CA alone.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tough::{Bytes, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Longest a whole fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportSetupError {
    /// The CA certificate is not usable.
    #[error("manufacturer CA certificate: {0}")]
    Ca(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// HTTPS with the manufacturer CA pinned.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    config: Arc<rustls::ClientConfig>,
    max_bytes: usize,
}

impl HttpsTransport {
    /// Trusts only `ca_der` (the manufacturer CA certificate, DER). Bodies above `max_bytes`
    /// are refused.
    pub fn new(ca_der: &[u8], max_bytes: usize) -> Result<Self, TransportSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| TransportSetupError::Ca(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config), max_bytes })
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, TransportError> {
        let other =
            |e: String| TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e);
        if url.scheme() != "https" {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url.as_str(),
            ));
        }
        let host = url.host_str().ok_or_else(|| other("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        // IPv6 literals come bracketed in URLs; ServerName wants them bare.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned()).map_err(|e| other(e.to_string()))?;
        let tcp = TcpStream::connect((bare, port)).await.map_err(|e| other(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let mut tls = connector.connect(name, tcp).await.map_err(|e| other(format!("TLS: {e}")))?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: galen-recipes\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            url.host_str().unwrap_or(bare)
        );
        tls.write_all(request.as_bytes()).await.map_err(|e| other(e.to_string()))?;
        let limit = self.max_bytes + MAX_HEAD_BYTES;
        let mut raw = Vec::new();
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match tls.read(&mut buf).await {
                Ok(n) => n,
                // Servers that close without close_notify: the body length is checked below.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(other(e.to_string())),
            };
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > limit {
                return Err(other(format!("response larger than {} bytes", self.max_bytes)));
            }
        }
        let response = parse_response(&raw, self.max_bytes).map_err(other)?;
        match response.status {
            200 => Ok(response.body),
            404 | 410 => Err(TransportError::new(TransportErrorKind::FileNotFound, url.as_str())),
            s => Err(other(format!("HTTP status {s}"))),
        }
    }
}

#[tough::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let body = Box::pin(tokio::time::timeout(FETCH_TIMEOUT, self.get(&url))).await.map_err(
            |_| {
                TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), "timed out")
            },
        )??;
        let chunk: Result<Bytes, TransportError> = Ok(Bytes::from(body));
        Ok(Box::pin(futures_util::stream::iter([chunk])))
    }
}

/// A parsed response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Parses a whole HTTP/1.1 response.
fn parse_response(raw: &[u8], max_body: usize) -> Result<Response, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of response head")?;
    if end > MAX_HEAD_BYTES {
        return Err("response head too large".into());
    }
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "response head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line}"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (k, v) = line.split_once(':').ok_or("bad header line")?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if k == "transfer-encoding" {
            chunked = v.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(format!("unsupported Transfer-Encoding {v}"));
            }
        } else if k == "content-encoding" && !v.eq_ignore_ascii_case("identity") {
            return Err(format!("unsupported Content-Encoding {v}"));
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest, max_body)?
    } else if let Some(n) = length {
        if n > max_body {
            return Err(format!("Content-Length {n} is above the limit {max_body}"));
        }
        rest.get(..n).ok_or("connection closed before the whole body arrived")?.to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > max_body {
        return Err(format!("body above the limit {max_body}"));
    }
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8], max_body: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        // A hostile size (e.g. ffffffffffffffff) must be refused, never overflow.
        if body.len().checked_add(size).is_none_or(|total| total > max_body) {
            return Err(format!("body above the limit {max_body}"));
        }
        body.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
        let next = size.checked_add(2).ok_or("bad chunk size")?;
        rest = rest.get(next..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 10).unwrap();
        assert_eq!(r, Response { status: 200, body: b"abc".to_vec() });
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 10)
            .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n", 10).unwrap();
        assert_eq!(r.status, 404);
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nclose-delimited", 100).unwrap();
        assert_eq!(r.body, b"close-delimited");
    }

    #[test]
    fn oversized_or_truncated_responses_are_refused() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 10).is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n", 10)
                .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n", 10).is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n", 10).is_err());
    }

    /// A chunk size near `usize::MAX` after some body is refused without overflowing.
    #[test]
    fn a_hostile_chunk_size_is_refused_without_overflow() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n";
        for max in [10, usize::MAX] {
            let err = parse_response(raw, max).unwrap_err();
            assert_eq!(err, format!("body above the limit {max}"));
        }
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nx\r\n0\r\n\r\n";
        assert!(parse_response(raw, usize::MAX).is_err());
    }
}
