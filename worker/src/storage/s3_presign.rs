//! Presigned upload URLs signed here (AWS Signature Version 4, query form) instead of
//! through the SDK's operation pipeline.
//!
//! The SDK's `.presigned()` runs the whole request machinery for every URL (config
//! layering, interceptors, endpoint rules with bucket-name regexes, a request built only
//! to be taken apart): tens of microseconds and dozens of allocations each. An upload
//! session for a 10,000-object closure presigns more than 10,000 URLs, and that was most
//! of the worker's CPU for `POST /api/pending_closures`; even `aws-sigv4` alone, which
//! derives the signing key anew for every URL, left ~20 µs each. Here the signing key
//! is derived once a day and each URL costs one SHA-256 and one HMAC.
//!
//! The SDK still decides where URLs point: one URL it presigns for a probe key gives the
//! base (scheme, host, path-style or virtual-hosted bucket), so every endpoint the SDK
//! supports works the same way, and a test checks that both sign byte for byte alike.
//! Credentials come from the SDK's provider (static keys, environment, IRSA …) and are
//! kept until shortly before they expire.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (SigV4's rule).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same for a key in a URL path, where `/` separates segments and stays.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Key the SDK presigns once to reveal the URL base.
pub(crate) const PROBE_KEY: &str = "larder-presign-probe";
/// Credentials without an expiry are looked up again after this long anyway.
const RECHECK: Duration = Duration::from_secs(300);
/// Credentials are replaced this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// What signing needs for one day: the key derived for that day, region and S3, and the
/// query values that only change with the day or the credentials, already encoded.
#[derive(Debug)]
struct DayKeys {
    /// `YYYYMMDD`.
    day: String,
    key: [u8; 32],
    /// `{day}/{region}/s3/aws4_request`.
    scope: String,
    /// `X-Amz-Credential`'s value (`{access key}/{scope}`), percent-encoded.
    credential: String,
    /// `X-Amz-Security-Token`'s value, percent-encoded, for temporary credentials.
    token: Option<String>,
}

/// Credentials in use and what was derived from them for one day.
#[derive(Debug)]
struct Signer {
    credentials: Credentials,
    /// Until when the credentials are used without asking the provider again.
    until: SystemTime,
    day: Option<Arc<DayKeys>>,
}

/// Signs presigned S3 requests for one bucket.
#[derive(Debug)]
pub(crate) struct QuickPresigner {
    /// Everything before the object key, e.g. `http://127.0.0.1:3900/bucket/`.
    base: String,
    /// `host[:port]` of `base`, as the `host` header carries it.
    host: String,
    /// The path part of `base` (`/bucket/` or `/`).
    base_path: String,
    region: String,
    provider: SharedCredentialsProvider,
    signer: Mutex<Option<Signer>>,
}

impl QuickPresigner {
    /// A presigner whose URLs start like `probe_url` (the SDK's presigned URL for
    /// [`PROBE_KEY`]); `None` when that URL does not end in the probe key.
    pub(crate) fn new(
        probe_url: &str,
        region: String,
        provider: SharedCredentialsProvider,
    ) -> Option<Self> {
        let path_end = probe_url.find('?').unwrap_or(probe_url.len());
        let base = probe_url[..path_end].strip_suffix(PROBE_KEY)?;
        let (scheme, rest) = base.split_once("://")?;
        let slash = rest.find('/')?;
        let (authority, base_path) = rest.split_at(slash);
        // The host header leaves out the scheme's default port, as the SDK signs it.
        let host = match (scheme, authority.rsplit_once(':')) {
            ("http", Some((h, "80"))) | ("https", Some((h, "443"))) => h.to_string(),
            _ => authority.to_string(),
        };
        if authority.is_empty() || authority.contains('@') || !base_path.ends_with('/') {
            return None;
        }
        Some(Self {
            base: base.to_string(),
            host,
            base_path: base_path.to_string(),
            region,
            provider,
            signer: Mutex::new(None),
        })
    }

    /// What every URL signed here starts with, e.g. `http://127.0.0.1:3900/bucket/`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The keys for `now`'s day from the current credentials (derived once per day).
    async fn keys(&self, now: SystemTime, day: &str) -> Result<Arc<DayKeys>, String> {
        let mut guard = self.signer.lock().await;
        if guard.as_ref().is_none_or(|s| now >= s.until) {
            let credentials = self
                .provider
                .provide_credentials()
                .await
                .map_err(|e| format!("no credentials to sign with: {e}"))?;
            let until = credentials
                .expiry()
                .and_then(|e| e.checked_sub(EXPIRY_MARGIN))
                .map_or(now + RECHECK, |e| e.min(now + RECHECK));
            *guard = Some(Signer {
                credentials,
                until,
                day: None,
            });
        }
        let signer = guard
            .as_mut()
            .ok_or_else(|| "no credentials to sign with".to_string())?;
        if let Some(keys) = signer.day.as_ref().filter(|k| k.day == day) {
            return Ok(Arc::clone(keys));
        }
        let credentials = &signer.credentials;
        let secret = format!("AWS4{}", credentials.secret_access_key());
        let mut key = hmac(secret.as_bytes(), day.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let keys = Arc::new(DayKeys {
            day: day.to_string(),
            key,
            credential: encode(
                &format!("{}/{scope}", credentials.access_key_id()),
                UNRESERVED,
            )
            .into_owned(),
            token: credentials
                .session_token()
                .map(|t| encode(t, UNRESERVED).into_owned()),
            scope,
        });
        signer.day = Some(Arc::clone(&keys));
        Ok(keys)
    }

    /// A presigned `method` URL for `full_key` with extra query parameters (signed too)
    /// and headers the sender must send verbatim (lower-case names; signed).
    ///
    /// The read proxy signs one URL per uncached narinfo, so this builds the URL and
    /// hashes the canonical request without intermediate strings where it can.
    pub(crate) async fn presign(
        &self,
        method: &str,
        full_key: &str,
        query: &[(&str, &str)],
        headers: &[(String, String)],
        expires: Duration,
        now: SystemTime,
    ) -> Result<String, String> {
        let stamp = time::OffsetDateTime::from(now);
        // `YYYYMMDDTHHMMSSZ`; its first eight characters are the day.
        let mut date_time = String::with_capacity(16);
        push_digits(&mut date_time, u32::try_from(stamp.year()).unwrap_or(0), 4);
        push_digits(&mut date_time, u32::from(u8::from(stamp.month())), 2);
        push_digits(&mut date_time, u32::from(stamp.day()), 2);
        date_time.push('T');
        push_digits(&mut date_time, u32::from(stamp.hour()), 2);
        push_digits(&mut date_time, u32::from(stamp.minute()), 2);
        push_digits(&mut date_time, u32::from(stamp.second()), 2);
        date_time.push('Z');
        let keys = self.keys(now, &date_time[..8]).await?;

        let mut signed: Vec<(&str, &str)> = vec![("host", self.host.as_str())];
        signed.extend(headers.iter().map(|(k, v)| (k.as_str(), v.trim())));
        signed.sort_unstable();
        let signed_names = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");

        let expires = expires.as_secs().to_string();
        // Sorted by encoded name, then value, as SigV4 orders the canonical query.
        let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
            .iter()
            .map(|(k, v)| (encode(k, UNRESERVED), encode(v, UNRESERVED)))
            .collect();
        params.extend([
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential".into(), keys.credential.as_str().into()),
            ("X-Amz-Date".into(), date_time.as_str().into()),
            ("X-Amz-Expires".into(), expires.as_str().into()),
            (
                "X-Amz-SignedHeaders".into(),
                encode(&signed_names, UNRESERVED),
            ),
        ]);
        if let Some(token) = &keys.token {
            params.push(("X-Amz-Security-Token".into(), token.as_str().into()));
        }
        params.sort_unstable();
        let key_path = encode(full_key, PATH);
        let mut url = String::with_capacity(
            self.base.len()
                + key_path.len()
                + params
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 2)
                    .sum::<usize>()
                + 100,
        );
        url.push_str(&self.base);
        url.push_str(&key_path);
        url.push('?');
        let query_start = url.len();
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                url.push('&');
            }
            url.push_str(k);
            url.push('=');
            url.push_str(v);
        }

        let mut canonical = Sha256::new();
        for part in [
            method,
            "\n",
            &self.base_path,
            &key_path,
            "\n",
            &url[query_start..],
            "\n",
        ] {
            canonical.update(part.as_bytes());
        }
        for (k, v) in &signed {
            for part in [*k, ":", *v, "\n"] {
                canonical.update(part.as_bytes());
            }
        }
        for part in ["\n", &signed_names, "\nUNSIGNED-PAYLOAD"] {
            canonical.update(part.as_bytes());
        }
        let mut canonical_hex = [0u8; 64];
        hex::encode_to_slice(canonical.finalize(), &mut canonical_hex)
            .map_err(|e| format!("hex-encoding a digest: {e}"))?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&keys.key)
            .map_err(|e| format!("HMAC key: {e}"))?;
        for part in [
            b"AWS4-HMAC-SHA256\n".as_slice(),
            date_time.as_bytes(),
            b"\n",
            keys.scope.as_bytes(),
            b"\n",
            &canonical_hex,
        ] {
            mac.update(part);
        }
        url.push_str("&X-Amz-Signature=");
        url.push_str(&hex::encode(mac.finalize().into_bytes()));
        Ok(url)
    }
}

/// Appends `n` as exactly `width` decimal digits (zero-padded; higher digits dropped).
fn push_digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = n / 10u32.pow(i) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// `text` percent-encoded; borrowed when nothing needed encoding.
fn encode<'a>(text: &'a str, set: &'static AsciiSet) -> Cow<'a, str> {
    utf8_percent_encode(text, set).into()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presigner(base: &str) -> QuickPresigner {
        let provider = SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        ));
        QuickPresigner::new(
            &format!("{base}{PROBE_KEY}?X-Amz-Signature=x"),
            "garage".into(),
            provider,
        )
        .unwrap()
    }

    #[test]
    fn the_base_is_what_precedes_the_probe_key() {
        let p = presigner("http://127.0.0.1:3900/bucket/");
        assert_eq!(p.base, "http://127.0.0.1:3900/bucket/");
        let provider = SharedCredentialsProvider::new(Credentials::for_tests());
        assert!(QuickPresigner::new("http://host/bucket/other", "r".into(), provider).is_none());
    }

    #[tokio::test]
    async fn keys_and_parameters_are_encoded_and_the_signature_is_appended() {
        let p = presigner("https://bucket.s3.example/");
        let url = p
            .presign(
                "PUT",
                "cache/log/abc+d=e.drv",
                &[("partNumber", "3"), ("uploadId", "a/b+c")],
                &[],
                Duration::from_secs(60),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            )
            .await
            .unwrap();
        assert!(
            url.starts_with("https://bucket.s3.example/cache/log/abc%2Bd%3De.drv?X-Amz-"),
            "{url}"
        );
        assert!(url.contains("&partNumber=3&uploadId=a%2Fb%2Bc&"), "{url}");
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fgarage%2Fs3%2Faws4_request",
            "X-Amz-Date=20231114T221320Z",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
    }
}
