//! Lexical helpers the classifiers share (classify.rs, flink.rs): pure byte tests on SQL text.

/// Whether byte `i` of `b` can be part of an unquoted identifier (PostgreSQL's rule: letters,
/// digits, `_`, and any non-ASCII byte); false past the end.
pub(crate) fn is_ident_byte(b: &[u8], i: usize) -> bool {
    i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_bytes() {
        let b = "a_1 \u{e9}$".as_bytes();
        let cases = [
            (0, true),
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (5, true),
            (6, false),
            (99, false),
        ];
        for (i, want) in cases {
            assert_eq!(is_ident_byte(b, i), want, "byte {i}");
        }
    }
}
