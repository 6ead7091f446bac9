//! The local directory's "presigned" URLs: HMAC-SHA256 over what the upload may do,
//! pointing at the worker's own `/_storage/upload/{key}` route.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Characters left as they are in a key placed in a URL path: unreserved ones and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Query parameters of a local upload URL; `sig` covers the key and every other field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadParams {
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// Multipart upload id, for a part upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Part number, for a part upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// Lower-case hex SHA-256 the uploaded bytes must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Lower-case hex HMAC-SHA256 signature.
    #[serde(default)]
    pub sig: String,
}

/// Why an upload URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejected {
    /// The signature does not match: forged or altered.
    #[error("bad signature")]
    BadSignature,
    /// The URL's lifetime is over.
    #[error("expired")]
    Expired,
}

/// Signs and verifies upload URLs with the store's secret.
#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    /// A signer using `secret` (at least 32 random bytes).
    pub fn new(secret: Vec<u8>) -> Self {
        UrlSigner { secret }
    }

    fn mac(&self, key: &str, params: &UploadParams) -> Hmac<Sha256> {
        // Any key length is valid for HMAC, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        // Keys, ids and hashes hold no newline (keys are validated, the rest are hex
        // or numbers), so the fields cannot be shifted into one another.
        let message = format!(
            "larder-upload-v1\n{key}\n{}\n{}\n{}\n{}",
            params.expires,
            params.upload_id.as_deref().unwrap_or(""),
            params.part.map(|p| p.to_string()).unwrap_or_default(),
            params.sha256.as_deref().unwrap_or(""),
        );
        mac.update(message.as_bytes());
        mac
    }

    /// Fills in `params.sig` for `key`.
    pub fn sign(&self, key: &str, mut params: UploadParams) -> UploadParams {
        params.sig = hex::encode(self.mac(key, &params).finalize().into_bytes());
        params
    }

    /// Checks the signature (in constant time) and the expiry against `now` (Unix seconds).
    pub fn verify(&self, key: &str, params: &UploadParams, now: u64) -> Result<(), UrlRejected> {
        let sig = hex::decode(&params.sig).map_err(|_| UrlRejected::BadSignature)?;
        self.mac(key, params)
            .verify_slice(&sig)
            .map_err(|_| UrlRejected::BadSignature)?;
        if now >= params.expires {
            return Err(UrlRejected::Expired);
        }
        Ok(())
    }
}

/// The full URL: `{public_url}/_storage/upload/{key}?{params}`.
pub fn upload_url(public_url: &str, key: &str, params: &UploadParams) -> String {
    let mut query = format!("expires={}", params.expires);
    if let Some(id) = &params.upload_id {
        query.push_str(&format!(
            "&upload_id={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        ));
    }
    if let Some(part) = params.part {
        query.push_str(&format!("&part={part}"));
    }
    if let Some(sha) = &params.sha256 {
        query.push_str(&format!(
            "&sha256={}",
            utf8_percent_encode(sha, NON_ALPHANUMERIC)
        ));
    }
    query.push_str(&format!("&sig={}", params.sig));
    format!(
        "{}/_storage/upload/{}?{query}",
        public_url.trim_end_matches('/'),
        utf8_percent_encode(key, PATH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> UploadParams {
        UploadParams {
            expires: 1000,
            upload_id: Some("ab12".into()),
            part: Some(3),
            sha256: Some("00ff".into()),
            sig: String::new(),
        }
    }

    #[test]
    fn signed_params_verify_until_expiry() {
        let signer = UrlSigner::new(vec![7; 32]);
        let signed = signer.sign("nar/x.nar", params());
        assert_eq!(signer.verify("nar/x.nar", &signed, 999), Ok(()));
        assert_eq!(
            signer.verify("nar/x.nar", &signed, 1000),
            Err(UrlRejected::Expired)
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let signer = UrlSigner::new(vec![7; 32]);
        let signed = signer.sign("nar/x.nar", params());
        let bad = UrlRejected::BadSignature;
        assert_eq!(signer.verify("nar/y.nar", &signed, 0), Err(bad));
        let tweaks: [fn(&mut UploadParams); 5] = [
            |p| p.expires += 1,
            |p| p.upload_id = None,
            |p| p.part = Some(4),
            |p| p.sha256 = None,
            |p| {
                p.sig
                    .replace_range(0..1, if p.sig.starts_with('0') { "1" } else { "0" })
            },
        ];
        for tweak in tweaks {
            let mut p = signed.clone();
            tweak(&mut p);
            assert_eq!(signer.verify("nar/x.nar", &p, 0), Err(bad), "{p:?}");
        }
        let other = UrlSigner::new(vec![8; 32]);
        assert_eq!(other.verify("nar/x.nar", &signed, 0), Err(bad));
    }

    #[test]
    fn url_escapes_the_key() {
        let p = UploadParams {
            expires: 5,
            sig: "ab".into(),
            ..Default::default()
        };
        assert_eq!(
            upload_url("http://h:1/", "realisations/sha256:a!out.doi", &p),
            "http://h:1/_storage/upload/realisations/sha256%3Aa%21out.doi?expires=5&sig=ab"
        );
    }
}
