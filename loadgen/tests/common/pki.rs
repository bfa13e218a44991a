//! Certificates made for a test: a CA and the leaves it signs, and
//! self-signed leaves no CA vouches for.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// A CA made for the test and certificates it signs.
pub struct Pki {
    ca_key: KeyPair,
    ca: rcgen::Certificate,
    /// A temp dir of the test's own, which holds the CA's PEM file.
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "loadgen test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca_key,
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The CA's certificate as a PEM file, for `--tls-ca`.
    pub fn ca_file(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }

    /// A leaf for `names`, signed by the CA; `expired` puts it in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Arc<CertifiedKey> {
        let (cert, key) = self.signed(names, expired);
        certified(cert, key)
    }

    /// A current leaf for `names` as rustls's `with_single_cert` takes it.
    pub fn leaf_chain(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.signed(names, false);
        (vec![cert], private_key(&key))
    }

    fn signed(&self, names: &[&str], expired: bool) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.der().clone(), key)
    }
}

/// A self-signed leaf no CA of the run vouches for.
pub fn self_signed(names: &[&str]) -> Arc<CertifiedKey> {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.self_signed(&key).unwrap();
    certified(cert.der().clone(), key)
}

fn certified(cert: CertificateDer<'static>, key: KeyPair) -> Arc<CertifiedKey> {
    let signing = rustls::crypto::ring::sign::any_supported_type(&private_key(&key)).unwrap();
    Arc::new(CertifiedKey::new(vec![cert], signing))
}

fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}
