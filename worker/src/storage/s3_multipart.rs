//! Multipart uploads on S3: the worker creates, completes and aborts; uploaders PUT
//! the parts straight to S3 through presigned URLs.

use std::time::Duration;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as SdkPart};

use super::s3::{presigning, S3Store};
use super::s3_error::map_sdk_error;
use super::{check_part_number, CompletedPart, Result, StorageError};

impl S3Store {
    /// Starts a multipart upload; returns its id.
    pub async fn create_multipart(&self, key: &str) -> Result<String> {
        const OP: &str = "create_multipart";
        let full = self.full_key(OP, key)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, key, e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError::other(OP, key, "no upload id in the answer"))
    }

    /// A presigned PUT URL for one part.
    pub async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        expires: Duration,
    ) -> Result<String> {
        const OP: &str = "presign_part";
        let full = self.full_key(OP, key)?;
        check_part_number(OP, key, part_number)?;
        let config = presigning(OP, key, expires)?;
        if let Some(quick) = self.quick().await {
            let number = part_number.to_string();
            return quick
                .presign(
                    "PUT",
                    &full,
                    &[
                        ("partNumber", number.as_str()),
                        ("uploadId", upload_id),
                        ("x-id", "UploadPart"),
                    ],
                    &[],
                    expires,
                    std::time::SystemTime::now(),
                )
                .await
                .map_err(|e| StorageError::other(OP, key, e));
        }
        let presigned = self
            .presigner
            .upload_part()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            // check_part_number bounds it by 10000, well inside i32.
            .part_number(part_number as i32)
            .presigned(config)
            .await
            .map_err(|e| map_sdk_error(OP, key, e))?;
        Ok(presigned.uri().to_string())
    }

    /// Completes an upload from its parts, in ascending part order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Option<String>> {
        const OP: &str = "complete_multipart";
        let full = self.full_key(OP, key)?;
        let mut sdk_parts = Vec::with_capacity(parts.len());
        for part in parts {
            check_part_number(OP, key, part.part_number)?;
            sdk_parts.push(
                SdkPart::builder()
                    .part_number(part.part_number as i32)
                    .e_tag(&part.etag)
                    .build(),
            );
        }
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(sdk_parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(OP, key, e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// Aborts an upload; an unknown upload is not an error.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        const OP: &str = "abort_multipart";
        let full = self.full_key(OP, key)?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_sdk_error(OP, key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
