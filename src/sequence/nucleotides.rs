//! Nucleotide sequences byte by byte: GC content, reverse complement, k-mers.
//!
//! Letters are IUPAC nucleotide codes in either case; the answers are Biopython's
//! (`Bio.SeqUtils.gc_fraction`, `Bio.Seq.reverse_complement`), which the tests use as the oracle.

/// The complement of every byte: IUPAC DNA codes swapped (`U` pairs with `A`, as in
/// Biopython's DNA table), case kept, everything else (gaps, `*`, `.`, digits) unchanged.
static COMPLEMENT: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    let pairs: &[(u8, u8)] = &[
        (b'A', b'T'),
        (b'C', b'G'),
        (b'G', b'C'),
        (b'T', b'A'),
        (b'U', b'A'),
        (b'R', b'Y'),
        (b'Y', b'R'),
        (b'K', b'M'),
        (b'M', b'K'),
        (b'B', b'V'),
        (b'V', b'B'),
        (b'D', b'H'),
        (b'H', b'D'),
        (b'S', b'S'),
        (b'W', b'W'),
        (b'N', b'N'),
        (b'X', b'X'),
    ];
    let mut p = 0;
    while p < pairs.len() {
        let (from, to) = pairs[p];
        table[from as usize] = to;
        table[from.to_ascii_lowercase() as usize] = to.to_ascii_lowercase();
        p += 1;
    }
    table
};

/// The fraction of G, C and S (strong) among the bases that are certainly strong or weak:
/// A, C, G, T, U, S and W in either case; other IUPAC codes (N, R, Y, …) are left out of
/// both counts, as by Biopython's `gc_fraction(seq)`. `None` when no such base is present
/// (Biopython answers 0 there; no GC content is not a GC content of 0).
pub fn gc_content(sequence: &[u8]) -> Option<f64> {
    let (mut strong, mut counted) = (0usize, 0usize);
    for &base in sequence {
        match base | 0x20 {
            b'c' | b'g' | b's' => {
                strong += 1;
                counted += 1;
            }
            b'a' | b't' | b'u' | b'w' => counted += 1,
            _ => {}
        }
    }
    (counted > 0).then(|| strong as f64 / counted as f64)
}

/// Appends the reverse complement of `sequence` to `out`: reversed by character, each ASCII
/// character complemented by [`COMPLEMENT`]; other characters are kept (reversed in place).
pub fn reverse_complement_into(sequence: &str, out: &mut String) {
    if sequence.is_ascii() {
        out.reserve(sequence.len());
        out.extend(
            sequence
                .bytes()
                .rev()
                .map(|b| char::from(COMPLEMENT[usize::from(b)])),
        );
    } else {
        out.extend(sequence.chars().rev().map(|c| match u8::try_from(c) {
            Ok(b) if b.is_ascii() => char::from(COMPLEMENT[usize::from(b)]),
            _ => c,
        }));
    }
}

/// Byte offsets of the character starts of non-ASCII `sequence`, and its end; `None` for ASCII
/// text, where characters are bytes.
fn char_starts(sequence: &str) -> Option<Vec<usize>> {
    (!sequence.is_ascii()).then(|| {
        sequence
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(sequence.len()))
            .collect()
    })
}

/// The overlapping substrings of `k` characters of `sequence`, in order: as many as there are
/// characters minus `k - 1`, none when the sequence is shorter than `k`. `k` must be positive.
pub fn kmers(sequence: &str, k: usize) -> impl Iterator<Item = &str> {
    debug_assert!(k > 0);
    let starts = char_starts(sequence);
    let chars = starts.as_ref().map_or(sequence.len(), |s| s.len() - 1);
    let count = (chars + 1).saturating_sub(k);
    (0..count).map(move |i| match &starts {
        None => &sequence[i..i + k],
        Some(starts) => &sequence[starts[i]..starts[i + k]],
    })
}

/// The bytes of all k-mers of `sequence` together and how many there are, without building
/// them: what a result must hold.
pub fn kmers_size(sequence: &str, k: usize) -> (usize, usize) {
    let Some(starts) = char_starts(sequence) else {
        let count = (sequence.len() + 1).saturating_sub(k);
        return (count * k, count);
    };
    let count = starts.len().saturating_sub(k);
    let bytes = (0..count).map(|i| starts[i + k] - starts[i]).sum();
    (bytes, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_content_counts_strong_bases_among_certain_ones() {
        assert_eq!(gc_content(b"ACGTNNS"), Some(0.6));
        assert_eq!(gc_content(b"ggcU"), Some(0.75));
        assert_eq!(gc_content(b"ACGTacgt"), Some(0.5));
        assert_eq!(gc_content(b"NNNRY"), None);
        assert_eq!(gc_content(b""), None);
    }

    #[test]
    fn reverse_complement_keeps_case_and_unknown_characters() {
        let mut out = String::new();
        reverse_complement_into("ACGTUacgtuRYKMBVDHNXSW-*.ryx", &mut out);
        assert_eq!(out, "xry.*-WSXNDHBVKMRYaacgtAACGT");
        out.clear();
        reverse_complement_into("AéC", &mut out);
        assert_eq!(out, "GéT");
    }

    #[test]
    fn kmers_are_overlapping_windows_of_characters() {
        assert_eq!(kmers("ACGTA", 3).collect::<Vec<_>>(), ["ACG", "CGT", "GTA"]);
        assert_eq!(kmers("AC", 3).count(), 0);
        assert_eq!(kmers("ACG", 3).collect::<Vec<_>>(), ["ACG"]);
        assert_eq!(kmers("AéCG", 2).collect::<Vec<_>>(), ["Aé", "éC", "CG"]);
        assert_eq!(kmers_size("AéCG", 2), (8, 3));
        assert_eq!(kmers_size("ACGTA", 3), (9, 3));
        assert_eq!(kmers_size("AC", 3), (0, 0));
    }
}
