//! The TLS acceptor for `turns:` (certificate loading lives in `concord_svc::tls`).

use std::path::Path;
use std::sync::Arc;

pub use concord_svc::tls::{TlsError, install_crypto_provider};
use tokio_rustls::TlsAcceptor;

pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = concord_svc::tls::server_config(cert, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
