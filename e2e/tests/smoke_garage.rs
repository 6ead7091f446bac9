//! Garage as the S3 server: a bucket and key per test, presigned PUTs with checksums.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn put_get_and_presigned_put_with_checksum() {
    let bucket = larder_e2e::garage::bucket("smoke");
    let s3 = bucket.client();

    s3.put_object()
        .bucket(&bucket.name)
        .key("plain")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket(&bucket.name)
        .key("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );

    let body = b"nar bytes".to_vec();
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    let presigned = s3
        .put_object()
        .bucket(&bucket.name)
        .key("nar/checked")
        .checksum_sha256(&checksum)
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let put = |bytes: Vec<u8>| {
        let mut req = http.put(presigned.uri());
        for (name, value) in presigned.headers() {
            req = req.header(name, value);
        }
        req.body(bytes).send()
    };

    // One byte more than declared: the storage itself refuses it, and nothing is stored.
    let mut wrong = body.clone();
    wrong.push(b'!');
    let rejected = put(wrong).await.unwrap();
    assert_eq!(
        rejected.status().as_u16(),
        400,
        "{}",
        rejected.text().await.unwrap()
    );
    let head = s3
        .head_object()
        .bucket(&bucket.name)
        .key("nar/checked")
        .send()
        .await;
    assert!(head.is_err(), "rejected upload left an object behind");

    let accepted = put(body.clone()).await.unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    let got = s3
        .get_object()
        .bucket(&bucket.name)
        .key("nar/checked")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[..]
    );

    // A second test bucket is not visible with this key.
    let other = larder_e2e::garage::bucket("smoke-other");
    let denied = s3.list_objects_v2().bucket(&other.name).send().await;
    assert!(
        denied.is_err(),
        "one test's key can read another test's bucket"
    );
}
