//! A throwaway certificate authority for TLS fakes: a CA, a server
//! certificate for 127.0.0.1 and a client certificate, written as PEM files
//! the way `docker --tlsverify` takes them (`ca.pem`, `cert.pem`,
//! `key.pem`, the key owner-only), plus the rustls server config that
//! demands a client certificate from that CA and refuses any other the way
//! dockerd does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    crypto, CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// A CA and what it signed.
pub struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, Vec<u8>),
}

/// PEM armour, 64 columns (no `pem` feature in the dev build of rcgen).
fn pem(label: &str, der: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// A client's files: `ca.pem`, `cert.pem`, `key.pem` in `dir`.
pub struct ClientFiles {
    /// The directory holding them.
    pub dir: PathBuf,
}

impl ClientFiles {
    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// `cert.pem`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    /// `key.pem` (mode 0600).
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Pki {
    /// A fresh CA with a server certificate for 127.0.0.1 and localhost.
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().clone();
        let server_key = KeyPair::generate().unwrap();
        let mut sp =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_der = sp.signed_by(&server_key, &issuer).unwrap().der().clone();
        Pki {
            server: (server_der, server_key.serialize_der()),
            ca_key,
            ca_params,
            ca_der,
        }
    }

    /// Writes a client certificate signed by this CA, the CA and the key
    /// (owner-only) into `dir`.
    pub fn client_files(&self, dir: &Path) -> ClientFiles {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "ops-agent");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let files = ClientFiles {
            dir: dir.to_path_buf(),
        };
        std::fs::write(files.ca(), pem("CERTIFICATE", &self.ca_der)).unwrap();
        std::fs::write(files.cert(), pem("CERTIFICATE", cert.der())).unwrap();
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(files.key())
                .unwrap();
            std::io::Write::write_all(&mut f, pem("PRIVATE KEY", &key.serialize_der()).as_bytes())
                .unwrap();
        }
        files
    }

    /// A rustls server config with this CA's server certificate that
    /// accepts only clients with a certificate from this CA.
    pub fn server_config(&self) -> ServerConfig {
        let provider = Arc::new(crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier = Arc::new(LikeDockerd(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap(),
        ));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.1.clone()));
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.0.clone(), self.ca_der.clone()], key)
            .unwrap()
    }
}

/// dockerd (Go's crypto/tls) answers a client certificate it cannot
/// verify with the `bad_certificate` alert, where rustls would send
/// `unknown_ca`: the fake engine refuses the way the real one does, so the
/// agent's message is tested against what an operator really meets.
#[derive(Debug)]
struct LikeDockerd(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LikeDockerd {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // BadEncoding is the certificate error rustls answers with
        // `bad_certificate`.
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[test]
fn pem_armour_is_base64_in_lines_of_64() {
    let text = pem("X", b"Man");
    assert_eq!(text, "-----BEGIN X-----\nTWFu\n-----END X-----\n");
    assert!(pem("X", b"Ma").contains("\nTWE=\n") && pem("X", b"M").contains("\nTQ==\n"));
}
