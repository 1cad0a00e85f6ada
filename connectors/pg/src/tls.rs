//! TLS as libpq's `sslmode` defines it, over rustls with the ring provider.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_api::ConnectError;

/// libpq's `sslmode` (`allow` is not supported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    /// libpq's default.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked, unless a root certificate is
    /// given: then as `verify-ca` (as libpq does).
    Require,
    /// TLS, and the server's certificate must chain to the root certificate
    /// (`sslrootcert`, or the system's roots when none is given).
    VerifyCa,
    /// As `verify-ca`, and the certificate must also be valid for the host name connected
    /// to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: it knows whether to ask for TLS, not how to check it.
    pub(crate) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(text: &str) -> Result<SslMode, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(format!(
                "sslmode \"{text}\" is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }
}

/// Where the root certificates come from, and the config key that named them (for
/// error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCert {
    /// A PEM file, or `system` for the system's roots (as libpq 16 spells it).
    pub path: String,
    pub key: &'static str,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls config for a mode; `None` for `disable`.
pub(crate) fn client_config(
    mode: SslMode,
    root: Option<&RootCert>,
) -> Result<Option<ClientConfig>, ConnectError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::fatal(format!("PostgreSQL TLS setup: {e}")))?;
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostCheck {
                roots: None,
                algorithms,
            }))
            .with_no_client_auth(),
        SslMode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostCheck {
                roots: Some(Arc::new(load_roots(mode, root)?)),
                algorithms,
            }))
            .with_no_client_auth(),
        SslMode::VerifyFull => builder
            .with_root_certificates(load_roots(mode, root)?)
            .with_no_client_auth(),
    };
    Ok(Some(config))
}

fn load_roots(mode: SslMode, root: Option<&RootCert>) -> Result<RootCertStore, ConnectError> {
    let mut roots = RootCertStore::empty();
    match root.filter(|r| r.path != "system") {
        Some(RootCert { path, key }) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                ConnectError::config(format!("{key}: cannot read sslrootcert {path}: {e}"))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    ConnectError::config(format!("{key}: sslrootcert {path} is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ConnectError::config(format!(
                        "{key}: sslrootcert {path} holds an unusable certificate: {e}"
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(ConnectError::config(format!(
                    "{key}: sslrootcert {path} holds no PEM certificate"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (_, rejected) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(ConnectError::config(format!(
                    "sslmode={mode} needs root certificates: set connection.sslrootcert (no \
                     system root certificates were found: {} error(s), {rejected} unusable)",
                    found.errors.len()
                )));
            }
        }
    }
    Ok(roots)
}

/// The verifier of the modes that never compare the host name (libpq's behaviour):
/// `prefer` and `require` (`roots: None`) take any certificate, `verify-ca` needs a chain to
/// a trusted root. The handshake signatures are checked in every mode, so the peer holds
/// the certificate's key.
#[derive(Debug)]
struct NoHostCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoHostCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_parse_like_libpq() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("VERIFY-FULL", SslMode::VerifyFull),
        ] {
            assert_eq!(text.parse::<SslMode>(), Ok(mode));
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
        assert_eq!(SslMode::default(), SslMode::Prefer);
        let err = "allow".parse::<SslMode>().unwrap_err();
        assert!(
            err.contains("sslmode") && err.contains("verify-full"),
            "{err}"
        );
        let mode: SslMode = serde_json::from_value(serde_json::json!("verify-ca")).unwrap();
        assert_eq!(mode, SslMode::VerifyCa);
    }

    #[test]
    fn configs_per_mode() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
        assert!(client_config(SslMode::Prefer, None).unwrap().is_some());
        assert!(client_config(SslMode::Require, None).unwrap().is_some());
        let missing = RootCert {
            path: "/nonexistent/ca.pem".to_string(),
            key: "connection.sslrootcert",
        };
        let err = client_config(SslMode::VerifyFull, Some(&missing)).unwrap_err();
        assert_eq!(err.kind(), sluice_api::ErrorKind::Config);
        assert!(
            err.message().contains("connection.sslrootcert")
                && err.message().contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let root = RootCert {
            path: empty.display().to_string(),
            key: "connection.url",
        };
        let err = client_config(SslMode::VerifyCa, Some(&root)).unwrap_err();
        assert!(err.message().contains("no PEM certificate"), "{err}");
    }
}
