//! Binary values on the wire are base64url without padding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; rejects padding, other alphabets and trailing garbage.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// Decodes exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // 32 bytes are 43 characters; checking the length first bounds the work on hostile input.
    if text.len() != N.div_ceil(3) * 4 - (3 - N % 3) % 3 {
        return None;
    }
    decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let bytes = [0xfbu8; 32];
        let text = encode(bytes);
        assert_eq!(text.len(), 43);
        assert_eq!(decode_array::<32>(&text), Some(bytes));
        assert_eq!(decode_array::<32>(&format!("{text}=")), None);
        assert_eq!(decode_array::<32>(&text.replace('-', "+")), None);
        assert_eq!(decode_array::<64>(&encode([1u8; 64])), Some([1u8; 64]));
    }
}
