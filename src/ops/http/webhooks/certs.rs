//! The certificates Amazon SNS signs its messages with, and where they may come from.
//!
//! An SNS message names its signing certificate by URL (`SigningCertURL`). Taking any URL on trust is
//! the classic SNS forgery: an attacker signs with a key of their own and points at a certificate on
//! their own server. So the URL is checked first, whatever the source: `https`, host
//! `sns.<region>.amazonaws.com` (or `.com.cn`), no port, no user, no query, a path ending in `.pem`
//! ([`check_cert_url`]). Then the certificate comes from a [`CertificateSource`]:
//!
//! - [`CertificateSource::Pinned`]: PEM files configured ahead, looked up by the full URL or by its
//!   file name (`SimpleNotificationService-<hash>.pem`). No network at run time; tests use it with
//!   locally made keys.
//! - [`CertificateSource::Fetch`]: downloaded over HTTPS from that SNS host (Mozilla's roots through
//!   the same rustls the relay uses), kept in memory. The client is hyper's own HTTP/1 connection over
//!   tokio-rustls: the server side already brings hyper, its `client` feature adds two small crates,
//!   where a general client (reqwest) would add a connection pool, cookies and redirects this does not
//!   want. Redirects are not followed.
//!
//! The certificate is read with `x509-cert` (typed DER, RustCrypto); its RSA key is checked with ring,
//! and its validity period against the caller's clock. Its chain is not checked: its authenticity
//! comes from where it was fetched (TLS to an SNS host) or from who configured it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use ring::signature::{RsaParameters, UnparsedPublicKey};
use tokio_rustls::rustls;
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem};

use super::Rejected;

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// A signing certificate is about 2 KB; anything much larger is not one.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// The longest one download (connect, TLS, request, body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Certificates kept in memory; SNS uses a handful per region, so the cache is emptied when full.
const MAX_CACHED: usize = 64;

/// An SNS signing certificate's RSA key and validity period.
#[derive(Debug, Clone)]
pub struct SigningCertificate {
    /// DER `RSAPublicKey` (PKCS#1), as ring takes it.
    rsa_public_key: Vec<u8>,
    /// Validity, Unix seconds.
    not_before: i64,
    not_after: i64,
}

impl SigningCertificate {
    /// From a PEM `CERTIFICATE`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_pem(pem).map_err(|e| format!("not a PEM certificate ({e})"))?;
        Self::from_certificate(&cert)
    }

    /// From a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not a DER certificate ({e})"))?;
        Self::from_certificate(&cert)
    }

    fn from_certificate(cert: &Certificate) -> Result<Self, String> {
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(format!("key algorithm {} is not RSA", spki.algorithm.oid));
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the RSA key is not a whole number of bytes")?;
        let seconds = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        Ok(SigningCertificate {
            rsa_public_key: key.to_vec(),
            not_before: seconds(&tbs.validity.not_before),
            not_after: seconds(&tbs.validity.not_after),
        })
    }

    /// Checks `signature` over `message` with this key, and that `now` is within the validity.
    pub fn verify(
        &self,
        algorithm: &'static RsaParameters,
        message: &[u8],
        signature: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Rejected> {
        let now = now.timestamp();
        if now < self.not_before || now > self.not_after {
            return Err(Rejected::CertificateInvalid(
                "outside its validity period".into(),
            ));
        }
        UnparsedPublicKey::new(algorithm, &self.rsa_public_key)
            .verify(message, signature)
            .map_err(|_| Rejected::BadSignature)
    }
}

/// A `SigningCertURL` that passed [`check_cert_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUrl {
    pub host: String,
    /// From the first `/`.
    pub path: String,
}

impl CertUrl {
    /// The last path segment (`SimpleNotificationService-<hash>.pem`).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// Accepts only `https://sns.<region>.amazonaws.com[.cn]/….pem`, written plainly (no port, user,
/// query, fragment, escapes or backslashes).
pub fn check_cert_url(url: &str) -> Result<CertUrl, Rejected> {
    // Quoted and cut: the URL is the sender's text, and may end up in a log line.
    let refuse =
        || Rejected::CertificateUrl(format!("{:?}", url.chars().take(200).collect::<String>()));
    let rest = url.strip_prefix("https://").ok_or_else(refuse)?;
    let (host, path) = rest.split_at(rest.find('/').ok_or_else(refuse)?);
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
    };
    if !plain(host) || !plain(path) || !path.ends_with(".pem") || path.contains("/.") {
        return Err(refuse());
    }
    let region = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
        .and_then(|h| h.strip_prefix("sns."))
        .ok_or_else(refuse)?;
    let label_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !label_ok {
        return Err(refuse());
    }
    Ok(CertUrl {
        host: host.to_string(),
        path: path.to_string(),
    })
}

/// Where signing certificates come from (module header).
pub enum CertificateSource {
    /// Configured PEM files, by URL or file name.
    Pinned(HashMap<String, Arc<SigningCertificate>>),
    /// Downloaded from SNS over HTTPS, cached.
    Fetch(Fetcher),
}

impl CertificateSource {
    /// Pinned certificates from PEM files, each known by its file name.
    pub fn pinned_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Self, String> {
        let mut pinned = HashMap::new();
        for file in files {
            let file = file.as_ref();
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("{}: no file name", file.display()))?;
            let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let cert = SigningCertificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            pinned.insert(name.to_string(), Arc::new(cert));
        }
        Ok(CertificateSource::Pinned(pinned))
    }

    /// Pinned certificates given as (URL or file name, PEM).
    pub fn pinned_pem<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, String> {
        let mut pinned = HashMap::new();
        for (key, pem) in entries {
            let cert = SigningCertificate::from_pem(pem).map_err(|e| format!("{key}: {e}"))?;
            pinned.insert(key.to_string(), Arc::new(cert));
        }
        Ok(CertificateSource::Pinned(pinned))
    }

    /// Fetching from SNS.
    pub fn fetch() -> Self {
        CertificateSource::Fetch(Fetcher::new())
    }

    /// The certificate of `url`, which is checked first (module header).
    pub async fn certificate(&self, url: &str) -> Result<Arc<SigningCertificate>, Rejected> {
        let checked = check_cert_url(url)?;
        match self {
            CertificateSource::Pinned(pinned) => pinned
                .get(url)
                .or_else(|| pinned.get(checked.file_name()))
                .cloned()
                .ok_or_else(|| {
                    Rejected::CertificateInvalid(format!(
                        "{} is not one of the pinned certificates",
                        checked.file_name()
                    ))
                }),
            CertificateSource::Fetch(fetcher) => fetcher.get(url, &checked).await,
        }
    }
}

/// Downloads and caches certificates (see [`CertificateSource::Fetch`]).
pub struct Fetcher {
    tls: tokio_rustls::TlsConnector,
    /// By URL. A std mutex: held only to look up or insert, never across an await.
    cache: Mutex<HashMap<String, Arc<SigningCertificate>>>,
}

impl Fetcher {
    fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Fetcher {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, url: &str, checked: &CertUrl) -> Result<Arc<SigningCertificate>, Rejected> {
        if let Some(cert) = self.cache.lock().expect("not poisoned").get(url) {
            return Ok(cert.clone());
        }
        let unavailable = |e: String| Rejected::CertificateUnavailable(format!("{url}: {e}"));
        let pem = tokio::time::timeout(FETCH_TIMEOUT, self.download(checked))
            .await
            .map_err(|_| unavailable(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))?
            .map_err(unavailable)?;
        let cert = Arc::new(
            SigningCertificate::from_pem(&pem)
                .map_err(|e| Rejected::CertificateInvalid(format!("{url}: {e}")))?,
        );
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(url.to_string(), cert.clone());
        Ok(cert)
    }

    /// One `GET` over a fresh TLS connection; the body of a 200, at most [`MAX_CERT_BYTES`].
    async fn download(&self, url: &CertUrl) -> Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), 443))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("host name: {e}"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let connection = tokio::spawn(connection);
        let request = axum::http::Request::get(url.path.as_str())
            .header(axum::http::header::HOST, url.host.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_CERT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        connection.abort();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_certificate_urls_are_accepted() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
            "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/a/b/SimpleNotificationService-abc.pem",
        ] {
            let url = check_cert_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert!(url.file_name().starts_with("SimpleNotificationService-"));
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://evil.example.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://s3.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns..amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.evil.example.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
            "https://sns.us-east-1.amazonaws.com/../x.pem",
            "https://sns.us-east-1.amazonaws.com/%2e%2e/x.pem",
            "https://SNS.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com",
            "",
        ] {
            assert!(
                matches!(check_cert_url(bad), Err(Rejected::CertificateUrl(_))),
                "{bad} must be refused"
            );
        }
    }

    #[tokio::test]
    async fn a_foreign_url_is_refused_before_any_lookup_or_fetch() {
        // Fetching is never attempted for a foreign host (there is no network in tests: an attempt
        // would fail as unavailable, not as refused).
        let source = CertificateSource::fetch();
        let err = source
            .certificate("https://evil.example.com/SimpleNotificationService-abc.pem")
            .await
            .unwrap_err();
        assert!(matches!(err, Rejected::CertificateUrl(_)), "{err}");
        assert_eq!(err.status(), axum::http::StatusCode::FORBIDDEN);
    }
}
