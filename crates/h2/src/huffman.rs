//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoding only.
//!
//! Appendix B's code is canonical: within each length, codes run in symbol order, and each
//! length's first code follows the previous length's last. So the table is typed in as its
//! code lengths (symbols 0..=255, then EOS), and the codes are derived from them at compile
//! time; the tests check the derivation against codes printed in the RFC and that the lengths
//! fill the code space exactly.
//!
//! Decoding is a table-driven state machine that reads four bits at a time. The states are
//! the 256 internal nodes of the code tree (state 0 is the root); each (state, nibble) entry
//! gives the next state, the symbol completed on the way if any (at most one: the shortest
//! code is 5 bits), or failure when the bits spell EOS. The input may end only in the root
//! or in a node reached by at most 7 one-bits since the last symbol (RFC 7541 §5.2: padding
//! is the most significant bits of EOS, and longer than 7 bits is an error).

/// Code length of each symbol (0..=255, 256 = EOS), as RFC 7541 Appendix B gives them.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    // 0x00..0x1f
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    // ' ' ! " # $ % & ' ( ) * + , - . /
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    // 0 1 2 3 4 5 6 7 8 9 : ; < = > ?
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    // @ A B C D E F G H I J K L M N O
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    // P Q R S T U V W X Y Z [ \ ] ^ _
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    // ` a b c d e f g h i j k l m n o
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    // p q r s t u v w x y z { | } ~ DEL
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    // 0x80..0xff
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    // EOS
    30,
];

const EOS: u16 = 256;

/// The canonical codes, right-aligned.
pub(crate) const CODES: [u32; 257] = {
    let mut codes = [0u32; 257];
    let mut code = 0u32;
    let mut len = 1;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as u32 == len {
                codes[sym] = code;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    codes
};

/// A child in the code tree: an internal node's index, or `LEAF | symbol`.
const LEAF: u16 = 0x8000;

struct Tree {
    children: [[u16; 2]; 256],
    /// Whether the path from the root to the node is all one-bits, and its depth.
    ones: [bool; 256],
    depth: [u8; 256],
}

const TREE: Tree = {
    let mut t = Tree {
        children: [[0; 2]; 256],
        ones: [false; 256],
        depth: [0; 256],
    };
    t.ones[0] = true;
    let mut nodes = 1;
    let mut sym = 0;
    while sym < 257 {
        let len = LENGTHS[sym] as u32;
        let code = CODES[sym];
        let mut n = 0usize;
        let mut i = len;
        while i > 0 {
            i -= 1;
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                t.children[n][bit] = LEAF | sym as u16;
            } else {
                if t.children[n][bit] == 0 {
                    t.children[n][bit] = nodes as u16;
                    t.ones[nodes] = t.ones[n] && bit == 1;
                    t.depth[nodes] = t.depth[n] + 1;
                    nodes += 1;
                }
                n = t.children[n][bit] as usize;
            }
        }
        sym += 1;
    }
    // A complete prefix code of 257 symbols has exactly 256 internal nodes.
    assert!(nodes == 256);
    t
};

const EMIT: u8 = 1;
const FAIL: u8 = 2;

#[derive(Clone, Copy)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

/// `STEPS[state][nibble]`.
static STEPS: [[Step; 16]; 256] = {
    let mut steps = [[Step {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut n = state;
            let mut step = Step {
                next: 0,
                sym: 0,
                flags: 0,
            };
            let mut i = 4;
            while i > 0 {
                i -= 1;
                let child = TREE.children[n][(nibble >> i) & 1];
                if child & LEAF != 0 {
                    let sym = child & !LEAF;
                    if sym == EOS {
                        step.flags = FAIL;
                        break;
                    }
                    step.sym = sym as u8;
                    step.flags = EMIT;
                    n = 0;
                } else {
                    n = child as usize;
                }
            }
            step.next = n as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
};

/// States the input may end in: the root, or up to 7 one-bits of padding.
static ACCEPT: [bool; 256] = {
    let mut accept = [false; 256];
    let mut s = 0;
    while s < 256 {
        accept[s] = TREE.ones[s] && TREE.depth[s] <= 7;
        s += 1;
    }
    accept
};

/// Why a Huffman string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appears in the string.
    Eos,
    /// Padding longer than 7 bits, or not all ones.
    Padding,
}

/// Appends the decoding of `src` to `out`.
pub(crate) fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // At most 8 symbols per 5 input bytes.
    out.reserve(src.len() * 8 / 5 + 1);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[state][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                return Err(HuffmanError::Eos);
            }
            if step.flags & EMIT != 0 {
                out.push(step.sym);
            }
            state = usize::from(step.next);
        }
    }
    if ACCEPT[state] {
        Ok(())
    } else {
        Err(HuffmanError::Padding)
    }
}

/// Huffman-encodes `src` (tests only: the encoder sends strings as they are).
#[cfg(test)]
pub(crate) fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CODES[usize::from(b)]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_fill_the_code_space_exactly() {
        // Kraft: sum of 2^-len over all symbols is exactly 1 for a complete prefix code.
        let sum: u64 = LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(sum, 1 << 30);
    }

    #[test]
    fn derived_codes_match_appendix_b() {
        // (symbol, code, length) as printed in RFC 7541 Appendix B.
        let printed: [(usize, u32, u8); 16] = [
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (9, 0xff_ffea, 24),
            (10, 0x3fff_fffc, 30),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b't' as usize, 0x9, 5),
            (b'X' as usize, 0xfc, 8),
            (b'\\' as usize, 0x7fff0, 19),
            (b'~' as usize, 0x1ffd, 13),
            (127, 0xfff_fffc, 28),
            (128, 0xf_ffe6, 20),
            (200, 0x3ff_ffe2, 26),
            (255, 0x3ff_ffee, 26),
            (256, 0x3fff_ffff, 30),
        ];
        for (sym, code, len) in printed {
            assert_eq!((CODES[sym], LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
        for b in 0..=255u8 {
            let (mut enc, mut dec) = (Vec::new(), Vec::new());
            encode(&[b, b, b], &mut enc);
            decode(&enc, &mut dec).unwrap();
            assert_eq!(dec, [b, b, b]);
        }
    }

    #[test]
    fn eos_in_the_string_is_refused() {
        // EOS (30 ones) followed by two padding ones: 32 one-bits.
        let mut out = Vec::new();
        assert_eq!(decode(&[0xff; 4], &mut out), Err(HuffmanError::Eos));
    }

    #[test]
    fn padding_longer_than_7_bits_is_refused() {
        // 'a' (00011) then 11 one-bits of padding.
        let mut out = Vec::new();
        assert_eq!(decode(&[0x1f, 0xff], &mut out), Err(HuffmanError::Padding));
        // A whole byte of ones alone: 8 bits of padding.
        out.clear();
        assert_eq!(decode(&[0xff], &mut out), Err(HuffmanError::Padding));
    }

    #[test]
    fn padding_not_all_ones_is_refused() {
        // 'a' (00011) then 110 instead of 111.
        let mut out = Vec::new();
        assert_eq!(decode(&[0x1e], &mut out), Err(HuffmanError::Padding));
        // 'a' then 111 decodes.
        out.clear();
        decode(&[0x1f], &mut out).unwrap();
        assert_eq!(out, b"a");
    }

    #[test]
    fn empty_string_decodes_to_nothing() {
        let mut out = Vec::new();
        decode(&[], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
