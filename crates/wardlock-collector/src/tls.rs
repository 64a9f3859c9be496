//! TLS for the API: the operator's certificate and key, or in `--dev` a self-signed one
//! made on the spot for localhost (its PEM is written out for the agents to trust).

use std::path::Path;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS set-up: {0}")]
    Config(String),
}

/// Makes the process use `ring` for TLS (one crypto provider for server and clients).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<ServerConfig, TlsError> {
    let file_err = |path: &Path, why: String| TlsError::File { path: path.display().to_string(), why };
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| file_err(cert_pem, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert_pem, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(cert_pem, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| file_err(key_pem, e.to_string()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as `cert.pem` and
/// `key.pem` (0600) into `dir` unless they exist.
pub fn dev_certificate(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .map_err(|e| TlsError::Config(e.to_string()))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| TlsError::File { path: dir.display().to_string(), why: e.to_string() })?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, generated.cert.pem())
        .map_err(|e| TlsError::File { path: cert_path.display().to_string(), why: e.to_string() })?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| TlsError::File { path: path.display().to_string(), why: e.to_string() })?;
    file.write_all(bytes).map_err(|e| TlsError::File { path: path.display().to_string(), why: e.to_string() })
}
