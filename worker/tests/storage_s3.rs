//! The S3 backend against a real Garage node (one bucket per test).
//!
//! Needs `LARDER_GARAGE`: source `e2e/tools/install-all.sh` first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use larder_worker::storage::{
    ByteRange, CompletedPart, Conditions, PutBody, PutOptions, PutPresign, S3Config, S3Store,
    Storage, StorageError,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn config(bucket: &larder_e2e::garage::Bucket, prefix: &str) -> S3Config {
    S3Config {
        endpoint: Some(bucket.endpoint.clone()),
        public_endpoint: None,
        region: Some(bucket.region.clone()),
        bucket: bucket.name.clone(),
        prefix: prefix.to_string(),
        path_style: true,
        access_key_id: Some(bucket.access_key.clone()),
        secret_access_key: Some(bucket.secret_key.clone()),
    }
}

async fn store(test: &str, prefix: &str) -> (larder_e2e::garage::Bucket, Storage) {
    let bucket = larder_e2e::garage::bucket(test);
    let s3 = S3Store::new(&config(&bucket, prefix)).await.unwrap();
    (bucket, Storage::S3(s3))
}

async fn read_all(s: &Storage, key: &str) -> Vec<u8> {
    let got = s.get(key, None, &Conditions::default()).await.unwrap();
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    body.concat()
}

async fn keys(s: &Storage, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = s
        .list(prefix)
        .map_ok(|o| o.key)
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

async fn http_put(url: &str, headers: &[(String, String)], body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new().put(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.body(body).send().await.unwrap()
}

#[tokio::test]
async fn put_get_range_head_and_conditions() {
    let (bucket, s) = store("s3-basic", "").await;
    let options = PutOptions {
        content_type: Some("text/x-nix-narinfo".into()),
        content_encoding: Some("zstd".into()),
        cache_control: Some("max-age=300".into()),
        checksum_sha256: Some(sha256(b"0123456789")),
    };
    s.put("abc.narinfo", b"0123456789".to_vec().into(), &options)
        .await
        .unwrap();

    let head = s.head("abc.narinfo").await.unwrap().expect("present");
    assert_eq!(head.size, 10);
    assert_eq!(head.content_encoding.as_deref(), Some("zstd"));
    assert!(head.last_modified.is_some());
    let etag = head.etag.clone().unwrap();

    let got = s
        .get("abc.narinfo", None, &Conditions::default())
        .await
        .unwrap();
    assert_eq!(
        (got.size, got.total_size, got.content_range),
        (10, 10, None)
    );
    assert_eq!(got.content_type.as_deref(), Some("text/x-nix-narinfo"));
    assert_eq!(got.cache_control.as_deref(), Some("max-age=300"));
    assert_eq!(read_all(&s, "abc.narinfo").await, b"0123456789");

    let got = s
        .get(
            "abc.narinfo",
            Some(ByteRange::parse("bytes=2-4").unwrap()),
            &Conditions::default(),
        )
        .await
        .unwrap();
    assert_eq!((got.size, got.total_size), (3, 10));
    assert_eq!(got.content_range.unwrap().to_string(), "bytes 2-4/10");
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), b"234");

    let err = s
        .get(
            "abc.narinfo",
            Some(ByteRange::From { first: 10 }),
            &Conditions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidRange { .. }), "{err:?}");

    let same = Conditions {
        if_none_match: Some(etag),
        ..Default::default()
    };
    let err = s.get("abc.narinfo", None, &same).await.unwrap_err();
    assert!(matches!(err, StorageError::NotModified { .. }), "{err:?}");

    assert_eq!(s.head("missing.narinfo").await.unwrap(), None);
    // A refusal is an error, never "absent": a commit would report an upload missing.
    let mut refused = config(&bucket, "");
    refused.secret_access_key = Some("not-the-secret".into());
    let refused = Storage::S3(S3Store::new(&refused).await.unwrap());
    let err = refused.head("abc.narinfo").await.unwrap_err();
    assert!(!err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");
    let err = s
        .get("missing.narinfo", None, &Conditions::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // A put whose checksum does not match is refused by Garage.
    let wrong = PutOptions {
        checksum_sha256: Some(sha256(b"something else")),
        ..Default::default()
    };
    let err = s
        .put("bad.narinfo", b"bytes".to_vec().into(), &wrong)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(s.head("bad.narinfo").await.unwrap(), None);

    let bad_key = s
        .put("../x", b"x".to_vec().into(), &PutOptions::default())
        .await;
    assert!(matches!(bad_key, Err(StorageError::InvalidInput { .. })));
}

#[tokio::test]
async fn streamed_put() {
    let (_bucket, s) = store("s3-stream", "").await;
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let stream = futures::stream::iter((0..48).map(move |_| Ok(chunk.clone()))).boxed();
    let length = 48 * 64 * 1024;
    s.put(
        "nar/streamed.nar",
        PutBody::Stream { stream, length },
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let body = read_all(&s, "nar/streamed.nar").await;
    assert_eq!(body.len() as u64, length);
    assert!(body.iter().all(|b| *b == 7));
}

#[tokio::test]
async fn prefix_is_applied_once_and_hidden_from_callers() {
    let (bucket, s) = store("s3-prefix", "/tenant//a/").await;
    s.put("x.narinfo", b"x".to_vec().into(), &PutOptions::default())
        .await
        .unwrap();
    s.put("nar/y.nar", b"y".to_vec().into(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(keys(&s, "").await, ["nar/y.nar", "x.narinfo"]);
    assert_eq!(keys(&s, "nar/").await, ["nar/y.nar"]);

    let raw = Storage::S3(S3Store::new(&config(&bucket, "")).await.unwrap());
    assert_eq!(
        keys(&raw, "").await,
        ["tenant/a/nar/y.nar", "tenant/a/x.narinfo"]
    );
    let same = Storage::S3(S3Store::new(&config(&bucket, "tenant/a")).await.unwrap());
    assert_eq!(read_all(&same, "x.narinfo").await, b"x");

    let url = s
        .presign_get("x.narinfo", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("/tenant/a/x.narinfo"), "{url}");
    assert!(!url.contains("tenant/a/tenant"), "{url}");
    let failed = s.delete_many(&["x.narinfo".to_string()]).await.unwrap();
    assert!(failed.is_empty());
    assert_eq!(keys(&raw, "").await, ["tenant/a/nar/y.nar"]);
}

#[tokio::test]
async fn delete_many_splits_into_batches() {
    let (_bucket, s) = store("s3-delete", "p").await;
    let keys_made: Vec<String> = (0..1100).map(|i| format!("nar/{i:04}.nar")).collect();
    futures::stream::iter(keys_made.clone())
        .map(|key| {
            let s = s.clone();
            async move {
                s.put(&key, b"x".to_vec().into(), &PutOptions::default())
                    .await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(keys(&s, "").await.len(), 1100);
    let mut request = keys_made;
    request.push("nar/never-existed.nar".into());
    request.push("/absolute".into());
    let failed = s.delete_many(&request).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].key, "/absolute");
    assert!(keys(&s, "").await.is_empty());
}

#[tokio::test]
async fn presigned_put_with_checksum() {
    let (_bucket, s) = store("s3-presign", "cache").await;
    let body = b"compressed nar bytes".to_vec();
    let presign = PutPresign {
        checksum_sha256: Some(sha256(&body)),
        content_type: None,
        content_encoding: Some("zstd".into()),
    };
    let req = s
        .presign_put("nar/c.nar.zst", Duration::from_secs(300), &presign)
        .await
        .unwrap();
    assert_eq!(req.method, "PUT");
    assert!(
        req.headers
            .iter()
            .any(|(k, _)| k == "x-amz-checksum-sha256"),
        "{:?}",
        req.headers
    );

    let mut wrong = body.clone();
    wrong.push(b'!');
    let rejected = http_put(&req.url, &req.headers, wrong).await;
    assert!(rejected.status().is_client_error(), "{}", rejected.status());
    assert_eq!(s.head("nar/c.nar.zst").await.unwrap(), None);

    let accepted = http_put(&req.url, &req.headers, body.clone()).await;
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    assert_eq!(read_all(&s, "nar/c.nar.zst").await, body);
    let head = s.head("nar/c.nar.zst").await.unwrap().unwrap();
    assert_eq!(head.content_encoding.as_deref(), Some("zstd"));

    // Without a checksum any bytes go.
    let plain = s
        .presign_put("x.narinfo", Duration::from_secs(60), &PutPresign::default())
        .await
        .unwrap();
    assert_eq!(
        http_put(&plain.url, &plain.headers, b"ok".to_vec())
            .await
            .status(),
        200
    );

    let get = s
        .presign_get("nar/c.nar.zst", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let res = reqwest::get(&get).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &body[..]);
}

#[tokio::test]
async fn multipart_with_presigned_parts() {
    let (_bucket, s) = store("s3-multipart", "m/").await;
    let key = "nar/big.nar.zst";
    let sizes = [5 * MIB, 5 * MIB, MIB + 17];
    let chunks: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (j * 31 + i * 7) as u8).collect())
        .collect();
    let id = s.create_multipart(key).await.unwrap();
    assert!(s
        .presign_part(key, &id, 0, Duration::from_secs(60))
        .await
        .is_err());
    assert!(s
        .presign_part(key, &id, 10_001, Duration::from_secs(60))
        .await
        .is_err());
    let mut parts = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let n = i as u32 + 1;
        let url = s
            .presign_part(key, &id, n, Duration::from_secs(300))
            .await
            .unwrap();
        let res = http_put(&url, &[], chunk.clone()).await;
        assert_eq!(res.status(), 200);
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        parts.push(CompletedPart {
            part_number: n,
            etag,
        });
    }
    assert_eq!(
        s.head(key).await.unwrap(),
        None,
        "visible before completion"
    );
    s.complete_multipart(key, &id, &parts).await.unwrap();
    let whole = chunks.concat();
    let got = read_all(&s, key).await;
    assert_eq!(got.len(), whole.len());
    assert_eq!(sha256(&got), sha256(&whole));
    let err = s.complete_multipart(key, &id, &parts).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::NotFound { .. } | StorageError::InvalidInput { .. }
        ),
        "{err:?}"
    );
}

/// Multipart uploads a killed worker left behind (no row names them): GC's call aborts
/// this store's NAR uploads started before its cutoff, and nothing else in the bucket.
#[tokio::test]
async fn stale_nar_uploads_are_aborted_and_nothing_else() {
    let (bucket, s) = store("s3-stale", "p/").await;
    let nar = |c: char| format!("nar/{}.nar.zst", c.to_string().repeat(52));
    let sdk = bucket.client();
    let open = |key: String| {
        let sdk = sdk.clone();
        let name = bucket.name.clone();
        async move {
            let out = sdk
                .create_multipart_upload()
                .bucket(name)
                .key(key)
                .send()
                .await;
            out.unwrap().upload_id().unwrap().to_string()
        }
    };
    let stale = s.create_multipart(&nar('0')).await.unwrap();
    // Another program's upload under the prefix, and a NAR outside the store's prefix.
    let foreign = open("p/other/file.bin".into()).await;
    let outside = open(format!("q/{}", nar('2'))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cutoff = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let young = s.create_multipart(&nar('1')).await.unwrap();

    assert_eq!(s.remove_stale_uploads(cutoff).await.unwrap(), 1);
    let listed = sdk
        .list_multipart_uploads()
        .bucket(&bucket.name)
        .send()
        .await
        .unwrap();
    let left: Vec<&str> = listed
        .uploads()
        .iter()
        .filter_map(|u| u.upload_id())
        .collect();
    assert!(
        !left.contains(&stale.as_str()),
        "the stale upload is still open"
    );
    for kept in [&young, &foreign, &outside] {
        assert!(
            left.contains(&kept.as_str()),
            "{kept} was aborted: {left:?}"
        );
    }

    // A role that may not list uploads leaves them to the lifecycle rule; the GC goes on.
    let mut refused = config(&bucket, "p/");
    refused.secret_access_key = Some("not-the-secret".into());
    let refused = Storage::S3(S3Store::new(&refused).await.unwrap());
    let now = std::time::SystemTime::now();
    assert_eq!(refused.remove_stale_uploads(now).await.unwrap(), 0);
    let still = sdk
        .list_multipart_uploads()
        .bucket(&bucket.name)
        .send()
        .await;
    assert_eq!(
        still.unwrap().uploads().len(),
        left.len(),
        "the refused store aborted"
    );
}

#[tokio::test]
async fn aborted_multipart_is_gone() {
    let (_bucket, s) = store("s3-abort", "").await;
    let key = "nar/aborted.nar";
    let id = s.create_multipart(key).await.unwrap();
    let url = s
        .presign_part(key, &id, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let res = http_put(&url, &[], vec![1; 1000]).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    s.abort_multipart(key, &id).await.unwrap();
    s.abort_multipart(key, &id).await.unwrap();
    let parts = [CompletedPart {
        part_number: 1,
        etag,
    }];
    let err = s.complete_multipart(key, &id, &parts).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(http_put(&url, &[], vec![1; 10])
        .await
        .status()
        .is_client_error());
    assert_eq!(s.head(key).await.unwrap(), None);
}

#[tokio::test]
async fn presigned_urls_use_the_public_endpoint() {
    let bucket = larder_e2e::garage::bucket("s3-public");
    let mut cfg = config(&bucket, "");
    cfg.public_endpoint = Some("https://cache-s3.example.org".into());
    let s = Storage::S3(S3Store::new(&cfg).await.unwrap());
    let req = s
        .presign_put("a.narinfo", Duration::from_secs(60), &PutPresign::default())
        .await
        .unwrap();
    assert!(
        req.url.starts_with("https://cache-s3.example.org/"),
        "{}",
        req.url
    );
    let get = s
        .presign_get("a.narinfo", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(get.starts_with("https://cache-s3.example.org/"), "{get}");
    // The worker's own requests still go to the internal endpoint.
    s.put("a.narinfo", b"a".to_vec().into(), &PutOptions::default())
        .await
        .unwrap();
    assert!(s.head("a.narinfo").await.unwrap().is_some());
}

/// Two open uploads with one part each; the part URLs answer 404 once aborted.
async fn open_uploads(s: &Storage, keys: &[&str]) -> Vec<(String, String, String)> {
    let mut open = Vec::new();
    for key in keys {
        let id = s.create_multipart(key).await.unwrap();
        let url = s
            .presign_part(key, &id, 1, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(http_put(&url, &[], vec![1; 100]).await.status(), 200);
        open.push((key.to_string(), id, url));
    }
    open
}

#[tokio::test]
async fn abort_all_goes_on_past_an_upload_it_cannot_abort() {
    let (_bucket, s) = store("s3-abort-all", "").await;
    let open = open_uploads(&s, &["nar/one.nar", "nar/two.nar"]).await;
    // The unabortable one first, one at a time: the others must still be aborted.
    let mut uploads = vec![("nar/../escape.nar".to_string(), "x".to_string())];
    uploads.extend(open.iter().map(|(k, id, _)| (k.clone(), id.clone())));
    let failed = s.abort_all(&uploads, 1).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "nar/../escape.nar");
    assert!(
        matches!(failed[0].1, StorageError::InvalidInput { .. }),
        "{:?}",
        failed[0].1
    );
    for (key, _, url) in &open {
        let late = http_put(url, &[], b"late".to_vec()).await;
        assert_eq!(late.status(), 404, "{key} still open");
    }
}
