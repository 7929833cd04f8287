//! TLS for the relay connections: the policy, the implicit-TLS handshake and the private CA.
//!
//! Owns [`Security`], decided once from `transport.smtp.tls`: STARTTLS required (a relay that does
//! not offer it is refused, never a plain fallback), implicit TLS, or plain for a loopback relay. The
//! implicit-TLS handshake is done here with tokio-rustls (the same rustls lettre uses) because
//! lettre's own implicit-TLS connect opens a socket the pool cannot reach to set `TCP_NODELAY` (see
//! [`super::SmtpPool`]). Both modes trust Mozilla's roots plus the private CA of
//! `transport.smtp.ca_file`; a CA file that cannot be read or holds no certificate is a
//! configuration error naming the setting.

use std::sync::Arc;

use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::SmtpFailure;
use crate::config::{SmtpSettings, SmtpTls};

/// How the pool's connections are secured, decided once from `transport.smtp.tls`.
pub(super) enum Security {
    /// Plain SMTP (a loopback relay, or `allow_insecure`).
    Plain,
    /// STARTTLS, required: a relay that does not offer it is an error, never a plain fallback.
    Starttls(TlsParameters),
    /// TLS from the first byte; the handshake is done here (see the module header).
    Implicit(tokio_rustls::TlsConnector),
}

impl Security {
    /// The policy `transport.smtp.tls` asks for, with its certificates loaded.
    pub(super) fn from_settings(s: &SmtpSettings) -> anyhow::Result<Self> {
        Ok(match s.tls {
            SmtpTls::Starttls => Security::Starttls(starttls_parameters(s)?),
            SmtpTls::Implicit => Security::Implicit(implicit_tls_connector(s)?),
            SmtpTls::None => Security::Plain,
        })
    }

    /// Greets the relay over `stream` and secures the connection as the policy says.
    pub(super) async fn open(
        &self,
        stream: tokio::net::TcpStream,
        host: &str,
        hello: &ClientId,
    ) -> Result<AsyncSmtpConnection, SmtpFailure> {
        Ok(match self {
            Security::Implicit(connector) => {
                let name = server_name(host).map_err(SmtpFailure::Tls)?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(SmtpFailure::Tls)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(stream)), hello)
                    .await?
            }
            Security::Starttls(params) => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello).await?;
                conn.starttls(params.clone(), hello).await?;
                conn
            }
            Security::Plain => {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), hello).await?
            }
        })
    }
}

/// lettre's STARTTLS parameters: its roots (`webpki-roots`) plus the private CA of `ca_file`.
fn starttls_parameters(s: &SmtpSettings) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(s.host.clone());
    if let Some(ca) = &s.ca_file {
        let pem = read_ca_file(ca)?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| ca_error(ca, format!("not a PEM certificate ({e})")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("TLS set-up for {}: {e}", s.host))
}

/// The rustls client configuration for implicit TLS: Mozilla's roots (as lettre's `webpki-roots`
/// feature gives STARTTLS) plus the private CA of `ca_file`, TLS 1.2 and 1.3.
fn implicit_tls_connector(s: &SmtpSettings) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = &s.ca_file {
        add_private_ca(&mut roots, ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS set-up for {}: {e}", s.host))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Adds every certificate of the PEM file `ca` to `roots`; none at all is an error.
fn add_private_ca(roots: &mut rustls::RootCertStore, ca: &std::path::Path) -> anyhow::Result<()> {
    let pem = read_ca_file(ca)?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ca_error(ca, format!("not a PEM certificate ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| ca_error(ca, format!("not a usable CA certificate ({e})")))?;
        added += 1;
    }
    if added == 0 {
        return Err(ca_error(ca, "no PEM certificate in it"));
    }
    Ok(())
}

/// The bytes of `transport.smtp.ca_file`, or an error naming the setting.
fn read_ca_file(ca: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(ca).map_err(|e| ca_error(ca, format!("cannot read it ({e})")))
}

/// A problem with `transport.smtp.ca_file`, named as the setting and the file.
fn ca_error(ca: &std::path::Path, problem: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("transport.smtp.ca_file {}: {problem}", ca.display())
}

fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
    })
}

/// An implicit-TLS stream in the shape lettre takes for a transport it did not open.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl lettre::transport::smtp::client::AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
