//! `wss://`: the generator's TLS client (rustls with the ring provider, as
//! the relay), driven sans-IO over glommio's `TcpStream` like the relay's
//! own (`src/conn/tls.rs`). It trusts the CA given with `--ca` (or the
//! file in `SSL_CERT_FILE`); there is no "skip verification" mode.
//!
//! Its own cost is measured: every call into rustls (sealing, reading
//! records, decrypting) is timed per executor thread and summed at the end
//! (`generator_tls_cpu_s` in the summary), so a run says how much of the
//! generator's cpu went to TLS.

use crate::ws::SetupError;
use futures_lite::{ready, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Ciphertext read per `recv`: one full record.
const TLS_READ_BYTES: usize = 16 * 1024 + 256;

/// Nanoseconds spent in rustls by every executor that has finished.
static TLS_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Nanoseconds spent in rustls by this executor so far.
    static THREAD_TLS_NS: Cell<u64> = const { Cell::new(0) };
}

/// Times `f` as TLS work of this thread.
fn timed<T>(f: impl FnOnce() -> T) -> T {
    let start = crate::sys::now_ns();
    let out = f();
    let spent = crate::sys::now_ns().saturating_sub(start);
    THREAD_TLS_NS.with(|c| c.set(c.get() + spent));
    out
}

/// Adds this thread's TLS time to the total (an executor, as it ends).
pub fn flush_thread_cpu() {
    let ns = THREAD_TLS_NS.with(|c| c.replace(0));
    TLS_NS.fetch_add(ns, Relaxed);
}

/// Seconds the executors spent in rustls since the last call (each run
/// of a sweep reports its own).
pub fn take_cpu_s() -> f64 {
    TLS_NS.swap(0, Relaxed) as f64 / 1e9
}

/// The client side of `wss://`: the configuration and the name to ask for.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts the PEM certificates in `ca` (or `SSL_CERT_FILE`) and asks
    /// for `host` (SNI, and the name the certificate must carry).
    pub fn new(ca: Option<&Path>, host: &str) -> anyhow::Result<ClientTls> {
        let env = std::env::var_os("SSL_CERT_FILE");
        let ca = ca.or(env.as_deref().map(Path::new)).ok_or_else(|| {
            anyhow::anyhow!("wss:// needs the CA to trust: --ca FILE (PEM) or SSL_CERT_FILE")
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
        {
            roots
                .add(cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| anyhow::anyhow!("{host:?} is not a server name: {e}"))?;
        Ok(ClientTls {
            config: Arc::new(config),
            name,
        })
    }

    /// Runs the TLS handshake over `tcp`.
    pub async fn connect(&self, mut tcp: TcpStream) -> Result<Conn, SetupError> {
        let io = |e: io::Error| SetupError::Io(format!("TLS: {e}"));
        let mut session = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| SetupError::BadHandshake(format!("TLS: {e}")))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            timed(|| -> io::Result<()> {
                while session.wants_write() {
                    session.write_tls(&mut out)?;
                }
                Ok(())
            })
            .map_err(io)?;
            if !out.is_empty() {
                tcp.write_all(&out).await.map_err(io)?;
                out.clear();
            }
            if !session.is_handshaking() {
                return Ok(Conn::Tls(Box::new(TlsConn {
                    tcp,
                    session,
                    sealed: Vec::new(),
                    sealed_sent: 0,
                    accepted: 0,
                    ciphertext_left: Vec::new(),
                })));
            }
            let n = tcp.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                return Err(SetupError::BadHandshake(
                    "TLS: closed during the handshake".into(),
                ));
            }
            timed(|| {
                let mut input = &buf[..n];
                while !input.is_empty() {
                    session.read_tls(&mut input)?;
                    session
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Ok(())
            })
            .map_err(|e: io::Error| SetupError::BadHandshake(format!("TLS: {e}")))?;
        }
    }
}

/// A generator connection: plain TCP, or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

pub struct TlsConn {
    tcp: TcpStream,
    session: ClientConnection,
    sealed: Vec<u8>,
    sealed_sent: usize,
    accepted: usize,
    ciphertext_left: Vec<u8>,
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => &tls.tcp,
        }
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl TlsConn {
    fn poll_send_sealed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            timed(|| self.session.write_tls(&mut self.sealed))?;
        }
        while self.sealed_sent < self.sealed.len() {
            let n =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.sealed[self.sealed_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sealed_sent += n;
        }
        self.sealed.clear();
        self.sealed_sent = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.session.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if !self.ciphertext_left.is_empty() {
                let left = std::mem::take(&mut self.ciphertext_left);
                self.take_in(&left)?;
                continue;
            }
            let mut ciphertext = [0u8; TLS_READ_BYTES];
            let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut ciphertext))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            self.take_in(&ciphertext[..n])?;
        }
    }

    /// Feeds ciphertext to rustls; what it cannot take while it holds over
    /// 16 KiB of plaintext waits in `ciphertext_left` (as in the relay).
    fn take_in(&mut self, mut ciphertext: &[u8]) -> io::Result<()> {
        timed(|| {
            while !ciphertext.is_empty() {
                if self.session.read_tls(&mut ciphertext)? == 0 {
                    break;
                }
                let state = self
                    .session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if state.plaintext_bytes_to_read() > 16 * 1024 && !ciphertext.is_empty() {
                    self.ciphertext_left.extend_from_slice(ciphertext);
                    break;
                }
            }
            Ok(())
        })
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_send_sealed(cx))?;
            if self.accepted > 0 {
                return Poll::Ready(Ok(std::mem::take(&mut self.accepted)));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            self.accepted = timed(|| self.session.writer().write(buf))?;
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Conn::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Conn::Tls(tls) => tls.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => tls.poll_send_sealed(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_close(cx),
            Conn::Tls(tls) => {
                tls.session.send_close_notify();
                ready!(tls.poll_send_sealed(cx))?;
                Pin::new(&mut tls.tcp).poll_close(cx)
            }
        }
    }
}
