//! TLS for the tests: certificates made here with rcgen (a CA, and leaves
//! it signs, ECDSA P-256), a rustls client that trusts that CA, the
//! client-side stream (`Conn`, plain or TLS), and the switch that makes a
//! test run over TLS (`with_tls`, used by `over_tls_too!`).

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A test CA: it signs the leaves, and the test clients trust it.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

/// A leaf certificate and key, written to files the relay loads.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's DER, to compare with what a client was served.
    pub der: Vec<u8>,
}

/// The one CA of this test process.
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "itty-relay test CA");
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        TestCa { cert, key, pem }
    })
}

/// A directory of its own for this test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "itty-relay-tls-{}-{}",
        std::process::id(),
        crate::support::unique(tag)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestCa {
    /// A leaf for `names` (DNS names or IP addresses), written as
    /// `<dir>/<tag>.pem` and `<dir>/<tag>.key` (PKCS#8).
    pub fn leaf(&self, names: &[&str], tag: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, tag);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let dir = temp_dir(tag);
        let leaf = Leaf {
            cert: dir.join(format!("{tag}.pem")),
            key: dir.join(format!("{tag}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// The CA as a PEM file (for Node's NODE_EXTRA_CA_CERTS).
    pub fn pem_file(&self) -> PathBuf {
        let path = temp_dir("ca").join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

/// The usual leaf: `localhost` and `127.0.0.1`.
pub fn localhost_leaf() -> &'static Leaf {
    static LEAF: OnceLock<Leaf> = OnceLock::new();
    LEAF.get_or_init(|| ca().leaf(&["localhost", "127.0.0.1"], "localhost"))
}

/// A rustls client trusting the test CA (ring, TLS 1.2 and 1.3, ALPN
/// http/1.1), without resumption: every connection does a full handshake
/// and sees the certificate served now.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(client_config_with(|_| {})))
        .clone()
}

/// A client config like `client_config`, adjusted (a fresh session store
/// each call).
pub fn client_config_with(adjust: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
    let roots = root_store();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    adjust(&mut config);
    config
}

/// Roots holding the test CA only.
pub fn root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca().cert.der().to_vec()))
        .unwrap();
    roots
}

thread_local! {
    /// Set while a test runs over TLS (`with_tls`): the helpers connect
    /// with this client config.
    static OVER_TLS: RefCell<Option<Arc<ClientConfig>>> = const { RefCell::new(None) };
}

/// Runs `test` with every relay it boots speaking TLS and every client of
/// the helpers connecting over TLS (this thread only).
pub fn with_tls(test: fn()) {
    OVER_TLS.with(|t| *t.borrow_mut() = Some(client_config()));
    test();
    OVER_TLS.with(|t| *t.borrow_mut() = None);
}

/// Makes a thread a test spawned connect as the test does (pass it
/// `over_tls()` from the test's thread).
pub fn inherit(config: Option<Arc<ClientConfig>>) {
    OVER_TLS.with(|t| *t.borrow_mut() = config);
}

/// The client config when this test runs over TLS.
pub fn over_tls() -> Option<Arc<ClientConfig>> {
    OVER_TLS.with(|t| t.borrow().clone())
}

/// A test client's socket: plain TCP, or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// Connects to `addr`, over TLS when this test runs over TLS.
    pub fn connect(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(crate::support::EVENT_TIMEOUT))
            .unwrap();
        match over_tls() {
            None => Conn::Plain(tcp),
            Some(config) => Conn::tls(tcp, config, "localhost"),
        }
    }

    /// TLS over `tcp` with `config`, asking for `name`; the handshake
    /// runs (and must succeed) before this returns.
    pub fn tls(tcp: TcpStream, config: Arc<ClientConfig>, name: &str) -> Conn {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let session = ClientConnection::new(config, name).unwrap();
        let mut stream = StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake");
        }
        Conn::Tls(Box::new(stream))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => &tls.sock,
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    /// The plain socket, cloned (plain connections only: a second writer
    /// on a TLS stream would corrupt it).
    pub fn try_clone(&self) -> std::io::Result<TcpStream> {
        match self {
            Conn::Plain(tcp) => tcp.try_clone(),
            Conn::Tls(_) => panic!("try_clone on a TLS test connection"),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// The certificate the server presented (its leaf), over TLS.
    pub fn peer_leaf(&self) -> Option<Vec<u8>> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(tls) => tls.conn.peer_certificates().map(|c| c[0].to_vec()),
        }
    }
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.read(buf),
            Conn::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.write(buf),
            Conn::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(tcp) => tcp.flush(),
            Conn::Tls(tls) => tls.flush(),
        }
    }
}

/// Declares tests that run twice: as written, and over TLS (`over_tls::`)
/// with every relay the helpers boot speaking TLS and every helper client
/// connecting over it.
#[macro_export]
macro_rules! over_tls_too {
    ($( $(#[$meta:meta])* fn $name:ident() $body:block )*) => {
        $( $(#[$meta])* fn $name() $body )*

        mod over_tls {
            $(
                #[test]
                fn $name() {
                    $crate::support::with_tls(super::$name)
                }
            )*
        }
    };
}
