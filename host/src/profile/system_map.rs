//! A kernel's `System.map`: `nm -n` output of the vmlinux, one `ADDRESS TYPE NAME` line per symbol.

use std::path::{Path, PathBuf};

/// The largest System.map read (a distribution kernel's is a few MB).
const MAX_LEN: u64 = 256 << 20;

/// Why a System.map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SystemMapError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than any System.map.
    #[error("{path}: {len} bytes is too large for a System.map")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A line is not `ADDRESS TYPE NAME`.
    #[error("{path}:{line}: not a System.map line (ADDRESS TYPE NAME): {text:?}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// The line, shortened.
        text: String,
    },
}

/// One symbol of a System.map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Its name.
    pub name: String,
    /// Its `nm` type letter: upper case for global symbols.
    pub kind: u8,
    /// Its link-time address.
    pub address: u64,
}

/// Reads the System.map at `path`.
pub fn read(path: &Path) -> Result<Vec<Symbol>, SystemMapError> {
    let io = |source| SystemMapError::Io { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_LEN {
        return Err(SystemMapError::TooLarge { path: path.to_path_buf(), len });
    }
    let text = crate::files::read_to_string(path).map_err(io)?;
    parse(&text).map_err(|(line, text)| SystemMapError::Syntax { path: path.to_path_buf(), line, text })
}

/// Parses System.map text; an error gives the line number and (shortened) line.
fn parse(text: &str) -> Result<Vec<Symbol>, (usize, String)> {
    let mut symbols = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let parsed = (|| {
            let address = u64::from_str_radix(words.next()?, 16).ok()?;
            let kind = match words.next()?.as_bytes() {
                [kind] if kind.is_ascii_alphabetic() => *kind,
                _ => return None,
            };
            let name = words.next()?;
            words.next().is_none().then(|| Symbol { name: name.to_string(), kind, address })
        })();
        match parsed {
            Some(symbol) => symbols.push(symbol),
            None => return Err((number + 1, line.chars().take(80).collect())),
        }
    }
    Ok(symbols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_bad_lines_are_named() {
        let symbols = parse("0000000000000000 D __per_cpu_start\nffffffff81000000 T _text\n\n").expect("parses");
        assert_eq!(symbols.len(), 2);
        assert_eq!(symbols[1], Symbol { name: "_text".into(), kind: b'T', address: 0xffff_ffff_8100_0000 });
        assert_eq!(parse("a T x\nzz T y").err().map(|e| e.0), Some(2));
        assert!(parse("ffffffff81000000 TT x").is_err());
        assert!(parse("ffffffff81000000 T x extra").is_err());
        assert!(parse("ffffffff81000000 T").is_err());
    }
}
