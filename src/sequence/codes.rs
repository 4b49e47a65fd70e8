//! The NCBI genetic codes and translation of nucleotide sequences to proteins.
//!
//! Each table lists the amino acid of the 64 codons in NCBI's order (first, second and third
//! base each running T, C, A, G), `*` for a stop. Ambiguous codons (IUPAC codes such as `N`,
//! `R`, `Y`) translate as Biopython's `Bio.Seq.translate` does: to the one amino acid all their
//! readings share; to `B` (D or N), `Z` (E or Q) or `J` (I or L) when their readings are those
//! two; to `*` when every reading is a stop; to `X` otherwise. `X` in a codon reads as `N`.

use std::sync::OnceLock;

/// The NCBI genetic codes: id, name, amino acids of the 64 codons (TCAG order).
const TABLES: &[(u8, &str, &[u8; 64])] = &[
    (
        1,
        "Standard",
        b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        2,
        "Vertebrate Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIMMTTTTNNKKSS**VVVVAAAADDEEGGGG",
    ),
    (
        3,
        "Yeast Mitochondrial",
        b"FFLLSSSSYY**CCWWTTTTPPPPHHQQRRRRIIMMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        4,
        "Mold Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        5,
        "Invertebrate Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIMMTTTTNNKKSSSSVVVVAAAADDEEGGGG",
    ),
    (
        6,
        "Ciliate Nuclear",
        b"FFLLSSSSYYQQCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        9,
        "Echinoderm Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIIMTTTTNNNKSSSSVVVVAAAADDEEGGGG",
    ),
    (
        10,
        "Euplotid Nuclear",
        b"FFLLSSSSYY**CCCWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        11,
        "Bacterial",
        b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        12,
        "Alternative Yeast Nuclear",
        b"FFLLSSSSYY**CC*WLLLSPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        13,
        "Ascidian Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIMMTTTTNNKKSSGGVVVVAAAADDEEGGGG",
    ),
    (
        14,
        "Alternative Flatworm Mitochondrial",
        b"FFLLSSSSYYY*CCWWLLLLPPPPHHQQRRRRIIIMTTTTNNNKSSSSVVVVAAAADDEEGGGG",
    ),
    (
        15,
        "Blepharisma Macronuclear",
        b"FFLLSSSSYY*QCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        16,
        "Chlorophycean Mitochondrial",
        b"FFLLSSSSYY*LCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        21,
        "Trematode Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIMMTTTTNNNKSSSSVVVVAAAADDEEGGGG",
    ),
    (
        22,
        "Scenedesmus obliquus Mitochondrial",
        b"FFLLSS*SYY*LCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        23,
        "Thraustochytrium Mitochondrial",
        b"FF*LSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        24,
        "Pterobranchia Mitochondrial",
        b"FFLLSSSSYY**CCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSSKVVVVAAAADDEEGGGG",
    ),
    (
        25,
        "Candidate Division SR1",
        b"FFLLSSSSYY**CCGWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        26,
        "Pachysolen tannophilus Nuclear",
        b"FFLLSSSSYY**CC*WLLLAPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    // 27, 28 and 31 read their stop codons as amino acids inside a sequence, as Biopython does.
    (
        27,
        "Karyorelict Nuclear",
        b"FFLLSSSSYYQQCCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        28,
        "Condylostoma Nuclear",
        b"FFLLSSSSYYQQCCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        29,
        "Mesodinium Nuclear",
        b"FFLLSSSSYYYYCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        30,
        "Peritrich Nuclear",
        b"FFLLSSSSYYEECC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        31,
        "Blastocrithidia Nuclear",
        b"FFLLSSSSYYEECCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        32,
        "Balanophoraceae Plastid",
        b"FFLLSSSSYY*WCC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG",
    ),
    (
        33,
        "Cephalodiscidae Mitochondrial",
        b"FFLLSSSSYYY*CCWWLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSSKVVVVAAAADDEEGGGG",
    ),
];

/// The bases a nucleotide letter may stand for, one bit each: T=1, C=2, A=4, G=8 (NCBI's
/// order); 0 for a byte that is no nucleotide code.
static BASES: [u8; 256] = {
    let mut table = [0u8; 256];
    let codes: &[(u8, u8)] = &[
        (b'T', 1),
        (b'U', 1),
        (b'C', 2),
        (b'A', 4),
        (b'G', 8),
        (b'Y', 1 | 2),
        (b'R', 4 | 8),
        (b'W', 1 | 4),
        (b'S', 2 | 8),
        (b'K', 1 | 8),
        (b'M', 2 | 4),
        (b'B', 1 | 2 | 8),
        (b'D', 1 | 4 | 8),
        (b'H', 1 | 2 | 4),
        (b'V', 2 | 4 | 8),
        (b'N', 15),
        (b'X', 15),
    ];
    let mut i = 0;
    while i < codes.len() {
        let (letter, bits) = codes[i];
        table[letter as usize] = bits;
        table[letter.to_ascii_lowercase() as usize] = bits;
        i += 1;
    }
    table
};

/// What an ambiguous codon's readings translate to, as one letter.
fn resolve(readings: impl Iterator<Item = u8>) -> u8 {
    // One bit per letter A..Z, and whether a stop was among them.
    let (mut letters, mut stop) = (0u32, false);
    for amino in readings {
        match amino {
            b'*' => stop = true,
            amino => letters |= 1 << (amino - b'A'),
        }
    }
    let bit = |amino: u8| 1u32 << (amino - b'A');
    match (letters, stop) {
        (0, true) => b'*',
        (_, true) => b'X',
        (one, false) if one.is_power_of_two() => b'A' + one.trailing_zeros() as u8,
        (two, false) if two == bit(b'D') | bit(b'N') => b'B',
        (two, false) if two == bit(b'E') | bit(b'Q') => b'Z',
        (two, false) if two == bit(b'I') | bit(b'L') => b'J',
        _ => b'X',
    }
}

/// One genetic code, ready to translate: the letter of every codon of IUPAC codes, indexed
/// by the three letters' base sets (0 where a letter is no nucleotide code).
pub struct GeneticCode {
    id: u8,
    by_bases: [u8; 16 * 16 * 16],
}

impl GeneticCode {
    /// The genetic code with NCBI id `id`, or `None`.
    pub fn by_id(id: i64) -> Option<&'static GeneticCode> {
        static BUILT: [OnceLock<GeneticCode>; TABLES.len()] =
            [const { OnceLock::new() }; TABLES.len()];
        let index = TABLES
            .iter()
            .position(|&(table, _, _)| i64::from(table) == id)?;
        Some(BUILT[index].get_or_init(|| Self::build(index)))
    }

    /// The ids of every known genetic code, for error messages.
    pub fn known_ids() -> String {
        TABLES
            .iter()
            .map(|(id, _, _)| id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn build(index: usize) -> GeneticCode {
        let (id, _, aminos) = TABLES[index];
        let mut by_bases = [0u8; 16 * 16 * 16];
        let each = |set: usize| (0..4).filter(move |bit| set & (1 << bit) != 0);
        for (slot, letter) in by_bases.iter_mut().enumerate() {
            let (first, second, third) = (slot >> 8, (slot >> 4) & 15, slot & 15);
            if first == 0 || second == 0 || third == 0 {
                continue;
            }
            let readings = each(first).flat_map(|a| {
                each(second).flat_map(move |b| each(third).map(move |c| aminos[a * 16 + b * 4 + c]))
            });
            *letter = resolve(readings);
        }
        GeneticCode { id, by_bases }
    }

    /// The NCBI id of this code.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Appends the protein of `sequence` to `out`: one letter per whole codon, a trailing
    /// partial codon ignored. A codon with a byte that is no nucleotide code is an error
    /// naming it and its position.
    pub fn translate_into(&self, sequence: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidCodon> {
        out.reserve(sequence.len() / 3);
        for (index, codon) in sequence.chunks_exact(3).enumerate() {
            let [a, b, c] =
                [codon[0], codon[1], codon[2]].map(|x| usize::from(BASES[usize::from(x)]));
            let letter = self.by_bases[(a << 8) | (b << 4) | c];
            if letter == 0 {
                return Err(InvalidCodon {
                    codon: String::from_utf8_lossy(codon).into_owned(),
                    position: index * 3 + 1,
                });
            }
            out.push(letter);
        }
        Ok(())
    }
}

/// A codon that holds a byte that is no IUPAC nucleotide code.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidCodon {
    /// The codon as text (invalid UTF-8 replaced).
    pub codon: String,
    /// 1-based position of its first base in the sequence (in bytes).
    pub position: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protein(sequence: &str, table: i64) -> String {
        let mut out = Vec::new();
        GeneticCode::by_id(table)
            .unwrap()
            .translate_into(sequence.as_bytes(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ambiguous_codons_translate_as_biopython_does() {
        // Values printed by Biopython 1.88's Bio.Seq.translate.
        assert_eq!(protein("RAYTARNNNYTRTRAGCNMGNAAR", 1), "B*XL*AXK");
        assert_eq!(protein("MTTSARSAXATGUUU", 1), "JZXMF");
        assert_eq!(protein("atgaa", 1), "M");
        assert_eq!(protein("TGA", 1), "*");
        assert_eq!(protein("TGA", 2), "W");
        assert_eq!(protein("TAA", 27), "Q");
    }

    #[test]
    fn invalid_codons_and_tables_are_named() {
        let code = GeneticCode::by_id(11).unwrap();
        let mut out = Vec::new();
        let error = code.translate_into(b"ATGAC-", &mut out).unwrap_err();
        assert_eq!(
            error,
            InvalidCodon {
                codon: "AC-".into(),
                position: 4
            }
        );
        assert!(GeneticCode::by_id(7).is_none());
        assert!(GeneticCode::known_ids().starts_with("1, 2, 3"));
    }
}
