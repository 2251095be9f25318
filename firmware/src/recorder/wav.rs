//! The recorder's WAV layout and the pure decisions about it: the header bytes, and what
//! start-up does with a file a crash left behind ([`inspect`]).
//!
//! Every recording is one canonical 44-byte RIFF/WAVE header (`fmt ` chunk of 16
//! bytes: PCM, 2 channels, 8000 Hz, 16 bits; then the `data` chunk) followed by
//! interleaved little-endian samples, left channel first. The recorder appends audio
//! in whole 20 ms stereo frames ([`FRAME_BYTES`]) and rewrites the two size fields
//! from time to time, so a file cut at any moment is one of:
//!
//! - intact: the sizes match the file (the last header update was the last write);
//! - stale sizes and/or a torn last frame: the fixed fields are ours, the sizes are
//!   not the file's. [`inspect`] answers [`Verdict::Repair`] with the length to keep
//!   (header + whole frames) and the header to write;
//! - not this layout at all (another program's file, garbage, a torn header that is
//!   not a prefix of ours): [`Verdict::Quarantine`] with the reason.
//!
//! These are functions over bytes so every cut of a file can be tested without a
//! filesystem (see the tests: every prefix of a small recording either plays or is
//! quarantined, and none panics).
//!
//! Writing the header by hand instead of with `hound`: hound writes the header once
//! at the start and fixes the sizes only on `flush`/`finalize`, and it neither fsyncs
//! nor lets the caller choose when; the crash-safety rule (sizes on disk never more
//! than about a second behind, an fsync at a bounded interval, a known layout that
//! start-up can repair) needs control of both, and the header is 44 fixed bytes.

/// Sample rate of recordings (Hz).
pub const SAMPLE_RATE: u32 = 8000;
/// Channels: caller left, agent/box side right.
pub const CHANNELS: u16 = 2;
/// Bits per sample.
pub const BITS: u16 = 16;
/// Bytes of one stereo sample frame (block align).
pub const BLOCK_ALIGN: u16 = CHANNELS * BITS / 8;
/// Bytes per second of audio.
pub const BYTE_RATE: u32 = SAMPLE_RATE * BLOCK_ALIGN as u32;
/// Samples per channel in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;
/// Bytes of one 20 ms stereo frame in the file.
pub const FRAME_BYTES: u64 = FRAME_SAMPLES as u64 * BLOCK_ALIGN as u64;
/// Length of the header; audio starts here.
pub const HEADER_LEN: u64 = 44;
/// The format name registered for these files (`RecordingMeta::format`).
pub const FORMAT: &str = "wav/pcm16/stereo";

/// Byte offsets of the two size fields the recorder rewrites.
pub const RIFF_SIZE_OFFSET: u64 = 4;
/// See [`RIFF_SIZE_OFFSET`].
pub const DATA_SIZE_OFFSET: u64 = 40;

/// The header for `data_len` bytes of audio. Data longer than a RIFF file can describe
/// (4 GiB) is clamped; the recorder stops long before (a day of audio is 2.8 GB).
pub fn header(data_len: u64) -> [u8; HEADER_LEN as usize] {
    header_for(CHANNELS, data_len)
}

/// [`header`] for `channels` channels (the same layout otherwise: PCM, 8000 Hz, 16
/// bits, data at byte 44): voicemail messages are mono ([`crate::voicemail`]).
pub fn header_for(channels: u16, data_len: u64) -> [u8; HEADER_LEN as usize] {
    let block_align = channels * BITS / 8;
    let byte_rate = SAMPLE_RATE * u32::from(block_align);
    let data = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    let data = data.min(u32::MAX - 36);
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&BITS.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// The two size fields for `data_len` bytes of audio, as written at
/// [`RIFF_SIZE_OFFSET`] and [`DATA_SIZE_OFFSET`].
pub fn size_fields(data_len: u64) -> ([u8; 4], [u8; 4]) {
    let h = header(data_len);
    let mut riff = [0u8; 4];
    let mut data = [0u8; 4];
    riff.copy_from_slice(&h[4..8]);
    data.copy_from_slice(&h[40..44]);
    (riff, data)
}

/// Length of the audio in ms for `data_len` bytes.
pub fn duration_ms(data_len: u64) -> i64 {
    i64::try_from(data_len.saturating_mul(1000) / u64::from(BYTE_RATE)).unwrap_or(i64::MAX)
}

/// Interleaves one 20 ms frame of each channel into `out` (appended).
pub fn interleave(left: &[i16; FRAME_SAMPLES], right: &[i16; FRAME_SAMPLES], out: &mut Vec<u8>) {
    out.reserve(FRAME_BYTES as usize);
    for (l, r) in left.iter().zip(right) {
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
    }
}

/// What to do with a recording file found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The header matches the file: keep it as is.
    Intact {
        /// Bytes of audio.
        data_len: u64,
    },
    /// Ours, cut by a crash: truncate the file to `keep_len` bytes (drops a torn last
    /// frame; may equal the file's length) and write `header` at offset 0.
    Repair {
        /// Bytes of audio kept (whole 20 ms frames).
        data_len: u64,
        /// The file's length after the repair (`HEADER_LEN + data_len`).
        keep_len: u64,
        /// The header to write.
        header: [u8; HEADER_LEN as usize],
    },
    /// Not a recording of this layout: move it aside.
    Quarantine {
        /// Why.
        reason: &'static str,
    },
}

/// Decides what to do with a file of `file_len` bytes whose first bytes are `head`
/// (at least `min(file_len, HEADER_LEN)` of them; more are ignored).
///
/// The header's fixed fields (everything but the two sizes) must be ours, or be a
/// prefix of ours when the file is shorter than a header (a header torn by the crash:
/// repaired to an empty recording). The sizes are never trusted: the audio is the
/// whole frames after the header.
pub fn inspect(head: &[u8], file_len: u64) -> Verdict {
    inspect_for(CHANNELS, head, file_len)
}

/// [`inspect`] for a file of `channels` channels (whole 20 ms frames of that many
/// channels are kept).
pub fn inspect_for(channels: u16, head: &[u8], file_len: u64) -> Verdict {
    let frame_bytes = FRAME_SAMPLES as u64 * u64::from(channels * BITS / 8);
    let expected = header_for(channels, 0);
    let have = usize::try_from(file_len.min(HEADER_LEN)).unwrap_or(0);
    if head.len() < have {
        return Verdict::Quarantine {
            reason: "the header could not be read whole",
        };
    }
    let sizes = 4..8usize;
    let data_size = 40..44usize;
    let fixed_ok = head[..have]
        .iter()
        .zip(&expected[..have])
        .enumerate()
        .all(|(i, (a, b))| sizes.contains(&i) || data_size.contains(&i) || a == b);
    if !fixed_ok {
        let magic_ok =
            (have < 4 || &head[0..4] == b"RIFF") && (have < 12 || &head[8..12] == b"WAVE");
        let reason = if !magic_ok {
            "not a RIFF/WAVE file"
        } else {
            if channels == CHANNELS {
                "a WAV layout other than the recorder's (16-bit stereo PCM at 8 kHz, data at byte 44)"
            } else {
                "a WAV layout other than a voicemail message's (16-bit mono PCM at 8 kHz, data at byte 44)"
            }
        };
        return Verdict::Quarantine { reason };
    }
    let audio = file_len.saturating_sub(HEADER_LEN);
    let data_len = audio - audio % frame_bytes;
    let keep_len = HEADER_LEN + data_len;
    let want = header_for(channels, data_len);
    if keep_len == file_len && have == HEADER_LEN as usize && head[..have] == want[..] {
        return Verdict::Intact { data_len };
    }
    Verdict::Repair {
        data_len,
        keep_len,
        header: want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small recording as the recorder writes it: header then `frames` frames.
    fn recording(frames: u64) -> Vec<u8> {
        let mut out = header(frames * FRAME_BYTES).to_vec();
        let mut left = [0i16; FRAME_SAMPLES];
        let mut right = [0i16; FRAME_SAMPLES];
        for f in 0..frames {
            for i in 0..FRAME_SAMPLES {
                left[i] = (f as i16) * 100 + i as i16;
                right[i] = -left[i];
            }
            interleave(&left, &right, &mut out);
        }
        out
    }

    /// Whether `bytes` is a WAV that plays: a header that `parse_wav` (the sync
    /// code's independent parser) accepts with the recorder's format, whose data size
    /// matches the bytes after it.
    fn plays(bytes: &[u8]) -> bool {
        let Ok(info) = crate::sync::files::parse_wav(bytes) else {
            return false;
        };
        let riff = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as u64;
        info.format() == FORMAT
            && info.sample_rate == SAMPLE_RATE
            && info.data_bytes == bytes.len() as u64 - HEADER_LEN
            && riff == bytes.len() as u64 - 8
            && info.data_bytes % u64::from(BLOCK_ALIGN) == 0
    }

    /// What start-up leaves of `bytes`: the repaired file, or `None` if quarantined.
    fn after_startup(bytes: &[u8]) -> Option<Vec<u8>> {
        match inspect(bytes, bytes.len() as u64) {
            Verdict::Intact { .. } => Some(bytes.to_vec()),
            Verdict::Repair {
                keep_len, header, ..
            } => {
                // set_len: a file shorter than a header grows (with zeros).
                let mut out = bytes[..(keep_len as usize).min(bytes.len())].to_vec();
                if out.len() < HEADER_LEN as usize {
                    out.resize(HEADER_LEN as usize, 0);
                }
                out[..HEADER_LEN as usize].copy_from_slice(&header);
                Some(out)
            }
            Verdict::Quarantine { .. } => None,
        }
    }

    #[test]
    fn the_header_is_what_parse_wav_reads() {
        let file = recording(3);
        assert!(plays(&file));
        let info = crate::sync::files::parse_wav(&file).expect("wav");
        assert_eq!(info.channels, 2);
        assert_eq!(info.bits, 16);
        assert_eq!(info.duration_ms(), 60);
        assert_eq!(duration_ms(3 * FRAME_BYTES), 60);
        assert_eq!(
            inspect(&file, file.len() as u64),
            Verdict::Intact {
                data_len: 3 * FRAME_BYTES
            }
        );
    }

    #[test]
    fn every_cut_of_a_recording_plays_after_startup_and_keeps_whole_frames() {
        let full = recording(4);
        for cut in 0..=full.len() {
            // The sizes on disk may be from any earlier header update (or the first).
            for stale_frames in [0u64, 1, 4] {
                let mut bytes = full[..cut].to_vec();
                let stale = header(stale_frames * FRAME_BYTES);
                let n = bytes.len().min(HEADER_LEN as usize);
                bytes[..n].copy_from_slice(&stale[..n]);
                let fixed = after_startup(&bytes)
                    .unwrap_or_else(|| panic!("our own file cut at {cut} was quarantined"));
                assert!(plays(&fixed), "cut at {cut}, stale {stale_frames}");
                let whole = (cut as u64).saturating_sub(HEADER_LEN) / FRAME_BYTES;
                assert_eq!(fixed.len() as u64, HEADER_LEN + whole * FRAME_BYTES);
                // The audio kept is exactly the audio written.
                assert_eq!(
                    fixed[HEADER_LEN as usize..],
                    full[HEADER_LEN as usize..fixed.len()]
                );
            }
        }
    }

    #[test]
    fn a_repaired_file_is_intact_the_second_time() {
        let full = recording(2);
        let cut = &full[..full.len() - 7];
        let fixed = after_startup(cut).expect("repaired");
        assert_eq!(
            inspect(&fixed, fixed.len() as u64),
            Verdict::Intact {
                data_len: FRAME_BYTES
            }
        );
    }

    #[test]
    fn files_that_are_not_our_wav_are_quarantined_at_every_length() {
        let mut other_rate = recording(2);
        other_rate[24..28].copy_from_slice(&16000u32.to_le_bytes());
        let mut mono = recording(2);
        mono[22..24].copy_from_slice(&1u16.to_le_bytes());
        let text =
            b"this is a text file that somebody copied here by mistake, long enough".to_vec();
        let mut garbage = vec![0u8; 300];
        for (i, b) in garbage.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        for bad in [other_rate, mono, text, garbage] {
            let first_bad = header(0)
                .iter()
                .zip(&bad)
                .enumerate()
                .find(|(i, (a, b))| !(4..8).contains(i) && !(40..44).contains(i) && a != b)
                .map(|(i, _)| i)
                .expect("differs from our header");
            for cut in 0..=bad.len() {
                let slice = &bad[..cut];
                let verdict = inspect(slice, cut as u64);
                if cut > first_bad {
                    assert!(
                        matches!(verdict, Verdict::Quarantine { .. }),
                        "cut {cut}: {verdict:?}"
                    );
                } else {
                    // Shorter than the first byte that differs: a torn header of ours
                    // as far as anyone can tell; it becomes an empty recording.
                    assert!(plays(&after_startup(slice).expect("repaired")));
                }
            }
        }
    }

    #[test]
    fn a_short_head_buffer_is_quarantined_not_a_panic() {
        let file = recording(1);
        assert!(matches!(
            inspect(&file[..10], file.len() as u64),
            Verdict::Quarantine { .. }
        ));
    }

    #[test]
    fn interleave_puts_left_first() {
        let mut l = [0i16; FRAME_SAMPLES];
        let mut r = [0i16; FRAME_SAMPLES];
        l[0] = 0x0102;
        r[0] = -2;
        let mut out = Vec::new();
        interleave(&l, &r, &mut out);
        assert_eq!(out.len() as u64, FRAME_BYTES);
        assert_eq!(&out[..4], &[0x02, 0x01, 0xfe, 0xff]);
    }
}
