//! CORS for the KDC, so that a web page can log in and fetch keys (issue 17, item 3).
//!
//! Only origins the operator configured (`--kdc-allow-origin`, [`KdcConfig::allowed_origins`])
//! get CORS headers, and then only their own origin echoed back: never `*`, and never
//! `Access-Control-Allow-Credentials` (the KDC uses no cookies; the bearer token travels in
//! the `Authorization` header the page sets itself). A preflight from any other origin gets
//! the ordinary answer to `OPTIONS` (405 `method_not_allowed`) without CORS headers, which
//! the browser treats as a refusal. With no origins configured, nothing changes.
//!
//! [`KdcConfig::allowed_origins`]: super::KdcConfig::allowed_origins

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::KdcError;

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";
/// The methods the KDC's two endpoints use.
const ALLOWED_METHODS: &str = "GET, POST";
/// The request headers a page needs: the JSON body and the bearer token.
const ALLOWED_HEADERS: &str = "authorization, content-type";

/// The configured origins, normalised (`scheme://host[:port]`, lower case).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// Validates the configured origins: `http://` or `https://`, a host, an optional
    /// port, nothing else (no path, no user info, no wildcard, not `null`).
    pub(crate) fn new(origins: &[String]) -> Result<Cors, KdcError> {
        let origins = origins
            .iter()
            .map(|o| normalise(o).ok_or_else(|| KdcError::InvalidOrigin(o.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cors { origins })
    }

    /// The request's `Origin` if it is one of the configured ones.
    pub(crate) fn allowed_origin<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        if self.origins.is_empty() {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins.contains(&text).then(|| origin.clone())
    }

    /// The answer to a CORS preflight from a configured origin; `None` for any other
    /// request (which is then handled as usual).
    pub(crate) fn preflight<B, T: Default>(&self, req: &Request<B>) -> Option<Response<T>> {
        if req.method() != Method::OPTIONS
            || !req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = self.allowed_origin(req)?;
        let mut r = Response::new(T::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(r)
    }

    /// Adds the CORS headers for `origin` (from [`Cors::allowed_origin`]) to an answer.
    pub(crate) fn decorate<T>(&self, answer: &mut Response<T>, origin: Option<HeaderValue>) {
        if self.origins.is_empty() {
            return;
        }
        let h = answer.headers_mut();
        // The answer depends on the Origin header, whether or not this one is allowed.
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }
}

/// `scheme://host[:port]` in lower case, or `None` if `origin` is not of that form.
fn normalise(origin: &str) -> Option<String> {
    let lower = origin.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))?;
    // A port is what follows the last ':' if that is all digits (so "[::1]" has none).
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    (host_ok && port_ok).then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://app.example",
            "http://127.0.0.1:8080",
            "HTTPS://App.Example:443",
        ] {
            assert!(normalise(good).is_some(), "{good}");
        }
        for bad in [
            "*",
            "null",
            "https://",
            "https://app.example/",
            "https://app.example/path",
            "https://user@app.example",
            "ftp://app.example",
            "https://*.example",
            "https://app.example:99999",
            "https://app.example:",
        ] {
            assert!(normalise(bad).is_none(), "{bad}");
            assert!(Cors::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
