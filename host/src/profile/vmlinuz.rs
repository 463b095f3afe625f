//! The kernel ELF image inside an x86 bzImage (`vmlinuz`).
//!
//! A bzImage is real-mode setup code followed by the protected-mode decompressor, which carries
//! the compressed kernel (`vmlinux.bin`, the vmlinux stripped of its symbol table and debug
//! sections, plus its relocations) as its payload. The boot protocol's setup header (see the
//! kernel's `Documentation/arch/x86/boot.rst`) says where: `setup_sects` at 0x1f1, the `HdrS`
//! magic at 0x202, the protocol version at 0x206 (2.08 or later has the payload fields),
//! `payload_offset` at 0x248 (from the start of the protected-mode code) and `payload_length` at
//! 0x24c. The compression is told by the payload's own magic; the build appends the decompressed
//! size as the payload's last four bytes (`arch/x86/boot/compressed/Makefile`, the `*_with_size`
//! commands; gzip's own trailer is the same number), which bounds what is decompressed.

use std::io::Read;

/// The largest decompressed kernel accepted (a distribution vmlinux.bin is some tens of MB).
pub const MAX_DECOMPRESSED: usize = 512 << 20;

/// Offset of the `HdrS` magic in the setup header.
const HDRS_OFFSET: usize = 0x202;
/// What one block of an LZ4 legacy stream decompresses to at most (8 MiB).
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// The magic of an LZ4 legacy stream (`lz4 -l`), little-endian.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;

/// Why no kernel could be taken from a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuzError {
    /// The file is not a bzImage at all.
    #[error("not a bzImage: no `HdrS` boot-protocol magic at {HDRS_OFFSET:#x}")]
    NotBzImage,
    /// The setup header is too old or inconsistent.
    #[error("bzImage setup header: {reason}")]
    Header {
        /// What is wrong.
        reason: String,
    },
    /// The payload is compressed with a method this build cannot read.
    #[error("the bzImage payload is compressed with {method}, which xsched cannot decompress (it reads gzip, xz, lzma, zstd and lz4)")]
    Unsupported {
        /// The method, as recognised from the payload's magic.
        method: &'static str,
    },
    /// Decompression failed.
    #[error("decompressing the {method} payload: {reason}")]
    Decompress {
        /// The compression method.
        method: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The decompressed kernel is larger than [`MAX_DECOMPRESSED`] or than the payload says.
    #[error("the {method} payload decompresses to more than {limit} bytes")]
    TooLarge {
        /// The compression method.
        method: &'static str,
        /// The bound that was exceeded.
        limit: usize,
    },
    /// The decompressed size differs from the one the payload records.
    #[error("the {method} payload decompressed to {found} bytes, its trailer says {expected}")]
    SizeMismatch {
        /// The compression method.
        method: &'static str,
        /// What came out.
        found: usize,
        /// What the trailer says (modulo 2^32).
        expected: u32,
    },
}

/// Whether `data` starts like a bzImage (the `HdrS` magic of the boot protocol).
pub fn is_bzimage(data: &[u8]) -> bool {
    data.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(b"HdrS")
}

/// The compression methods the kernel's x86 build offers, by payload magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Gzip,
    Xz,
    Lzma,
    Zstd,
    Lz4,
    Bzip2,
    Lzo,
}

impl Method {
    fn of(payload: &[u8]) -> Option<Self> {
        let starts = |magic: &[u8]| payload.starts_with(magic);
        Some(if starts(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Self::Lz4
        } else if starts(&[0x5d, 0, 0]) {
            Self::Lzma
        } else if starts(b"BZh") {
            Self::Bzip2
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Self::Lzo
        } else {
            return None;
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
            Self::Bzip2 => "bzip2",
            Self::Lzo => "lzo",
        }
    }
}

/// A little-endian integer of `N` bytes at `offset`.
fn le<const N: usize>(data: &[u8], offset: usize) -> Option<u64> {
    let bytes: [u8; N] = data.get(offset..offset.checked_add(N)?)?.try_into().ok()?;
    Some(bytes.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The compressed payload of the bzImage `data`.
fn payload(data: &[u8]) -> Result<&[u8], VmlinuzError> {
    if !is_bzimage(data) {
        return Err(VmlinuzError::NotBzImage);
    }
    let header = |reason: String| VmlinuzError::Header { reason };
    let version = le::<2>(data, 0x206).unwrap_or(0);
    if version < 0x208 {
        return Err(header(format!("boot protocol {}.{:02} predates the payload fields (2.08)", version >> 8, version & 0xff)));
    }
    let setup_sects = match le::<1>(data, 0x1f1).unwrap_or(0) {
        0 => 4,
        n => n,
    };
    let offset = le::<4>(data, 0x248).unwrap_or(0);
    let length = le::<4>(data, 0x24c).unwrap_or(0);
    let start = (setup_sects + 1) * 512 + offset;
    usize::try_from(start)
        .ok()
        .zip(usize::try_from(length).ok())
        .and_then(|(start, length)| data.get(start..start.checked_add(length)?))
        .filter(|p| p.len() >= 8)
        .ok_or_else(|| header(format!("payload {start:#x}+{length:#x} lies outside the {}-byte file", data.len())))
}

/// Decompresses the kernel of the bzImage `data` (at most [`MAX_DECOMPRESSED`] bytes).
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, VmlinuzError> {
    let payload = payload(data)?;
    let method = Method::of(payload).ok_or_else(|| VmlinuzError::Header {
        reason: format!("the payload starts with {:02x?}, the magic of no known compression", payload.get(..6).unwrap_or(payload)),
    })?;
    let split = payload.len().saturating_sub(4);
    let (stream, trailer) = payload.split_at(split);
    let expected = u32::try_from(le::<4>(trailer, 0).unwrap_or(0)).unwrap_or(u32::MAX);
    let limit = MAX_DECOMPRESSED.min(usize::try_from(expected).unwrap_or(usize::MAX));
    let name = method.name();
    let failed = |e: std::io::Error| VmlinuzError::Decompress { method: name, reason: e.to_string() };
    let out = match method {
        Method::Gzip => read_bounded(flate2::read::GzDecoder::new(payload), name, limit).map_err(failed)?,
        Method::Xz => read_bounded(lzma_rust2::XzReader::new(stream, false), name, limit).map_err(failed)?,
        Method::Lzma => {
            // Memory limit in KiB for the dictionary: the kernel's own decompressor uses at most 64 MiB.
            let reader = lzma_rust2::LzmaReader::new_mem_limit(stream, 64 << 10, None).map_err(failed)?;
            read_bounded(reader, name, limit).map_err(failed)?
        }
        Method::Zstd => {
            let reader = ruzstd::decoding::StreamingDecoder::new(stream)
                .map_err(|e| VmlinuzError::Decompress { method: name, reason: e.to_string() })?;
            read_bounded(reader, name, limit).map_err(failed)?
        }
        Method::Lz4 => lz4_legacy(stream, limit)?,
        Method::Bzip2 | Method::Lzo => return Err(VmlinuzError::Unsupported { method: name }),
    };
    if out.len() > limit {
        return Err(VmlinuzError::TooLarge { method: name, limit });
    }
    if u32::try_from(out.len() & 0xffff_ffff).ok() != Some(expected) {
        return Err(VmlinuzError::SizeMismatch { method: name, found: out.len(), expected });
    }
    Ok(out)
}

/// Everything `reader` yields, up to one byte past `limit` (so an overrun is seen).
fn read_bounded(reader: impl Read, method: &'static str, limit: usize) -> std::io::Result<Vec<u8>> {
    log::debug!("decompressing a {method} kernel payload of at most {limit} bytes");
    let mut out = Vec::with_capacity(limit.min(MAX_DECOMPRESSED));
    reader.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1)).read_to_end(&mut out)?;
    Ok(out)
}

/// Decompresses an LZ4 legacy stream (`lz4 -l`: the magic, then blocks of at most 8 MiB each
/// preceded by their compressed length); a repeated magic starts another stream.
fn lz4_legacy(stream: &[u8], limit: usize) -> Result<Vec<u8>, VmlinuzError> {
    let failed = |reason: String| VmlinuzError::Decompress { method: "lz4", reason };
    let mut out = Vec::with_capacity(limit);
    let mut at = 4usize;
    while let Some(word) = le::<4>(stream, at) {
        at += 4;
        if word == u64::from(LZ4_LEGACY_MAGIC) {
            continue;
        }
        let length = usize::try_from(word).unwrap_or(usize::MAX);
        let block = at
            .checked_add(length)
            .and_then(|end| stream.get(at..end))
            .ok_or_else(|| failed(format!("a block of {length} bytes at {at:#x} runs past the stream")))?;
        let start = out.len();
        if start >= limit {
            return Err(VmlinuzError::TooLarge { method: "lz4", limit });
        }
        let room = LZ4_LEGACY_BLOCK.min(MAX_DECOMPRESSED - start);
        out.resize(start + room, 0);
        let written = lz4_flex::block::decompress_into(block, out.get_mut(start..).unwrap_or_default())
            .map_err(|e| failed(format!("the block at {at:#x}: {e}")))?;
        out.truncate(start + written);
        at += length;
    }
    if out.len() > limit {
        return Err(VmlinuzError::TooLarge { method: "lz4", limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A minimal bzImage around `payload`: one setup sector, protocol 2.15.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
        image.extend_from_slice(&[0xcc; 16]);
        image.extend_from_slice(payload);
        image
    }

    fn with_size(mut stream: Vec<u8>, size: usize) -> Vec<u8> {
        stream.extend_from_slice(&u32::try_from(size).expect("small").to_le_bytes());
        stream
    }

    fn kernel() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn gzip_payloads_decompress() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&kernel()).expect("compress");
        let payload = gz.finish().expect("compress");
        assert_eq!(decompress(&bzimage(&payload)).expect("decompresses"), kernel());
    }

    #[test]
    fn lz4_legacy_payloads_decompress() {
        let data = kernel();
        let mut stream = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(300_000) {
            let block = lz4_flex::block::compress(chunk);
            stream.extend_from_slice(&u32::try_from(block.len()).expect("small").to_le_bytes());
            stream.extend_from_slice(&block);
        }
        let image = bzimage(&with_size(stream.clone(), data.len()));
        assert_eq!(decompress(&image).expect("decompresses"), data);
        // A trailer that lies about the size is caught.
        let image = bzimage(&with_size(stream.clone(), data.len() - 1));
        assert!(matches!(decompress(&image), Err(VmlinuzError::TooLarge { .. })), "{:?}", decompress(&image));
        let image = bzimage(&with_size(stream, data.len() + 1));
        assert!(matches!(decompress(&image), Err(VmlinuzError::SizeMismatch { .. })));
    }

    /// What `testdata/kernel.bin.*` hold: x86 `call rel32` instructions (the BCJ filter's work)
    /// and filler, compressed by `xz --check=crc32 --x86 --lzma2=dict=1MiB` (as the kernel's
    /// `scripts/xz_wrap.sh` does, with a smaller dictionary), `xz --format=lzma` and `zstd -19`.
    fn calls() -> Vec<u8> {
        (0..16384i32).flat_map(|i| [&[0xe8][..], &((i % 64) * 16).to_le_bytes(), b"xs\x90"].concat()).collect()
    }

    #[test]
    fn xz_lzma_and_zstd_payloads_decompress() {
        let expected = calls();
        for (stream, checked) in [
            (&include_bytes!("testdata/kernel.bin.xz")[..], true),
            (include_bytes!("testdata/kernel.bin.lzma"), false),
            (include_bytes!("testdata/kernel.bin.zst"), false),
        ] {
            let image = bzimage(&with_size(stream.to_vec(), expected.len()));
            assert_eq!(decompress(&image).expect("decompresses"), expected);
            // A flipped bit: an error where the format has a checksum (xz's CRC32), at least no
            // panic elsewhere (what comes out is then checked as an ELF file, BTF and kallsyms).
            let mut bad = stream.to_vec();
            let middle = bad.len() / 2;
            bad[middle] ^= 0x10;
            let result = decompress(&bzimage(&with_size(bad, expected.len())));
            assert!(!checked || result.is_err());
        }
    }

    #[test]
    fn bad_headers_and_methods_are_named() {
        assert!(matches!(decompress(&[0u8; 100]), Err(VmlinuzError::NotBzImage)));
        let mut old = bzimage(&[0x1f, 0x8b, 0, 0, 0, 0, 0, 0]);
        old[0x206] = 0x07;
        assert!(matches!(decompress(&old), Err(VmlinuzError::Header { .. })));
        let mut outside = bzimage(&[0x1f, 0x8b, 0, 0, 0, 0, 0, 0]);
        outside[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompress(&outside), Err(VmlinuzError::Header { .. })));
        let bzip2 = bzimage(b"BZh91AY&SY\0\0\0\0");
        assert!(matches!(decompress(&bzip2), Err(VmlinuzError::Unsupported { method: "bzip2" })));
        let unknown = bzimage(&[7u8; 32]);
        assert!(matches!(decompress(&unknown), Err(VmlinuzError::Header { .. })));
    }

    #[test]
    fn corrupt_payloads_end_in_errors() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&kernel()).expect("compress");
        let payload = gz.finish().expect("compress");
        for i in (0..payload.len()).step_by(97) {
            let mut bad = payload.clone();
            bad[i] ^= 0x55;
            let _ = decompress(&bzimage(&bad));
        }
        let mut stream = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        let block = lz4_flex::block::compress(&kernel());
        stream.extend_from_slice(&u32::try_from(block.len()).expect("small").to_le_bytes());
        stream.extend_from_slice(&block);
        for i in (4..stream.len()).step_by(89) {
            let mut bad = stream.clone();
            bad[i] ^= 0xa5;
            let _ = decompress(&bzimage(&with_size(bad, kernel().len())));
        }
    }
}
