//! TLS for `https://` targets: rustls with the `ring` provider, trusting the
//! webpki roots, the system's certificates and `--tls-ca`, or nothing with
//! `--insecure-skip-tls-verify` (k6's flags). ALPN offers HTTP/1.1 only, SNI
//! is the target's host name. One client configuration serves every VU, so
//! a VU that reconnects resumes its TLS session from the shared cache.
//!
//! A certificate the client rejects becomes a [`TlsFailure`]: the `error`
//! tag of the request and, in setup, the reason on the exit-107 line.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The TLS flags of a run, resolved: `--tls-ca`'s certificates are read
/// while the plan is checked, so an unreadable file is an invalid option.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub insecure_skip_verify: bool,
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl TlsOptions {
    /// Reads the PEM certificates of `ca_file`; the error is one line.
    pub fn new(insecure_skip_verify: bool, ca_file: Option<&Path>) -> Result<TlsOptions, String> {
        let extra_roots = match ca_file {
            None => Vec::new(),
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!("{} holds no PEM certificate", path.display()));
                }
                certs
            }
        };
        Ok(TlsOptions {
            insecure_skip_verify,
            extra_roots,
        })
    }

    /// The client configuration for these options.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let mut config = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// webpki's roots, the system's (unreadable ones skipped, as Go does)
    /// and `--tls-ca`.
    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| format!("invalid --tls-ca certificate: {e}"))?;
        }
        Ok(roots)
    }
}

/// The name the client sends as SNI and checks the certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a valid TLS name"))
}

/// Why a TLS handshake failed, as far as the run reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    UnknownIssuer,
    NameMismatch,
    Expired,
    /// Another certificate problem (not yet valid, revoked, bad signature…).
    BadCertificate,
    /// The handshake failed for a reason other than the certificate.
    Handshake,
}

impl TlsFailure {
    /// Classifies the error a handshake ended with, `None` when it is not
    /// TLS's (an I/O error of the socket).
    pub fn of(error: &std::io::Error) -> Option<TlsFailure> {
        let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                _ => TlsFailure::BadCertificate,
            },
            _ => TlsFailure::Handshake,
        })
    }

    /// The `error` tag of a request that failed this way.
    pub fn as_tag(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "tls: certificate signed by unknown authority",
            TlsFailure::NameMismatch => "tls: certificate is not valid for the host name",
            TlsFailure::Expired => "tls: certificate has expired",
            TlsFailure::BadCertificate => "tls: certificate rejected",
            TlsFailure::Handshake => "tls handshake failed",
        }
    }

    /// Whether `--insecure-skip-tls-verify` would have let it through.
    pub fn is_certificate(self) -> bool {
        self != TlsFailure::Handshake
    }

    /// The reason on the setup error line.
    pub fn reason(self) -> &'static str {
        match self {
            TlsFailure::UnknownIssuer => "unknown issuer (not signed by a trusted CA)",
            TlsFailure::NameMismatch => "name mismatch (the certificate is for another host)",
            TlsFailure::Expired => "expired",
            TlsFailure::BadCertificate => "invalid certificate",
            TlsFailure::Handshake => "handshake failed",
        }
    }
}

/// `--insecure-skip-tls-verify`: any certificate chain and name, while the
/// handshake's signatures are still checked (the session stays encrypted
/// to whoever holds the presented key).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_classified() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cert = |e| io(rustls::Error::InvalidCertificate(e));
        assert_eq!(
            TlsFailure::of(&cert(CertificateError::UnknownIssuer)),
            Some(TlsFailure::UnknownIssuer)
        );
        assert_eq!(
            TlsFailure::of(&cert(CertificateError::NotValidForName)),
            Some(TlsFailure::NameMismatch)
        );
        assert_eq!(
            TlsFailure::of(&cert(CertificateError::Expired)),
            Some(TlsFailure::Expired)
        );
        assert_eq!(
            TlsFailure::of(&cert(CertificateError::Revoked)),
            Some(TlsFailure::BadCertificate)
        );
        assert_eq!(
            TlsFailure::of(&io(rustls::Error::HandshakeNotComplete)),
            Some(TlsFailure::Handshake)
        );
        assert_eq!(
            TlsFailure::of(&std::io::ErrorKind::ConnectionReset.into()),
            None
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let error = TlsOptions::new(false, Some(file.path())).unwrap_err();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        assert!(TlsOptions::new(false, Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
