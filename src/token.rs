//! Unguessable tokens: lease tokens of queue deliveries, lock tokens, auth
//! tokens. A token that can be guessed lets another client ack someone else's
//! job or release someone else's lock. The bytes come from `rand`'s thread-local
//! CSPRNG (ChaCha, seeded and reseeded from the operating system), which costs no
//! system call per token: lease tokens are made on every dequeue.

/// Bits of randomness in a lease or lock token.
pub const TOKEN_BITS: usize = 128;

/// `N` random bytes as lower-case hex.
pub fn random_hex<const N: usize>() -> String {
    let mut random = [0u8; N];
    rand::fill(&mut random[..]);
    hex(&random)
}

/// A new [`TOKEN_BITS`]-bit token, as 32 hex digits.
pub fn unguessable() -> String {
    random_hex::<{ TOKEN_BITS / 8 }>()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bits_of_hex_and_differ() {
        let (a, b) = (unguessable(), unguessable());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
