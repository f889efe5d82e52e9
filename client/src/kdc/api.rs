//! The KDC's wire format: paths, JSON bodies and error codes, shared by the server (here)
//! and the subscriber SDK's client, so both sides always agree. Documented in
//! `docs/PROTOCOL.md`, section "Key distribution center".

use serde::{Deserialize, Serialize};

/// Path (under the KDC address) where readers log in, with `POST`.
pub const LOGIN_PATH: &str = "/login";
/// Path prefix (under the KDC address) of the content keys: `GET <address>/epochs/<E>`.
pub const EPOCHS_PATH: &str = "/epochs/";
/// Largest request body the KDC reads; larger requests are refused unread.
pub const MAX_REQUEST_BODY: usize = 4096;
/// Largest response body the client reads.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Longest reader id accepted at login.
pub const MAX_READER_LEN: usize = 128;
/// Longest password accepted at login (argon2 would take any length; this bounds work).
pub const MAX_PASSWORD_LEN: usize = 256;

/// `POST <address>/login` body.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The reader id the publisher issued.
    pub reader: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

/// `200 OK` answer to a login.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Opaque bearer token for `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `"Bearer"`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `200 OK` answer to `GET <address>/epochs/<E>`.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyResponse {
    /// The publisher whose key this is.
    pub publisher: String,
    /// The key epoch.
    pub epoch: u64,
    /// The 32-byte AES-256 content key, base64url without padding.
    pub key: String,
    /// The publisher's certificate (DER, standard base64), so a subscriber can verify
    /// envelopes that do not embed it.
    pub certificate: String,
}

impl std::fmt::Debug for KeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyResponse")
            .field("publisher", &self.publisher)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code, one of [`ErrorCode`].
    pub error: String,
    /// A human-readable explanation (never contains secrets).
    pub message: String,
}

/// The error codes of the KDC API and their HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: unparsable body, bad epoch number, oversized fields.
    BadRequest,
    /// 401 at login: unknown reader or wrong password (deliberately not told apart).
    InvalidCredentials,
    /// 403 at login: the password is right but the publisher revoked this reader.
    Revoked,
    /// 429: too many failed logins from this address or for this reader.
    RateLimited,
    /// 401 at key fetch: missing, unknown or invalidated token (log in again).
    InvalidToken,
    /// 401 at key fetch: the token has expired (log in again).
    TokenExpired,
    /// 403 at key fetch: the reader was granted after this epoch.
    NotGranted,
    /// 404 at key fetch: the publisher no longer keeps (or never had) this epoch.
    UnknownEpoch,
    /// 404: no such endpoint.
    NotFound,
    /// 405: wrong method for the endpoint.
    MethodNotAllowed,
    /// 413: request body too large.
    TooLarge,
    /// 500: the KDC failed (e.g. could not read its reader file).
    Internal,
}

impl ErrorCode {
    /// Every code, for parsing.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidCredentials,
        ErrorCode::Revoked,
        ErrorCode::RateLimited,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::NotGranted,
        ErrorCode::UnknownEpoch,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::TooLarge,
        ErrorCode::Internal,
    ];

    /// The code's wire form, e.g. `"invalid_credentials"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Revoked => "revoked",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::NotGranted => "not_granted",
            ErrorCode::UnknownEpoch => "unknown_epoch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses [`ErrorCode::as_str`].
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::InvalidCredentials | ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
                401
            }
            ErrorCode::Revoked | ErrorCode::NotGranted => 403,
            ErrorCode::UnknownEpoch | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A KDC address taken apart: `https://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdcAddress {
    /// The normalised address (no trailing slash), as it appears in key indexes.
    pub url: String,
    /// Host name or IP (IPv6 without brackets), checked against the server certificate.
    pub host: String,
    /// TCP port (443 unless given).
    pub port: u16,
    /// Path prefix of every endpoint, `""` or `/something` without a trailing slash.
    pub prefix: String,
}

/// Why a KDC address is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KDC address {address:?}: {reason}")]
pub struct InvalidAddress {
    /// The address given.
    pub address: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl KdcAddress {
    /// Parses and normalises an address. Only `https://` is accepted: keys never travel
    /// in the clear, and there is deliberately no switch to allow plain HTTP.
    pub fn parse(address: &str) -> Result<KdcAddress, InvalidAddress> {
        let bad = |reason| InvalidAddress {
            address: address.to_owned(),
            reason,
        };
        let uri: http::Uri = address.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => return Err(bad("plain http is refused: the KDC is HTTPS only")),
            _ => return Err(bad("the scheme must be https")),
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(443);
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let host_part = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(KdcAddress {
            url: format!("https://{host_part}:{port}{prefix}"),
            host,
            port,
            prefix,
        })
    }

    /// The path of the login endpoint.
    pub fn login_path(&self) -> String {
        format!("{}{LOGIN_PATH}", self.prefix)
    }

    /// The path of the key of `epoch`.
    pub fn epoch_path(&self, epoch: u64) -> String {
        format!("{}{EPOCHS_PATH}{epoch}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_https_only() {
        let a = KdcAddress::parse("https://kdc.example/pub1/").unwrap();
        assert_eq!(a.url, "https://kdc.example:443/pub1");
        assert_eq!(a.epoch_path(7), "/pub1/epochs/7");
        let b = KdcAddress::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(b.url, "https://127.0.0.1:8443");
        assert_eq!(b.login_path(), "/login");
        let c = KdcAddress::parse("https://[::1]:9000/k").unwrap();
        assert_eq!(
            (c.host.as_str(), c.url.as_str()),
            ("::1", "https://[::1]:9000/k")
        );
        assert!(KdcAddress::parse("http://127.0.0.1:8443").is_err());
        assert!(KdcAddress::parse("ftp://x").is_err());
        assert!(KdcAddress::parse("https://u:p@x").is_err());
        assert!(KdcAddress::parse("https://x/?a=1").is_err());
    }

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
