//! Adapters between our byte streams and the S3 SDK's bodies.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;
use futures::StreamExt;
use http_body::{Body, Frame, SizeHint};
use sync_wrapper::SyncWrapper;

use super::{ByteStream, StorageError};

/// A request body of known length from a [`ByteStream`].
struct StreamBody {
    // The SDK wants `Sync` bodies; the stream is only ever polled through `&mut`.
    stream: SyncWrapper<ByteStream>,
    length: u64,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = StorageError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StorageError>>> {
        let this = self.get_mut();
        let next = ready!(this.stream.get_mut().poll_next_unpin(cx));
        Poll::Ready(next.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

/// An SDK body that streams `stream`, announced as `length` bytes.
pub(crate) fn sdk_body(stream: ByteStream, length: u64) -> SdkByteStream {
    SdkByteStream::from_body_1_x(StreamBody {
        stream: SyncWrapper::new(stream),
        length,
    })
}

/// Our stream of an SDK response body.
pub(crate) fn from_sdk(op: &'static str, key: &str, body: SdkByteStream) -> ByteStream {
    let key = key.to_string();
    Box::pin(futures::stream::try_unfold(body, move |mut body| {
        let key = key.clone();
        async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(StorageError::other(op, key, e)),
            }
        }
    }))
}
