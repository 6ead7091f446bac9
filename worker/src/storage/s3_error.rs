//! Turning S3 SDK errors into [`StorageError`]s: a pure classification of status and
//! error code, and the glue that reads them off an SDK error.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::StorageError;

/// Wait suggested to clients when the store throttles without saying for how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Longest wait passed on from a store's `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The kinds of S3 failure callers act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NotFound,
    NotModified,
    PreconditionFailed,
    Throttled,
    InvalidRange,
    ChecksumMismatch,
    InvalidInput,
    Other,
}

/// Classifies a failed S3 request by HTTP status and S3 error code.
pub(crate) fn classify(status: Option<u16>, code: Option<&str>) -> Kind {
    match code {
        Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")
        | Some("TooManyRequests" | "RequestThrottled" | "ServiceUnavailable") => {
            return Kind::Throttled
        }
        Some("NoSuchKey" | "NoSuchUpload" | "NotFound") => return Kind::NotFound,
        // A missing bucket is a configuration error, not a missing object.
        Some("NoSuchBucket") => return Kind::Other,
        Some("PreconditionFailed") => return Kind::PreconditionFailed,
        Some("InvalidRange") => return Kind::InvalidRange,
        Some("BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch") => {
            return Kind::ChecksumMismatch
        }
        Some("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall" | "InvalidArgument") => {
            return Kind::InvalidInput
        }
        _ => {}
    }
    match status {
        Some(503 | 429) => Kind::Throttled,
        Some(404) => Kind::NotFound,
        Some(304) => Kind::NotModified,
        Some(412) => Kind::PreconditionFailed,
        Some(416) => Kind::InvalidRange,
        _ => Kind::Other,
    }
}

/// The wait a `Retry-After` header asks for (seconds form), bounded; a default otherwise.
pub(crate) fn retry_after(header: Option<&str>) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .map_or(DEFAULT_RETRY_AFTER, |d| {
            d.clamp(DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER)
        })
}

/// Maps an SDK error of operation `op` on `key`.
pub(crate) fn map_sdk_error<E>(
    op: &'static str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let response = err.raw_response();
    let status = response.map(|r| r.status().as_u16());
    let header = response.and_then(|r| r.headers().get("retry-after"));
    let code = err.code();
    error_of(
        classify(status, code),
        op,
        key,
        retry_after(header),
        None,
        || DisplayErrorContext(&err).to_string(),
    )
}

/// The [`StorageError`] of a failed request of operation `op` on `key` classified as
/// `kind`: `wait` is the store's `Retry-After`, `object_size` what a 416 said of the
/// object, `detail` the message of the kinds that carry one. Shared by the SDK's requests
/// and the read proxy's own GETs, so both report a failure alike.
pub(crate) fn error_of(
    kind: Kind,
    op: &'static str,
    key: &str,
    wait: Duration,
    object_size: Option<u64>,
    detail: impl FnOnce() -> String,
) -> StorageError {
    let key = key.to_string();
    match kind {
        Kind::NotFound => StorageError::NotFound { op, key },
        Kind::NotModified => StorageError::NotModified { op, key },
        Kind::PreconditionFailed => StorageError::PreconditionFailed { op, key },
        Kind::Throttled => StorageError::Throttled {
            op,
            key,
            retry_after: wait,
        },
        Kind::InvalidRange => StorageError::InvalidRange {
            op,
            key,
            size: object_size,
        },
        Kind::ChecksumMismatch => StorageError::ChecksumMismatch { op, key },
        Kind::InvalidInput => StorageError::InvalidInput {
            op,
            key,
            reason: detail(),
        },
        Kind::Other => StorageError::Other {
            op,
            key,
            message: detail(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_code_or_status() {
        assert_eq!(classify(Some(503), Some("SlowDown")), Kind::Throttled);
        assert_eq!(classify(Some(503), None), Kind::Throttled);
        assert_eq!(classify(Some(429), None), Kind::Throttled);
        assert_eq!(
            classify(Some(400), Some("RequestLimitExceeded")),
            Kind::Throttled
        );
        assert_eq!(classify(Some(500), Some("InternalError")), Kind::Other);
    }

    #[test]
    fn missing_objects_but_not_missing_buckets_are_not_found() {
        assert_eq!(classify(Some(404), Some("NoSuchKey")), Kind::NotFound);
        assert_eq!(classify(Some(404), Some("NoSuchUpload")), Kind::NotFound);
        assert_eq!(classify(Some(404), None), Kind::NotFound);
        assert_eq!(classify(Some(404), Some("NoSuchBucket")), Kind::Other);
    }

    #[test]
    fn conditional_range_and_digest_failures() {
        assert_eq!(classify(Some(304), None), Kind::NotModified);
        assert_eq!(classify(Some(412), None), Kind::PreconditionFailed);
        assert_eq!(
            classify(Some(416), Some("InvalidRange")),
            Kind::InvalidRange
        );
        assert_eq!(
            classify(Some(400), Some("InvalidDigest")),
            Kind::ChecksumMismatch
        );
        assert_eq!(
            classify(Some(400), Some("BadDigest")),
            Kind::ChecksumMismatch
        );
        assert_eq!(classify(Some(400), Some("InvalidPart")), Kind::InvalidInput);
    }

    #[test]
    fn retry_after_is_bounded_with_a_default() {
        assert_eq!(retry_after(None), Duration::from_secs(1));
        assert_eq!(retry_after(Some("7")), Duration::from_secs(7));
        assert_eq!(retry_after(Some("0")), Duration::from_secs(1));
        assert_eq!(retry_after(Some("86400")), Duration::from_secs(60));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_503_slow_down_response_becomes_throttled_with_retry_after() {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        let mut response = HttpResponse::new(503.try_into().unwrap(), SdkBody::empty());
        response.headers_mut().insert("retry-after", "5");
        let meta = ErrorMetadata::builder()
            .code("SlowDown")
            .message("slow down")
            .build();
        let err = SdkError::service_error(GetObjectError::generic(meta), response);
        match map_sdk_error("get", "nar/x.nar", err) {
            StorageError::Throttled {
                retry_after, key, ..
            } => {
                assert_eq!(retry_after, Duration::from_secs(5));
                assert_eq!(key, "nar/x.nar");
            }
            other => panic!("expected Throttled, got {other:?}"),
        }
    }
}
