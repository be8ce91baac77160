//! Reading request bodies: at most a limit, and within the body deadline the server sets
//! (its body fails with [`BodyTimedOut`]). Every front door reads bodies here and renders a
//! [`BodyError`] in its own shape.

use axum::body::{Body, HttpBody};
use bytes::Bytes;

/// Why reading a request body failed: it had not arrived within the body deadline.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// It is (or declared itself) larger than the limit: 413.
    TooLarge { limit: usize },
    /// It had not arrived by the body deadline: 408 (and the connection is closed).
    TimedOut,
    /// It has no declared length where one is required: 411.
    LengthRequired,
    /// The connection broke or the framing was bad: 400.
    Unreadable,
}

impl BodyError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyError::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => http::StatusCode::REQUEST_TIMEOUT,
            BodyError::LengthRequired => http::StatusCode::LENGTH_REQUIRED,
            BodyError::Unreadable => http::StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            BodyError::TimedOut => f.write_str("the request body did not arrive in time"),
            BodyError::LengthRequired => {
                f.write_str("a request with a body must declare its Content-Length")
            }
            BodyError::Unreadable => f.write_str("the request body could not be read"),
        }
    }
}

/// The whole body, refused at once if its declared length is over `limit`.
pub async fn read(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if caused_by::<BodyTimedOut>(&e) {
            BodyError::TimedOut
        } else if caused_by::<http_body_util::LengthLimitError>(&e) {
            BodyError::TooLarge { limit }
        } else {
            BodyError::Unreadable
        }
    })
}

/// The length a body declares: `None` for a body framed without one (chunked).
pub fn declared_length(body: &Body) -> Option<u64> {
    if body.is_end_stream() {
        return Some(0);
    }
    body.size_hint().exact()
}

fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<T>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// Frames that are all ready, with no declared length (like a chunked body).
    struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn chunked(items: Vec<Result<&'static str, BoxError>>) -> Body {
        Body::new(Frames(
            items
                .into_iter()
                .map(|i| i.map(|c| Frame::data(Bytes::from(c))))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn sizes_are_checked_before_and_while_reading() {
        assert_eq!(read(Body::from("abc"), 3).await, Ok(Bytes::from("abc")));
        assert_eq!(
            read(Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge { limit: 3 })
        );
        // A body with no declared length is cut at the limit.
        assert_eq!(
            read(chunked(vec![Ok("ab"), Ok("cd")]), 3).await,
            Err(BodyError::TooLarge { limit: 3 })
        );
        assert_eq!(declared_length(&Body::empty()), Some(0));
        assert_eq!(declared_length(&Body::from("abc")), Some(3));
        assert_eq!(declared_length(&chunked(vec![Ok("a")])), None);
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_is_told_apart() {
        let late = chunked(vec![Ok("a"), Err(Box::new(BodyTimedOut))]);
        assert_eq!(read(late, 100).await, Err(BodyError::TimedOut));
        let broken = chunked(vec![Err(BoxError::from("reset"))]);
        assert_eq!(read(broken, 100).await, Err(BodyError::Unreadable));
    }
}
