//! TLS settings of the demo: PEM files, or a self-signed pair in development.

use palisade::core::Profile;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Settings;

pub(crate) fn server_config(
    settings: &Settings,
) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let (certs, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key)?;
            (certs, key)
        }
        (None, None) if settings.profile == Profile::Development => {
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                settings.admin_hostname.clone(),
            ];
            names.extend(settings.public_host.clone());
            let pair = rcgen::generate_simple_self_signed(names)?;
            eprintln!(
                "hardened_api: no PALISADE_DEMO_TLS_CERT/KEY; using a self-signed development certificate"
            );
            let key = PrivateKeyDer::try_from(pair.signing_key.serialize_der())?;
            (vec![pair.cert.der().clone()], key)
        }
        (None, None) => {
            return Err(
                "PALISADE_DEMO_TLS_CERT and PALISADE_DEMO_TLS_KEY are required in production"
                    .into(),
            );
        }
        _ => {
            return Err(
                "set both PALISADE_DEMO_TLS_CERT and PALISADE_DEMO_TLS_KEY, or neither".into(),
            );
        }
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
