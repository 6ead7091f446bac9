//! The local-directory backend: objects as files, signed upload URLs served by the
//! worker's own `/_storage` routes (exercised over real HTTP on 127.0.0.1).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use larder_worker::storage::{
    upload_router, ByteRange, CompletedPart, Conditions, DirStore, PutBody, PutOptions, PutPresign,
    Storage, StorageError,
};
use sha2::{Digest, Sha256};

async fn store() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("objects"), "http://unused")
        .await
        .unwrap();
    (dir, Storage::Dir(store))
}

/// A store whose upload routes are served on 127.0.0.1, as the worker mounts them.
async fn served() -> (tempfile::TempDir, DirStore) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let store = DirStore::open(dir.path().join("objects"), url)
        .await
        .unwrap();
    let app = axum::Router::new().nest("/_storage", upload_router(store.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (dir, store)
}

async fn read_all(storage: &Storage, key: &str) -> Vec<u8> {
    let got = storage
        .get(key, None, &Conditions::default())
        .await
        .unwrap();
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    body.concat()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Every file under `dir`, hidden ones included, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn put_get_head_with_stored_headers_ranges_and_conditions() {
    let (_dir, s) = store().await;
    let options = PutOptions {
        content_type: Some("text/x-nix-narinfo".into()),
        content_encoding: Some("zstd".into()),
        ..Default::default()
    };
    s.put("abc.narinfo", b"0123456789".to_vec().into(), &options)
        .await
        .unwrap();

    let head = s.head("abc.narinfo").await.unwrap().expect("present");
    assert_eq!(head.size, 10);
    assert_eq!(head.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(head.content_type.as_deref(), Some("text/x-nix-narinfo"));
    let etag = head.etag.clone().unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let got = s
        .get("abc.narinfo", None, &Conditions::default())
        .await
        .unwrap();
    assert_eq!((got.size, got.total_size), (10, 10));
    assert_eq!(got.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(got.content_encoding.as_deref(), Some("zstd"));
    assert_eq!(read_all(&s, "abc.narinfo").await, b"0123456789");

    let range = ByteRange::parse("bytes=2-4").unwrap();
    let got = s
        .get("abc.narinfo", Some(range), &Conditions::default())
        .await
        .unwrap();
    assert_eq!(got.size, 3);
    assert_eq!(got.total_size, 10);
    assert_eq!(got.content_range.unwrap().to_string(), "bytes 2-4/10");
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), b"234");

    let suffix = ByteRange::parse("bytes=-3").unwrap();
    let got = s
        .get("abc.narinfo", Some(suffix), &Conditions::default())
        .await
        .unwrap();
    let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert_eq!(body.concat(), b"789");

    let past_end = ByteRange::parse("bytes=10-").unwrap();
    let err = s
        .get("abc.narinfo", Some(past_end), &Conditions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidRange { size: Some(10), .. }),
        "{err:?}"
    );

    let same = Conditions {
        if_none_match: Some(etag.clone()),
        ..Default::default()
    };
    let err = s.get("abc.narinfo", None, &same).await.unwrap_err();
    assert!(matches!(err, StorageError::NotModified { .. }), "{err:?}");
    let later = Conditions {
        if_modified_since: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..Default::default()
    };
    assert!(matches!(
        s.get("abc.narinfo", None, &later).await.unwrap_err(),
        StorageError::NotModified { .. }
    ));
    let other = Conditions {
        if_none_match: Some("\"other\"".into()),
        ..Default::default()
    };
    assert!(s.get("abc.narinfo", None, &other).await.is_ok());

    // Overwriting without headers drops the stored ones.
    s.put(
        "abc.narinfo",
        b"plain".to_vec().into(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let head = s.head("abc.narinfo").await.unwrap().unwrap();
    assert_eq!((head.size, head.content_encoding), (5, None));
    assert_ne!(head.etag.unwrap(), etag);
}

#[tokio::test]
async fn missing_objects() {
    let (_dir, s) = store().await;
    assert_eq!(s.head("nar/none.nar").await.unwrap(), None);
    let err = s
        .get("nar/none.nar", None, &Conditions::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    // A directory is not an object.
    s.put("nar/x.nar", b"x".to_vec().into(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(s.head("nar").await.unwrap(), None);
    assert!(s
        .get("nar", None, &Conditions::default())
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        s.presign_get("nar/x.nar", Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn traversal_keys_are_refused_and_nothing_escapes_the_root() {
    let (dir, s) = store().await;
    let bad = [
        "../escape",
        "/etc/passwd",
        "a/../../escape",
        "a/./b",
        "a//b",
        "a\0b",
        ".upload-secret",
        "nar/.tmp-x",
        "..\\escape",
    ];
    for key in bad {
        let put = s
            .put(key, b"x".to_vec().into(), &PutOptions::default())
            .await;
        assert!(
            matches!(put, Err(StorageError::InvalidInput { .. })),
            "put {key:?}: {put:?}"
        );
        let get = s.get(key, None, &Conditions::default()).await;
        assert!(
            matches!(get, Err(StorageError::InvalidInput { .. })),
            "get {key:?}"
        );
        assert!(s.head(key).await.is_err(), "head {key:?}");
        let presign = s
            .presign_put(key, Duration::from_secs(60), &PutPresign::default())
            .await;
        assert!(presign.is_err(), "presign {key:?}");
        assert!(s.create_multipart(key).await.is_err(), "multipart {key:?}");
    }
    let failed = s.delete_many(&bad.map(String::from)).await.unwrap();
    assert_eq!(failed.len(), bad.len());
    // Only the root itself was created next to the temp dir; the secret is still there.
    let mut outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    outside.sort();
    assert_eq!(outside, ["objects"]);
    assert!(dir.path().join("objects/.upload-secret").exists());
    // `..` inside a name is an ordinary name.
    s.put(
        "log/hm_..zlogout.drv",
        b"log".to_vec().into(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&s, "log/hm_..zlogout.drv").await, b"log");
}

#[tokio::test]
async fn checksum_mismatch_leaves_no_file() {
    let (dir, s) = store().await;
    let options = PutOptions {
        checksum_sha256: Some(sha256(b"expected")),
        ..Default::default()
    };
    let err = s
        .put("nar/a.nar", b"unexpected".to_vec().into(), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(s.head("nar/a.nar").await.unwrap(), None);
    assert_eq!(files_under(&dir.path().join("objects")), [".upload-secret"]);

    s.put("nar/a.nar", b"expected".to_vec().into(), &options)
        .await
        .unwrap();
    assert_eq!(read_all(&s, "nar/a.nar").await, b"expected");

    // A stream shorter than declared is refused too.
    let stream = futures::stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed();
    let err = s
        .put(
            "nar/b.nar",
            PutBody::Stream { stream, length: 4 },
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidInput { .. }), "{err:?}");
    assert_eq!(s.head("nar/b.nar").await.unwrap(), None);
}

#[tokio::test]
async fn streamed_put_and_listing_by_prefix() {
    let (_dir, s) = store().await;
    let chunks: Vec<Result<Bytes, StorageError>> = (0..100)
        .map(|i| Ok(Bytes::from(vec![i as u8; 1000])))
        .collect();
    let stream = futures::stream::iter(chunks).boxed();
    s.put(
        "nar/big.nar",
        PutBody::Stream {
            stream,
            length: 100_000,
        },
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let body = read_all(&s, "nar/big.nar").await;
    assert_eq!(body.len(), 100_000);
    assert_eq!(body[99_999], 99);

    for key in [
        "nar/abc.nar",
        "nar/abd.nar",
        "x.narinfo",
        "log/a.drv",
        "realisations/sha256:1!out.doi",
    ] {
        s.put(
            key,
            b"12".to_vec().into(),
            &PutOptions {
                content_encoding: Some("zstd".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let list = |prefix: &'static str| {
        let s = s.clone();
        async move {
            let mut keys: Vec<(String, u64)> = s
                .list(prefix)
                .map_ok(|o| (o.key, o.size))
                .try_collect()
                .await
                .unwrap();
            keys.sort();
            keys
        }
    };
    let all = list("").await;
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "log/a.drv",
            "nar/abc.nar",
            "nar/abd.nar",
            "nar/big.nar",
            "realisations/sha256:1!out.doi",
            "x.narinfo"
        ]
    );
    assert_eq!(all[1].1, 2);
    let nar: Vec<String> = list("nar/ab").await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(nar, ["nar/abc.nar", "nar/abd.nar"]);
    assert_eq!(list("nar/").await.len(), 3);
    assert_eq!(list("n").await.len(), 3);
    assert!(list("none/").await.is_empty());
    assert!(s.list("../").try_collect::<Vec<_>>().await.is_err());
}

#[tokio::test]
async fn delete_many_deletes_all_and_reports_failures() {
    let (dir, s) = store().await;
    let keys: Vec<String> = (0..1200).map(|i| format!("nar/{i:04}.nar")).collect();
    for key in &keys {
        s.put(
            key,
            b"x".to_vec().into(),
            &PutOptions {
                content_type: Some("application/x-nix-nar".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let mut request = keys.clone();
    request.push("nar/never-existed.nar".into());
    request.push("../bad".into());
    let failed = s.delete_many(&request).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].key, "../bad");
    assert_eq!(s.list("").try_collect::<Vec<_>>().await.unwrap(), []);
    // Sidecars went with their objects.
    assert_eq!(files_under(&dir.path().join("objects")), [".upload-secret"]);
}

#[tokio::test]
async fn concurrent_writers_never_expose_partial_content() {
    let (_dir, s) = store().await;
    const SIZE: usize = 256 * 1024;
    s.put(
        "nar/hot.nar",
        vec![0u8; SIZE].into(),
        &PutOptions::default(),
    )
    .await
    .unwrap();
    let writers: Vec<_> = (1..=4u8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    s.put("nar/hot.nar", vec![w; SIZE].into(), &PutOptions::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            for _ in 0..200 {
                let body = read_all(&s, "nar/hot.nar").await;
                assert_eq!(body.len(), SIZE, "partial object visible");
                assert!(body.iter().all(|b| *b == body[0]), "mixed object visible");
                reads += 1;
            }
            reads
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), 200);
}

async fn http_put(url: &str, headers: &[(String, String)], body: Vec<u8>) -> reqwest::Response {
    let mut req = reqwest::Client::new().put(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.body(body).send().await.unwrap()
}

#[tokio::test]
async fn presigned_put_checks_checksum_signature_and_expiry() {
    let (dir, store) = served().await;
    let s = Storage::Dir(store.clone());
    let body = b"compressed nar".to_vec();
    let presign = PutPresign {
        checksum_sha256: Some(sha256(&body)),
        content_encoding: Some("zstd".into()),
        ..Default::default()
    };
    let req = s
        .presign_put("nar/p.nar.zst", Duration::from_secs(300), &presign)
        .await
        .unwrap();
    assert_eq!(req.method, "PUT");
    assert!(
        req.url.contains("/_storage/upload/nar/p.nar.zst?"),
        "{}",
        req.url
    );
    assert!(req
        .headers
        .iter()
        .any(|(k, _)| k == "x-amz-checksum-sha256"));

    let mut wrong = body.clone();
    wrong.push(b'!');
    let rejected = http_put(&req.url, &req.headers, wrong).await;
    assert_eq!(rejected.status(), 400);
    assert_eq!(s.head("nar/p.nar.zst").await.unwrap(), None);
    assert_eq!(files_under(&dir.path().join("objects")), [".upload-secret"]);

    // Without the header the signed hash still applies.
    let rejected = http_put(&req.url, &[], b"other".to_vec()).await;
    assert_eq!(rejected.status(), 400);

    let tampered = req.url.replace("nar/p.nar.zst", "nar/q.nar.zst");
    assert_eq!(
        http_put(&tampered, &req.headers, body.clone())
            .await
            .status(),
        403
    );
    let forged = format!("{}0", req.url);
    assert_eq!(
        http_put(&forged, &req.headers, body.clone()).await.status(),
        403
    );
    let unsigned = req.url.split("&sig=").next().unwrap().to_string();
    assert_eq!(
        http_put(&unsigned, &req.headers, body.clone())
            .await
            .status(),
        403
    );
    let extended = req.url.replacen("expires=", "expires=9", 1);
    assert_eq!(
        http_put(&extended, &req.headers, body.clone())
            .await
            .status(),
        403
    );

    let accepted = http_put(&req.url, &req.headers, body.clone()).await;
    assert_eq!(accepted.status(), 200);
    assert!(accepted.headers().contains_key("etag"));
    assert_eq!(read_all(&s, "nar/p.nar.zst").await, body);
    let head = s.head("nar/p.nar.zst").await.unwrap().unwrap();
    assert_eq!(head.content_encoding.as_deref(), Some("zstd"));

    let short = s
        .presign_put("nar/e.nar", Duration::from_secs(1), &PutPresign::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http_put(&short.url, &[], b"late".to_vec()).await;
    assert_eq!(expired.status(), 403);
    assert!(expired.text().await.unwrap().contains("expired"));
    assert_eq!(s.head("nar/e.nar").await.unwrap(), None);
}

#[tokio::test]
async fn upload_urls_survive_a_restart_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let first = DirStore::open(&root, "http://127.0.0.1:1").await.unwrap();
    let req = first
        .presign_put("a.narinfo", Duration::from_secs(60), &PutPresign::default())
        .await
        .unwrap();
    let query = req.url.split_once('?').unwrap().1;
    let params: larder_worker::storage::presign::UploadParams = serde_urlencoded_like(query);
    let again = DirStore::open(&root, "http://127.0.0.1:1").await.unwrap();
    again.verify_upload_url("a.narinfo", &params).unwrap();
    let other = DirStore::open(dir.path().join("elsewhere"), "http://127.0.0.1:1")
        .await
        .unwrap();
    let err = other.verify_upload_url("a.narinfo", &params).unwrap_err();
    assert!(matches!(err, StorageError::Forbidden { .. }), "{err:?}");
}

/// A store killed between creating its upload secret and writing it (on first start)
/// opens again: the empty file holds no secret anyone could have signed with, so a new
/// one replaces it, and the store leaves no temporary file behind.
#[tokio::test]
async fn an_empty_upload_secret_left_by_a_killed_first_start_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join(".upload-secret"), "").unwrap();
    let store = DirStore::open(&root, "http://127.0.0.1:1").await.unwrap();
    let secret = std::fs::read_to_string(root.join(".upload-secret")).unwrap();
    assert_eq!(secret.trim().len(), 64, "{secret:?}");
    assert_eq!(files_under(&root), [".upload-secret"]);
    let req = store
        .presign_put("a.narinfo", Duration::from_secs(60), &PutPresign::default())
        .await
        .unwrap();
    let params = serde_urlencoded_like(req.url.split_once('?').unwrap().1);
    let again = DirStore::open(&root, "http://127.0.0.1:1").await.unwrap();
    again.verify_upload_url("a.narinfo", &params).unwrap();
}

/// Parses the flat query of an upload URL (numbers and hex only).
fn serde_urlencoded_like(query: &str) -> larder_worker::storage::presign::UploadParams {
    let map: serde_json::Map<String, serde_json::Value> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let value = match k {
                "expires" | "part" => serde_json::Value::from(v.parse::<u64>().unwrap()),
                _ => serde_json::Value::from(v),
            };
            (k.to_string(), value)
        })
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap()
}

#[tokio::test]
async fn multipart_through_presigned_parts() {
    let (dir, store) = served().await;
    let s = Storage::Dir(store);
    let key = "nar/multi.nar.zst";
    let id = s.create_multipart(key).await.unwrap();
    for bad in [0, 10_001] {
        let err = s
            .presign_part(key, &id, bad, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidInput { .. }),
            "{bad}: {err:?}"
        );
    }
    let chunks: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 100_000 + i as usize]).collect();
    let mut parts = Vec::new();
    // Upload out of order; completion follows part numbers.
    for n in [3u32, 1, 2] {
        let url = s
            .presign_part(key, &id, n, Duration::from_secs(60))
            .await
            .unwrap();
        let res = http_put(&url, &[], chunks[n as usize - 1].clone()).await;
        assert_eq!(res.status(), 200);
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        parts.push(CompletedPart {
            part_number: n,
            etag,
        });
    }
    parts.sort_by_key(|p| p.part_number);

    // A part URL is bound to its key and upload.
    let url = s
        .presign_part(key, &id, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let moved = url.replace("multi.nar.zst", "other.nar.zst");
    assert_eq!(http_put(&moved, &[], b"x".to_vec()).await.status(), 403);

    let mut wrong = parts.clone();
    wrong[1].etag = parts[0].etag.clone();
    let err = s.complete_multipart(key, &id, &wrong).await.unwrap_err();
    assert!(matches!(err, StorageError::InvalidInput { .. }), "{err:?}");
    let reversed: Vec<_> = parts.iter().rev().cloned().collect();
    assert!(s.complete_multipart(key, &id, &reversed).await.is_err());
    assert_eq!(s.head(key).await.unwrap(), None);

    s.complete_multipart(key, &id, &parts).await.unwrap();
    assert_eq!(read_all(&s, key).await, chunks.concat());
    // The upload is gone: completing again or uploading a part is NotFound.
    let err = s.complete_multipart(key, &id, &parts).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(http_put(&url, &[], b"late".to_vec()).await.status(), 404);
    assert_eq!(
        files_under(&dir.path().join("objects")).len(),
        2,
        "object and secret only"
    );
}

#[tokio::test]
async fn aborted_multipart_leaves_nothing() {
    let (dir, store) = served().await;
    let s = Storage::Dir(store);
    let key = "nar/aborted.nar";
    let id = s.create_multipart(key).await.unwrap();
    let url = s
        .presign_part(key, &id, 1, Duration::from_secs(60))
        .await
        .unwrap();
    let res = http_put(&url, &[], vec![1; 1000]).await;
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    // Aborting under another key does nothing; under its own key it drops the parts.
    s.abort_multipart("nar/other.nar", &id).await.unwrap();
    s.abort_multipart(key, &id).await.unwrap();
    s.abort_multipart(key, &id).await.unwrap();
    let parts = [CompletedPart {
        part_number: 1,
        etag,
    }];
    assert!(s
        .complete_multipart(key, &id, &parts)
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(http_put(&url, &[], vec![1; 10]).await.status(), 404);
    assert_eq!(files_under(&dir.path().join("objects")), [".upload-secret"]);
    assert!(s
        .complete_multipart(key, "../../etc", &parts)
        .await
        .unwrap_err()
        .is_not_found());
}
