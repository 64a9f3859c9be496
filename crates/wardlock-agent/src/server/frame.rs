//! Newline-delimited frames with a hard size limit, read without ever buffering more
//! than the limit: a client that sends a gigabyte without a newline costs 64 KiB.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message longer than {0} bytes")]
    TooLarge(usize),
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    partial: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, max, partial: Vec::new() }
    }

    /// The next line without its newline (and a `\r` before it), or `None` at a clean end.
    /// Cancel-safe: a partial line stays buffered for the next call.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return if self.partial.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
            }
            let (take, done) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            if self.partial.len() + take > self.max {
                return Err(FrameError::TooLarge(self.max));
            }
            self.partial.extend_from_slice(&available[..take]);
            self.inner.consume(if done { take + 1 } else { take });
            if done {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_at_newlines_and_the_limit_holds() {
        let data: &[u8] = b"{\"a\":1}\r\n\n0123456789ABC\n";
        let mut r = FrameReader::new(tokio::io::BufReader::with_capacity(4, data), 10);
        assert_eq!(r.next().await.unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(r.next().await.unwrap().unwrap(), b"");
        assert!(matches!(r.next().await, Err(FrameError::TooLarge(10))));
    }

    #[tokio::test]
    async fn a_line_cut_off_by_the_end_is_an_error_and_a_clean_end_is_none() {
        let mut r = FrameReader::new(&b"{\"a\":1}\n{\"b\""[..], 100);
        assert!(r.next().await.unwrap().is_some());
        assert!(matches!(r.next().await, Err(FrameError::Truncated)));
        let mut r = FrameReader::new(&b""[..], 100);
        assert!(r.next().await.unwrap().is_none());
    }
}
