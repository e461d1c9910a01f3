//! TLS material of the mock eTelecom: a throwaway CA and a `localhost` /
//! `127.0.0.1` / `::1` leaf certificate signed by it (rcgen, ring), and the
//! rustls server config (ring provider, no global default, ALPN h2 + http/1.1).

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A generated CA (PEM, to be trusted by clients) and a server config using
/// a leaf certificate it signed.
pub(super) struct TlsMaterial {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

fn rc_err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("mock TLS certificate generation failed: {e}"))
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
}

/// Generates a fresh CA and leaf and builds the server config.
pub(super) fn generate() -> io::Result<TlsMaterial> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "etelecom-gateway mock CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut ca_params);
    let ca_key = KeyPair::generate().map_err(rc_err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rc_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut leaf_params = CertificateParams::new(names).map_err(rc_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut leaf_params);
    let leaf_key = KeyPair::generate().map_err(rc_err)?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).map_err(rc_err)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
