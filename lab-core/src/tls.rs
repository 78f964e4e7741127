//! The lab certificate authority and the rustls configurations every device uses.
//!
//! One lab CA signs every device certificate (CN = the device serial, SANs = the names and
//! addresses it serves). Servers and clients verify their peers against that CA only: there is
//! no accept-any-certificate path between fortilab processes. Keys are ECDSA P-256, which rcgen
//! generates in well under a millisecond, so a device can issue its own certificate at start-up.

use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// Errors from the lab CA and TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate or key found")]
    Pem(String),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// Extra subject names (comma-separated DNS names or IPs) every certificate [`LabCa::issue`]s
/// carries: the Kubernetes manifests of `fortilab k8s` set it to the device's Service names.
pub const EXTRA_SANS_ENV: &str = "FORTILAB_TLS_SANS";

/// The names of an [`EXTRA_SANS_ENV`] value: trimmed, empty ones dropped.
pub fn extra_sans(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The lab certificate authority.
pub struct LabCa {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabCa").finish_non_exhaustive()
    }
}

/// A certificate and key issued by the lab CA.
#[derive(Clone)]
pub struct DeviceCert {
    pub cn: String,
    pub cert_pem: String,
    pub key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for DeviceCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret: never print it.
        f.debug_struct("DeviceCert")
            .field("cn", &self.cn)
            .finish_non_exhaustive()
    }
}

impl LabCa {
    /// Creates a fresh CA.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} Lab CA"));
        dn.push(DnType::OrganizationName, "fortilab");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let cert_der = cert.der().clone();
        let issuer = Issuer::new(params, key);
        Ok(Self {
            cert_pem,
            key_pem,
            cert_der,
            issuer,
        })
    }

    /// Loads a CA from PEM text (certificate and private key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let cert_der = first_cert(cert_pem, "CA certificate")?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// Loads the CA from `dir/ca.pem` + `dir/ca.key`, creating and saving one if absent.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let cert = read(&cert_path)?;
            let key = read(&key_path)?;
            return Self::from_pem(&cert, &key);
        }
        let ca = Self::generate(name)?;
        crate::secrets::create_private_dir(dir).map_err(|e| io_err(dir, e))?;
        write_private(&key_path, &ca.key_pem)?;
        std::fs::write(&cert_path, &ca.cert_pem).map_err(|e| io_err(&cert_path, e))?;
        Ok(ca)
    }

    /// Loads a CA from two files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert_path)?, &read(key_path)?)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM. Only the orchestrator hands it to the devices it starts.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Writes `ca.pem` and `ca.key` under `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let cert_path = dir.join("ca.pem");
        std::fs::write(&cert_path, &self.cert_pem).map_err(|e| io_err(&cert_path, e))?;
        write_private(&dir.join("ca.key"), &self.key_pem)
    }

    /// A root store holding just this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("the lab CA certificate is valid DER");
        roots
    }

    /// Issues a certificate usable as TLS server and client: CN = `cn`, SANs = `sans` (DNS names
    /// or IP addresses; `localhost` and `127.0.0.1` are always added so loopback works, and the
    /// comma-separated names of [`EXTRA_SANS_ENV`] when it is set: a Kubernetes lab names each
    /// device's Service there, so clients verify a device reached by its Service name).
    pub fn issue(&self, cn: &str, sans: &[String]) -> Result<DeviceCert, TlsError> {
        let mut sans = sans.to_vec();
        if let Ok(extra) = std::env::var(EXTRA_SANS_ENV) {
            sans.extend(extra_sans(&extra));
        }
        self.issue_exact(cn, &sans)
    }

    /// [`LabCa::issue`] without the environment's extra names.
    pub fn issue_exact(&self, cn: &str, sans: &[String]) -> Result<DeviceCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "Fortinet");
        params.distinguished_name = dn;
        let mut all: Vec<String> = sans.to_vec();
        for extra in ["localhost", "127.0.0.1"] {
            if !all.iter().any(|s| s == extra) {
                all.push(extra.to_string());
            }
        }
        for san in &all {
            let entry = match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            };
            params.subject_alt_names.push(entry);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DeviceCert {
            cn: cn.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key_der: key.serialize_der(),
        })
    }
}

impl DeviceCert {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// Whether a server asks TLS clients for a lab-CA certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Plain server authentication (browsers, curl, Python clients).
    None,
    /// Ask for a certificate and verify it when offered (the EMS API: browsers without one,
    /// FortiGates with one).
    Optional,
    /// Refuse clients without a lab-CA certificate (the log channel, EMS telemetry).
    Required,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server configuration presenting `cert`.
pub fn server_config(
    ca: &LabCa,
    cert: &DeviceCert,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let roots = Arc::new(ca.roots());
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if client_auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(cert.chain.clone(), cert.key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A rustls client configuration trusting only the lab CA, optionally presenting `identity`.
pub fn client_config(
    ca: &LabCa,
    identity: Option<&DeviceCert>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_from_roots(ca.roots(), identity)
}

/// A client configuration trusting the CA given as PEM (a device that only knows the CA
/// certificate, not its key).
pub fn client_config_from_pem(
    ca_pem: &str,
    identity: Option<&DeviceCert>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let der = first_cert(ca_pem, "CA certificate")?;
    roots.add(der)?;
    client_config_from_roots(roots, identity)
}

fn client_config_from_roots(
    roots: RootCertStore,
    identity: Option<&DeviceCert>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some(cert) => builder.with_client_auth_cert(cert.chain.clone(), cert.key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server name to verify for a lab address (IP SAN or DNS SAN).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(format!("bad server name: {e}"))))
}

/// The subject CN of a DER certificate (the device serial for lab certificates).
pub fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

/// The CN of the certificate a TLS peer presented, if any.
pub fn peer_common_name(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    certs
        .and_then(|c| c.first())
        .and_then(|c| cert_common_name(c.as_ref()))
}

fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, TlsError> {
    let mut reader = BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader)
        .next()
        .and_then(|r| r.ok());
    first.ok_or_else(|| TlsError::Pem(what.to_string()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    crate::secrets::write_private(path, text.as_bytes()).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_serial_as_cn() {
        let ca = LabCa::generate("test").unwrap();
        let cert = ca
            .issue("FGVM01TM00000001", &["10.115.2.1".into()])
            .unwrap();
        assert_eq!(
            cert_common_name(cert.chain[0].as_ref()).as_deref(),
            Some("FGVM01TM00000001")
        );
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = LabCa::generate("test").unwrap();
        let again = LabCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let cert = again.issue("X", &[]).unwrap();
        // A certificate issued by the reloaded CA verifies against the original root.
        server_config(&ca, &cert, ClientAuth::Required, &[]).unwrap();
        client_config(&ca, Some(&cert)).unwrap();
    }

    #[tokio::test]
    async fn mutual_tls_handshake_reports_peer_cn_and_rejects_foreign_ca() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca = LabCa::generate("test").unwrap();
        let server_cert = ca.issue("FAZ-SERIAL", &[]).unwrap();
        let client_cert = ca.issue("FGT-SERIAL", &[]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(
            server_config(&ca, &server_cert, ClientAuth::Required, &[]).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut cns = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        cns.push(peer_common_name(tls.get_ref().1.peer_certificates()));
                        tls.write_all(b"ok").await.unwrap();
                        tls.shutdown().await.ok();
                    }
                    Err(_) => cns.push(None),
                }
            }
            cns
        });
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&ca, Some(&client_cert)).unwrap());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.ok();
        assert_eq!(buf, b"ok");

        // A client that trusts another CA refuses the server.
        let other = LabCa::generate("other").unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&other, None).unwrap());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(connector
            .connect(server_name("localhost").unwrap(), tcp)
            .await
            .is_err());

        let cns = server.await.unwrap();
        assert_eq!(cns[0].as_deref(), Some("FGT-SERIAL"));
        assert_eq!(cns[1], None);
    }
}
