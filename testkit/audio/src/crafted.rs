//! Crafted audio written by the tests themselves: WAV headers with any values, and FLAC streams
//! of silence (CONSTANT subframes, a dozen bytes per 4096 frames) of any length.

/// A RIFF/WAVE file: a 16-byte `fmt ` chunk with these values, then a `data` chunk that declares
/// `declared_len` bytes and holds `present` zero bytes.
pub fn wav(
    format_tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    declared_len: u32,
    present: usize,
) -> Vec<u8> {
    let block_align = u32::from(channels) * u32::from(bits).div_ceil(8);
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&36u32.saturating_add(declared_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format_tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&rate.wrapping_mul(block_align).to_le_bytes());
    out.extend_from_slice(&(block_align as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&declared_len.to_le_bytes());
    out.resize(out.len() + present, 0);
    out
}

/// 16-bit PCM WAV whose header is honest apart from `rate` and `channels`.
pub fn pcm_wav(rate: u32, channels: u16, bytes: u32) -> Vec<u8> {
    wav(1, channels, rate, 16, bytes, bytes as usize)
}

/// Frames per FLAC block in [`silent_flac`].
pub const FLAC_BLOCK: u64 = 4096;

/// A mono 16-bit FLAC whose STREAMINFO says `rate` Hz and `declared` frames, followed by
/// `blocks` blocks of 4096 silent frames.
pub fn silent_flac(rate: u32, declared: u64, blocks: u64) -> Vec<u8> {
    let mut out = b"fLaC".to_vec();
    out.extend_from_slice(&[0x80, 0, 0, 34]); // last metadata block: STREAMINFO, 34 bytes
    out.extend_from_slice(&(FLAC_BLOCK as u16).to_be_bytes()); // min block size
    out.extend_from_slice(&(FLAC_BLOCK as u16).to_be_bytes()); // max block size
    out.extend_from_slice(&[0; 6]); // min and max frame size: unknown
                                    // rate (20 bits), channels - 1 (3 bits), bits - 1 (5 bits), total frames (36 bits).
    let packed = (u64::from(rate) & 0xF_FFFF) << 44 | 15 << 36 | (declared & 0xF_FFFF_FFFF);
    out.extend_from_slice(&packed.to_be_bytes());
    out.extend_from_slice(&[0; 16]); // MD5: unknown
    for n in 0..blocks {
        let start = out.len();
        // Sync, fixed blocking; 4096 frames, rate from STREAMINFO; mono, 16 bits.
        out.extend_from_slice(&[0xFF, 0xF8, 0xC0, 0x08]);
        out.extend_from_slice(&utf8_number(n));
        out.push(crc8(&out[start..]));
        out.extend_from_slice(&[0x00, 0x00, 0x00]); // CONSTANT subframe of value 0
        let crc = crc16(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// FLAC's "UTF-8" coding of a frame number.
fn utf8_number(n: u64) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let mut tail = Vec::new();
    let mut rest = n;
    let mut room = 6; // payload bits in the first byte, shrinking with each extra byte
    while rest >= 1 << room {
        tail.insert(0, 0x80 | (rest & 0x3F) as u8);
        rest >>= 6;
        room -= 1;
    }
    let lead = !(0xFFu8 >> (tail.len() + 1)) | rest as u8;
    std::iter::once(lead).chain(tail).collect()
}

fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                crc << 1 ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                crc << 1 ^ 0x8005
            } else {
                crc << 1
            };
        }
    }
    crc
}
