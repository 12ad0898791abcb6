//! Helpers shared by the fuzz targets in `fuzz_targets/`: split points
//! derived from the input, client-frame encoding, and the reference
//! decoders that the targets compare the relay's parsers with.
//!
//! Never used by the relay itself; see `fuzz/README.md`.

pub mod reference;

/// Chunk lengths that cover `len` bytes, derived from `seed` with a small
/// LCG, so a fuzz input picks its own split points deterministically.
/// Sizes run from 1 to 64 bytes, with an occasional large one, so both
/// byte-at-a-time feeding and big reads are exercised.
pub fn chunk_lengths(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let pick = (state >> 16) as usize;
        let size = if pick.is_multiple_of(16) {
            4096
        } else {
            pick % 64 + 1
        };
        let size = size.min(left);
        out.push(size);
        left -= size;
    }
    out
}

/// A few cut points strictly inside `0..len`, derived from `seed`.
pub fn cut_points(seed: u8, len: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    for size in chunk_lengths(seed, len) {
        at += size;
        if at < len {
            cuts.push(at);
        }
    }
    cuts
}

/// A client frame: `first` is the first header byte (FIN, RSV, opcode);
/// `mask: None` sends it unmasked; `declared_len` overrides the length the
/// header announces (the payload sent stays `payload`); `wide` forces a
/// 16-bit (1) or 64-bit (2) length field even when a shorter one fits.
pub fn client_frame(
    first: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    declared_len: Option<u64>,
    wide: u8,
) -> Vec<u8> {
    let len = declared_len.unwrap_or(payload.len() as u64);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match (len, wide % 3) {
        (0..=125, 0) => out.push(mask_bit | len as u8),
        (0..=0xFFFF, 0 | 1) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A message size limit picked by one input byte: tiny limits reach the
/// 1009 paths with small inputs, the default (1 MiB) the ordinary ones.
pub fn message_bytes_max(selector: u8) -> usize {
    const CHOICES: [usize; 8] = [1, 2, 16, 125, 126, 1000, 65_536, 1 << 20];
    CHOICES[usize::from(selector) % CHOICES.len()]
}
