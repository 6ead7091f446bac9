//! A response body that counts the bytes it yields, for `/metrics`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

/// `body`, adding the length of every data frame it yields to `counter`. The size hint
/// is passed on, so a body of known length keeps its Content-Length.
pub fn counted(body: Body, counter: Counter) -> Body {
    Body::new(Counted {
        inner: body,
        counter,
    })
}

struct Counted {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn counts_what_it_yields_and_keeps_the_length() {
        let counter = Counter::default();
        let body = counted(Body::from("0123456789"), counter.clone());
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(10));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"0123456789");
        assert_eq!(counter.get(), 10);
    }
}
