//! The gRPC message framing of a body: each message is a 5-byte prefix (a
//! compressed flag and the big-endian u32 length) and its bytes, split across
//! HTTP/2 data frames anyhow. [`MessageFramer`] finds the prefixes as frames
//! pass, for the payload limit (`crate::auth::PayloadLimit`) and the stream
//! message counters (`crate::telemetry::requests`).

/// Bytes before each message: the compressed flag and the length.
const PREFIX_BYTES: usize = 5;

/// Where a body is in its messages, fed one data frame at a time.
#[derive(Debug, Default)]
pub struct MessageFramer {
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; PREFIX_BYTES],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl MessageFramer {
    /// Reads one data frame, calling `on_message` with the length of each
    /// message whose prefix it completes; stops at the first error.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        mut on_message: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skipped = self.remaining.min(data.len());
                self.remaining -= skipped;
                data = &data[skipped..];
                continue;
            }
            let take = (PREFIX_BYTES - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == PREFIX_BYTES {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
                on_message(len)?;
                self.remaining = len;
            }
        }
        Ok(())
    }

    /// Reads one data frame; returns how many messages start in it.
    pub fn count(&mut self, data: &[u8]) -> u64 {
        let mut started = 0;
        let _ = self.feed(data, |_| {
            started += 1;
            Ok::<(), std::convert::Infallible>(())
        });
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `messages` framed as gRPC does, concatenated.
    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for message in messages {
            body.push(0);
            let len = u32::try_from(message.len()).expect("small");
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(message);
        }
        body
    }

    #[test]
    fn messages_are_found_however_the_frames_split_them() {
        let body = framed(&[b"hello", b"", b"a longer message"]);
        for frame_len in 1..=body.len() {
            let mut framer = MessageFramer::default();
            let mut lengths = Vec::new();
            for frame in body.chunks(frame_len) {
                let _ = framer.feed(frame, |len| {
                    lengths.push(len);
                    Ok::<(), ()>(())
                });
            }
            assert_eq!(lengths, [5, 0, 16], "frames of {frame_len} bytes");
        }
        let mut framer = MessageFramer::default();
        assert_eq!(framer.count(&body), 3);
    }

    #[test]
    fn an_error_stops_at_its_message() {
        let body = framed(&[b"ok", b"too long"]);
        let mut framer = MessageFramer::default();
        let refused = framer.feed(&body, |len| if len > 4 { Err(len) } else { Ok(()) });
        assert_eq!(refused, Err(8));
    }
}
