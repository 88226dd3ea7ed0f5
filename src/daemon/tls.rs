//! Mutual TLS for the daemon's `tcp://` hosts, as dockerd's `--tlsverify`:
//! the daemon proves itself with `--tlscert`/`--tlskey`, and a client
//! without a certificate signed by `--tlscacert` is refused at the
//! handshake. Plain TCP is never served: a TCP socket reaches further than
//! the Unix socket's private directory, and the API is the daemon's whole
//! authority.

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a client has to finish the handshake after connecting; until
/// then it holds one of the connection slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of mutual TLS: `cert` (a PEM chain, the daemon's own
/// certificate first) with its `key`, accepting clients whose certificate
/// chains to one of the PEM certificates in `ca`.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    // The provider rustls is already built with (wasmtime-wasi-http's), named
    // rather than left to the process default, which no one installs.
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in certificates(ca, "--tlscacert")? {
        roots.add(ca_cert).with_context(|| {
            format!(
                "--tlscacert `{}` holds an unusable CA certificate",
                ca.display()
            )
        })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .with_context(|| format!("--tlscacert `{}` cannot verify clients", ca.display()))?;

    let chain = certificates(cert, "--tlscert")?;
    let private_key = read(key, "--tlskey").and_then(|pem| {
        PrivateKeyDer::from_pem_slice(&pem)
            .with_context(|| format!("--tlskey `{}` holds no PEM private key", key.display()))
    })?;

    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS library offers no protocol version")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                "--tlskey `{}` does not match the certificate in --tlscert `{}`",
                key.display(),
                cert.display()
            ),
            other => anyhow::Error::new(other).context(format!(
                "--tlscert `{}` with --tlskey `{}` is unusable",
                cert.display(),
                key.display()
            )),
        })
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("failed to read {flag} `{}`", path.display()))
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} `{}` is not a PEM file", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} `{}` holds no PEM certificate", path.display());
    }
    Ok(certs)
}
