//! How a published message carries its producer's trace context through Redis.
//!
//! A message without one goes to Redis as its bare payload. One with a trace
//! context, or whose payload starts with the marker byte 0x00 (so it cannot be
//! taken for an envelope), goes as an envelope: 0x00, the version 1, the
//! context's length (big-endian u16), the context (`traceparent`, then
//! `\n` and `tracestate` when there is one), then the payload. Subscribers open
//! envelopes; anything else is a bare payload.

use crate::proto::TraceContext;

/// The first byte of an envelope.
const MARKER: u8 = 0;
/// The envelope format this code writes and reads.
const VERSION: u8 = 1;
/// Marker, version and length.
const HEADER: usize = 4;

/// What goes to Redis for `payload` published with `context`.
pub fn seal(payload: Vec<u8>, context: Option<&TraceContext>) -> Vec<u8> {
    if context.is_none() && payload.first() != Some(&MARKER) {
        return payload;
    }
    let mut text = String::new();
    if let Some(context) = context {
        text.push_str(&context.traceparent);
        if !context.tracestate.is_empty() {
            text.push('\n');
            text.push_str(&context.tracestate);
        }
    }
    // A context longer than a u16 is not a W3C one; send the payload alone.
    let Ok(len) = u16::try_from(text.len()) else {
        return seal(payload, None);
    };
    let mut sealed = Vec::with_capacity(HEADER + text.len() + payload.len());
    sealed.extend_from_slice(&[MARKER, VERSION]);
    sealed.extend_from_slice(&len.to_be_bytes());
    sealed.extend_from_slice(text.as_bytes());
    sealed.extend_from_slice(&payload);
    sealed
}

/// The payload and trace context of a message as it came from Redis.
pub fn open(mut message: Vec<u8>) -> (Vec<u8>, Option<TraceContext>) {
    let [MARKER, VERSION, a, b, ..] = message[..] else {
        return (message, None);
    };
    let len = usize::from(u16::from_be_bytes([a, b]));
    let Some(text) = message.get(HEADER..HEADER + len) else {
        return (message, None);
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return (message, None);
    };
    let context = (!text.is_empty()).then(|| {
        let (traceparent, tracestate) = text.split_once('\n').unwrap_or((text, ""));
        TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.to_owned(),
        }
    });
    // The payload moves to the front of the buffer: no second allocation.
    message.drain(..HEADER + len);
    (message, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_without_a_context_goes_bare() {
        assert_eq!(seal(b"hello".to_vec(), None), b"hello");
        assert_eq!(open(b"hello".to_vec()), (b"hello".to_vec(), None));
        assert_eq!(open(Vec::new()), (Vec::new(), None));
    }

    #[test]
    fn contexts_and_payloads_come_back_whole() {
        let context = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "vendor=1".into(),
        };
        for payload in [&b"hello"[..], b"", &[0, 1, 0, 9][..]] {
            let sealed = seal(payload.to_vec(), Some(&context));
            assert_eq!(open(sealed), (payload.to_vec(), Some(context.clone())));
        }
    }

    #[test]
    fn a_payload_that_looks_like_an_envelope_is_sealed_to_stay_itself() {
        let tricky = vec![0, 1, 0, 0, b'x'];
        let sealed = seal(tricky.clone(), None);
        assert_ne!(sealed, tricky);
        assert_eq!(open(sealed), (tricky, None));
    }
}
