//! TLS to PostgreSQL on rustls (ring), the stack the HTTP side already uses:
//! one rustls `ClientConfig` per `sslmode`, with verifiers for libpq's three
//! levels (nothing, the chain, the chain and the host name). Channel binding
//! (SCRAM-SHA-256-PLUS) comes from tokio-postgres-rustls.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::connect::{RootCerts, SslMode, TlsOptions};
use crate::error::Error;

/// The rustls connector for `options`, or `None` for `sslmode=disable`.
pub(crate) fn connector(options: &TlsOptions) -> Result<Option<MakeRustlsConnect>, Error> {
    if options.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    let verifier = verifier(options, provider)?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert, "sslcert")?, read_key(key)?)
            .map_err(|e| Error::Config(format!("sslcert/sslkey are not a usable pair: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Config("sslcert and sslkey go together".into())),
    };
    // PostgreSQL 17's direct TLS negotiation requires it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// libpq: `verify-*` and `require` with a root certificate check the chain;
/// `verify-full` also the name; otherwise the server is not authenticated.
fn verifier(
    options: &TlsOptions,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let algorithms = provider.signature_verification_algorithms;
    let roots = match (&options.root_certs, options.mode) {
        (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(Error::Config(
                "sslmode=verify-ca and verify-full need sslrootcert (a PEM file, or `system`)"
                    .into(),
            ));
        }
        (None, _) => return Ok(Arc::new(Unverified { algorithms })),
        (Some(roots), _) => root_store(roots)?,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Config(format!("sslrootcert: {e}")))?;
    Ok(Arc::new(Verified {
        webpki,
        check_name: options.mode == SslMode::VerifyFull,
    }))
}

fn root_store(roots: &RootCerts) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    let certs = match roots {
        RootCerts::File(path) => read_certs(path, "sslrootcert")?,
        RootCerts::System => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Config(format!(
            "sslrootcert {roots:?} holds no usable certificate"
        )));
    }
    Ok(store)
}

fn read_certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let unreadable =
        |e: &dyn fmt::Display| Error::Config(format!("{what} {}: {e}", path.display()));
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect();
    let certs = certs.map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::Config(format!("sslkey {}: {e}", path.display())))
}

/// Checks the chain against the root certificates and, for verify-full, the
/// host name.
#[derive(Debug)]
struct Verified {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        match verdict {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// libpq's `prefer`/`require` without a root certificate: encrypted, the
/// server not authenticated (the handshake signature is still checked, so
/// the session is bound to the certificate shown, for channel binding).
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
