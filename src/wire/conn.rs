//! A byte stream with a read buffer, read one protocol message at a time: used during start-up and
//! authentication, before a session splits into its two relay directions.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::codec::{FrameError, Message, split_message, split_startup};

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Framed<S> {
    pub stream: S,
    pub rbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(stream: S) -> Self {
        Framed {
            stream,
            rbuf: BytesMut::with_capacity(8192),
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(ReadError::Closed);
        }
        Ok(())
    }

    /// Reads one tagged message.
    pub async fn read_message(&mut self) -> Result<Message, ReadError> {
        loop {
            if let Some(m) = split_message(&mut self.rbuf)? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// Reads one untagged start-up packet.
    pub async fn read_startup(&mut self) -> Result<Bytes, ReadError> {
        loop {
            if let Some(p) = split_startup(&mut self.rbuf)? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}
