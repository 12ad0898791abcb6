//! TLS for the main listener (`--tls-cert`, `--tls-key`, the file's
//! `[[tls_sni]]` list): the certificates loaded and checked, the one
//! `rustls::ServerConfig` every shard shares (ring provider, TLS 1.2 and
//! 1.3 with rustls' safe defaults, ALPN `http/1.1`, one session ticketer
//! so a resumption works on whichever shard SO_REUSEPORT picks), and the
//! reload on SIGHUP.
//!
//! Loading runs on the starting or the signal thread, never on a shard; a
//! shard only reads the current certificates during a handshake (one
//! uncontended read lock per handshake, none per record). Errors name the
//! file and the problem, never key material.

use crate::config::{Config, SniCertificate};
use crate::error::Error;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// TLS 1.3 session tickets sent after a full handshake. rustls sends two
/// by default (a browser may open two connections at once); each costs an
/// AEAD seal and ~200 bytes, so one per handshake is enough for a client
/// that reconnects with one socket at a time, as WebSocket clients do.
const TLS13_TICKETS_PER_HANDSHAKE: usize = 1;

/// TLS on the main listener: the shared server configuration and the
/// certificates it serves, swapped in place on reload.
pub struct Tls {
    /// What every shard's handshakes use.
    server_config: Arc<ServerConfig>,
    /// The certificates in force (read at each handshake).
    certificates: Arc<Certificates>,
}

impl Tls {
    /// Loads `config`'s certificates; `Ok(None)` when TLS is off (no
    /// `tls_cert`). A missing half, an unreadable or broken file or a key
    /// that does not match its certificate is an error naming the file.
    pub fn from_config(config: &Config) -> Result<Option<Tls>, Error> {
        let Some(set) = CertificateSet::load(config)? else {
            return Ok(None);
        };
        let certificates = Arc::new(Certificates {
            current: RwLock::new(Arc::new(set)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(certificates.clone());
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        server_config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Error::Config(format!("TLS: no session ticketer: {e}")))?;
        server_config.send_tls13_tickets = TLS13_TICKETS_PER_HANDSHAKE;
        Ok(Some(Tls {
            server_config: Arc::new(server_config),
            certificates,
        }))
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// Loads `config`'s certificates again and puts them in force for new
    /// handshakes; open connections keep theirs. On any error nothing
    /// changes. Returns how many certificates are served now.
    pub fn reload(&self, config: &Config) -> Result<usize, Error> {
        let set = CertificateSet::load(config)?.ok_or_else(|| {
            Error::Config("TLS: tls_cert is no longer set; TLS stays on until a restart".into())
        })?;
        let count = 1 + set.by_name.len();
        *self
            .certificates
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(count)
    }
}

/// The certificates in force, behind a lock taken for reading once per
/// handshake and for writing once per reload.
#[derive(Debug)]
struct Certificates {
    current: RwLock<Arc<CertificateSet>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(set.choose(hello.server_name()))
    }
}

/// One default certificate and those chosen by server name (SNI).
#[derive(Debug)]
struct CertificateSet {
    default: Arc<CertifiedKey>,
    /// Lower-case DNS names to their certificates.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertificateSet {
    /// `Ok(None)` when TLS is off.
    fn load(config: &Config) -> Result<Option<CertificateSet>, Error> {
        let (cert, key) = match (&config.tls_cert, &config.tls_key) {
            (None, None) if config.tls_sni.is_empty() => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (None, _) => {
                return Err(Error::Config(
                    "TLS: tls_key or tls_sni is set without tls_cert (the default certificate)"
                        .into(),
                ))
            }
            (Some(_), None) => {
                return Err(Error::Config("TLS: tls_cert is set without tls_key".into()))
            }
        };
        let provider = rustls::crypto::ring::default_provider();
        let default = Arc::new(load_certified_key(&provider, cert, key)?);
        let mut by_name = HashMap::new();
        for SniCertificate { names, cert, key } in &config.tls_sni {
            if names.is_empty() {
                return Err(Error::Config(format!(
                    "TLS: the tls_sni entry for {} has no names",
                    cert.display()
                )));
            }
            let certified = Arc::new(load_certified_key(&provider, cert, key)?);
            for name in names {
                by_name.insert(name.to_ascii_lowercase(), certified.clone());
            }
        }
        Ok(Some(CertificateSet { default, by_name }))
    }

    /// The certificate for `server_name`, or the default (no SNI, an IP
    /// address, or a name not listed).
    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Loads a PEM chain and its PEM key (PKCS#8, PKCS#1 or SEC1) and checks
/// that they belong together.
fn load_certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, Error> {
    let fail =
        |path: &Path, what: String| Error::Config(format!("TLS: {}: {what}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| fail(cert_path, pem_problem(&e, "certificate")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(cert_path, pem_problem(&e, "certificate")))?;
    if chain.is_empty() {
        return Err(fail(cert_path, "no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| fail(key_path, pem_problem(&e, "private key")))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| fail(key_path, "the private key is not a supported kind (ECDSA P-256 or P-384, Ed25519, RSA 2048 bits or more)".into()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // A provider that cannot tell: the first handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(fail(
                key_path,
                format!(
                    "the private key does not match the certificate in {}",
                    cert_path.display()
                ),
            ))
        }
    }
    Ok(certified)
}

/// What was wrong with a PEM file, in words that never quote its content
/// (a line of a key file is key material).
fn pem_problem(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("no PEM {what} in the file"),
        _ => format!("not a valid PEM {what} file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("itty-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_naming_the_files() {
        let dir = temp_dir("mismatch");
        let (cert, _) = certified("a.test");
        let (_, other_key) = certified("b.test");
        let config = Config {
            tls_cert: Some(write(&dir, "cert.pem", &cert)),
            tls_key: Some(write(&dir, "key.pem", &other_key)),
            ..Config::default()
        };
        let e = Tls::from_config(&config).err().unwrap().to_string();
        assert!(e.contains("key.pem") && e.contains("does not match"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
    }

    #[test]
    fn garbage_is_refused_without_quoting_it() {
        let dir = temp_dir("garbage");
        let (cert, _) = certified("a.test");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA\n";
        let config = Config {
            tls_cert: Some(write(&dir, "cert.pem", &cert)),
            tls_key: Some(write(&dir, "key.pem", secret)),
            ..Config::default()
        };
        let e = Tls::from_config(&config).err().unwrap().to_string();
        assert!(e.contains("key.pem"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn sni_chooses_by_name_and_falls_back_to_the_default() {
        let dir = temp_dir("sni");
        let (cert, key) = certified("default.test");
        let (cert_a, key_a) = certified("a.test");
        let config = Config {
            tls_cert: Some(write(&dir, "cert.pem", &cert)),
            tls_key: Some(write(&dir, "key.pem", &key)),
            tls_sni: vec![SniCertificate {
                names: vec!["A.test".into()],
                cert: write(&dir, "a.pem", &cert_a),
                key: write(&dir, "a.key", &key_a),
            }],
            ..Config::default()
        };
        let set = CertificateSet::load(&config).unwrap().unwrap();
        let a = set.choose(Some("a.TEST"));
        let default = set.choose(None);
        assert!(!Arc::ptr_eq(&a, &default));
        assert!(Arc::ptr_eq(&set.choose(Some("other.test")), &default));
    }
}
