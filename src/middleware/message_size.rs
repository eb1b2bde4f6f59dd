//! A request message size limit checked as the bytes arrive: only the gRPC frame headers are
//! read, so an oversized message is refused before it is buffered.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::Frame;
use pin_project_lite::pin_project;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::api::Refusal;

/// Refuses request messages over `limit` bytes, reading only the gRPC frame headers as the body
/// streams in: an oversized message is refused before it is buffered.
#[derive(Clone, Copy)]
pub struct MessageSizeLayer {
    limit: usize,
}

impl MessageSizeLayer {
    /// A limit of `limit` bytes per request message.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageSize {
            limit: self.limit,
            inner,
        }
    }
}

/// The service of [`MessageSizeLayer`].
#[derive(Clone)]
pub struct MessageSize<S> {
    limit: usize,
    inner: S,
}

impl<S> Service<Request<Body>> for MessageSize<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(request.map(|body| {
            Body::new(SizeCheckedBody {
                inner: body,
                frames: FrameReader::new(limit),
            })
        }))
    }
}

/// Follows gRPC length-prefixed framing (1 flag byte, 4 length bytes, the message) across
/// chunk boundaries.
struct FrameReader {
    limit: usize,
    header: [u8; 5],
    header_filled: usize,
    message_left: usize,
}

impl FrameReader {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; 5],
            header_filled: 0,
            message_left: 0,
        }
    }

    /// Reads a chunk; `Err` when a frame header announces a message over the limit.
    fn read(&mut self, mut chunk: &[u8]) -> Result<(), Refusal> {
        while !chunk.is_empty() {
            if self.message_left > 0 {
                let skipped = self.message_left.min(chunk.len());
                self.message_left -= skipped;
                chunk.advance(skipped);
                continue;
            }
            let copied = (5 - self.header_filled).min(chunk.len());
            self.header[self.header_filled..self.header_filled + copied]
                .copy_from_slice(&chunk[..copied]);
            self.header_filled += copied;
            chunk.advance(copied);
            if self.header_filled == 5 {
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if length > self.limit {
                    return Err(Refusal::MessageTooLarge { limit: self.limit });
                }
                self.message_left = length;
                self.header_filled = 0;
            }
        }
        Ok(())
    }
}

pin_project! {
    struct SizeCheckedBody {
        #[pin]
        inner: Body,
        frames: FrameReader,
    }
}

impl http_body::Body for SizeCheckedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(refusal) = this.frames.read(data)
        {
            // tonic's decoder finds this Status in the body error and answers with it.
            return Poll::Ready(Some(Err(refusal.into())));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, length as usize));
        bytes
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_chunking() {
        let stream = [frame(10), frame(3)].concat();
        for chunk_size in 1..stream.len() {
            let mut reader = FrameReader::new(10);
            for chunk in stream.chunks(chunk_size) {
                reader.read(chunk).unwrap();
            }
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_header_alone() {
        let mut reader = FrameReader::new(10);
        let header = &frame(11)[..5];
        reader.read(&header[..2]).unwrap();
        assert_eq!(
            reader.read(&header[2..]),
            Err(Refusal::MessageTooLarge { limit: 10 })
        );
    }
}
