//! HPACK (RFC 7541): a decoder with the static and a bounded dynamic table, decoding into a
//! caller-owned arena, and an encoder for responses that keeps no dynamic table.
//!
//! The decoder writes every field's name and value, one after the other, into
//! [`FieldList`]'s byte arena and records their ranges; the arena and the range vector are
//! cleared, not freed, between blocks, so a warm list decodes without allocating. The dynamic
//! table is a byte ring sized by the protocol limit at creation, and a ring of entries beside
//! it: inserting and evicting move bytes and indices, never the allocator.
//!
//! The encoder (as HAProxy's) never indexes: a field that equals a static entry is sent as
//! that index (`:status 200`), one whose name is in the static table as a literal without
//! indexing naming that index, anything else as a literal name and value. Strings go out
//! without Huffman coding. Names are lowercased on the way (they come from HTTP/1 members).

use crate::huffman::{self, HuffmanError};

/// RFC 7541 Appendix A.
#[rustfmt::skip]
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Bytes an entry costs beyond its name and value (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// Why a header block could not be decoded: always a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer longer than this decoder accepts (more than 2^28).
    IntegerOverflow,
    /// Index 0, or past the end of the static and dynamic tables.
    BadIndex,
    /// A dynamic table size update after the first field, or above the limit.
    BadSizeUpdate,
    /// The limit was lowered and the block does not open with a size update.
    SizeUpdateMissing,
    Huffman(HuffmanError),
}

impl HpackError {
    pub fn reason(&self) -> &'static str {
        match self {
            HpackError::Truncated => "HPACK: truncated header block",
            HpackError::IntegerOverflow => "HPACK: integer overflow",
            HpackError::BadIndex => "HPACK: invalid index",
            HpackError::BadSizeUpdate => "HPACK: invalid dynamic table size update",
            HpackError::SizeUpdateMissing => "HPACK: lowered table size not acknowledged",
            HpackError::Huffman(HuffmanError::Eos) => "HPACK: EOS in a Huffman string",
            HpackError::Huffman(HuffmanError::Padding) => "HPACK: invalid Huffman padding",
        }
    }
}

/// One decoded field: the name is `start..split` of the arena, the value `split..end`.
#[derive(Clone, Copy, Debug, Default)]
struct Span3 {
    start: u32,
    split: u32,
    end: u32,
}

/// Decoded fields: names and values in one byte arena, reused across blocks.
#[derive(Debug, Default)]
pub struct FieldList {
    buf: Vec<u8>,
    fields: Vec<Span3>,
    /// RFC 7541 §4.1 size of the whole list (names, values, 32 per field).
    size: usize,
    /// Fields were dropped because the list went over the size limit.
    truncated: bool,
}

impl FieldList {
    pub fn new() -> FieldList {
        FieldList::default()
    }

    /// An empty list with room for `bytes` of names and values and `fields` fields.
    pub fn with_capacity(bytes: usize, fields: usize) -> FieldList {
        FieldList {
            buf: Vec::with_capacity(bytes),
            fields: Vec::with_capacity(fields),
            ..FieldList::default()
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.size = 0;
        self.truncated = false;
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it, dropped fields included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether fields were dropped for going over the size limit.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Field `i` as (name, value).
    pub fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let f = self.fields.get(i)?;
        let name = self.buf.get(f.start as usize..f.split as usize)?;
        let value = self.buf.get(f.split as usize..f.end as usize)?;
        Some((name, value))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.fields.len()).filter_map(move |i| self.get(i))
    }

    /// Appends a field (tests, and callers building a list by hand).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(name);
        let split = self.buf.len();
        self.buf.extend_from_slice(value);
        self.commit(start, split, usize::MAX);
    }

    /// Keeps the field written at `start..` (name up to `split`) if the list stays within
    /// `limit`; otherwise drops its bytes and marks the list truncated.
    fn commit(&mut self, start: usize, split: usize, limit: usize) {
        let end = self.buf.len();
        self.size = self
            .size
            .saturating_add(end - start)
            .saturating_add(ENTRY_OVERHEAD);
        if self.size > limit || end > u32::MAX as usize {
            self.truncated = true;
            self.buf.truncate(start);
            return;
        }
        self.fields.push(Span3 {
            start: start as u32,
            split: split as u32,
            end: end as u32,
        });
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Where the name starts in the byte ring; the value follows (both may wrap).
    pos: u32,
    name_len: u32,
    value_len: u32,
}

/// The dynamic table: a byte ring and an entry ring, both sized once.
#[derive(Debug)]
struct Table {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Index in `entries` of the oldest entry.
    oldest: usize,
    count: usize,
    /// Next byte of the ring to write.
    write: usize,
    /// RFC 7541 §4.1 size of the entries held.
    size: usize,
    /// The size the encoder chose (size updates), at most `limit`.
    max: usize,
    /// The most SETTINGS_HEADER_TABLE_SIZE lets the encoder choose.
    limit: usize,
}

impl Table {
    fn new(limit: usize) -> Table {
        Table {
            bytes: vec![0; limit],
            entries: vec![Entry::default(); limit / ENTRY_OVERHEAD],
            oldest: 0,
            count: 0,
            write: 0,
            size: 0,
            max: limit,
            limit,
        }
    }

    fn evict_oldest(&mut self) {
        if self.count == 0 {
            return;
        }
        let e = self.entries[self.oldest];
        self.size -= e.name_len as usize + e.value_len as usize + ENTRY_OVERHEAD;
        self.oldest = (self.oldest + 1) % self.entries.len();
        self.count -= 1;
        if self.count == 0 {
            self.write = 0;
            self.oldest = 0;
        }
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        while self.size > self.max {
            self.evict_oldest();
        }
    }

    /// Inserts `name`/`value` as the newest entry (RFC 7541 §4.4: an entry larger than the
    /// table empties it and is not inserted).
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            while self.count > 0 {
                self.evict_oldest();
            }
            return;
        }
        while self.size + size > self.max {
            self.evict_oldest();
        }
        // `size <= max <= limit`: the entry ring has a free slot and the byte ring room for
        // the entry beside every live one.
        let ring = self.bytes.len();
        let slots = self.entries.len();
        if ring == 0 || slots == 0 {
            return;
        }
        let pos = self.write;
        for &b in name.iter().chain(value) {
            self.bytes[self.write] = b;
            self.write = (self.write + 1) % ring;
        }
        let slot = (self.oldest + self.count) % slots;
        self.entries[slot] = Entry {
            pos: pos as u32,
            name_len: name.len() as u32,
            value_len: value.len() as u32,
        };
        self.count += 1;
        self.size += size;
    }

    /// Entry `i` (0 = newest).
    fn get(&self, i: usize) -> Option<Entry> {
        if i >= self.count {
            return None;
        }
        let slot = (self.oldest + self.count - 1 - i) % self.entries.len();
        Some(self.entries[slot])
    }

    /// Appends `len` bytes of the ring from `pos` to `out`.
    fn copy(&self, pos: usize, len: usize, out: &mut Vec<u8>) {
        let ring = self.bytes.len();
        if ring == 0 || len == 0 {
            return;
        }
        let pos = pos % ring;
        let first = len.min(ring - pos);
        out.extend_from_slice(&self.bytes[pos..pos + first]);
        out.extend_from_slice(&self.bytes[..len - first]);
    }
}

/// An HPACK decoder: one per connection, fed every header block in order.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The limit fell below the size the encoder uses: its next block must open with a size
    /// update that fits (RFC 7541 §4.2).
    update_required: bool,
}

/// Whether to copy a name or a value out of a table entry.
#[derive(Clone, Copy)]
enum Part {
    Name,
    Value,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `limit` bytes (our
    /// SETTINGS_HEADER_TABLE_SIZE). Allocates the table once, here.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: Table::new(limit),
            update_required: false,
        }
    }

    /// Lowers the limit (a smaller SETTINGS_HEADER_TABLE_SIZE took effect); never above the
    /// size given at creation.
    pub fn set_limit(&mut self, limit: usize) {
        let limit = limit.min(self.table.bytes.len());
        self.table.limit = limit;
        if self.table.max > limit {
            self.table.resize(limit);
            self.update_required = true;
        }
    }

    /// The dynamic table's current RFC 7541 size.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Decodes a whole header block into `out` (cleared first). Fields past `max_list_size`
    /// are decoded (the dynamic table must stay in step with the encoder's) but dropped,
    /// and the list is marked truncated.
    pub fn decode(
        &mut self,
        block: &[u8],
        out: &mut FieldList,
        max_list_size: usize,
    ) -> Result<(), HpackError> {
        out.clear();
        if self.update_required && block.first().is_none_or(|b| b & 0xe0 != 0x20) {
            return Err(HpackError::SizeUpdateMissing);
        }
        self.update_required = false;
        let mut i = 0;
        let mut at_start = true;
        while let Some(&b) = block.get(i) {
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer(block, &mut i, 7)?;
                let start = out.buf.len();
                let split = self.copy_indexed(index, Part::Name, &mut out.buf)?;
                self.copy_indexed(index, Part::Value, &mut out.buf)?;
                out.commit(start, split, max_list_size);
            } else if b & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (start, split) = self.literal(block, &mut i, 6, out)?;
                let end = out.buf.len();
                let (name, value) = out.buf[start..end].split_at(split - start);
                self.table.insert(name, value);
                out.commit(start, split, max_list_size);
            } else if b & 0x20 != 0 {
                // Dynamic table size update (§6.3): only at the start of a block.
                if !at_start {
                    return Err(HpackError::BadSizeUpdate);
                }
                let size = integer(block, &mut i, 5)?;
                if size > self.table.limit {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.table.resize(size);
                continue;
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3).
                let (start, split) = self.literal(block, &mut i, 4, out)?;
                out.commit(start, split, max_list_size);
            }
            at_start = false;
        }
        Ok(())
    }

    /// Appends a literal's name and value to `out.buf`: (start, split).
    fn literal(
        &self,
        block: &[u8],
        i: &mut usize,
        prefix: u32,
        out: &mut FieldList,
    ) -> Result<(usize, usize), HpackError> {
        let index = integer(block, i, prefix)?;
        let start = out.buf.len();
        if index == 0 {
            string(block, i, &mut out.buf)?;
        } else {
            self.copy_indexed(index, Part::Name, &mut out.buf)?;
        }
        let split = out.buf.len();
        string(block, i, &mut out.buf)?;
        Ok((start, split))
    }

    /// Appends the name or value of entry `index` (static, then dynamic) to `out`; returns
    /// the arena's length after it.
    fn copy_indexed(
        &self,
        index: usize,
        part: Part,
        out: &mut Vec<u8>,
    ) -> Result<usize, HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex);
        }
        if let Some(&(name, value)) = STATIC.get(index - 1) {
            out.extend_from_slice(match part {
                Part::Name => name,
                Part::Value => value,
            });
            return Ok(out.len());
        }
        let e = self
            .table
            .get(index - 1 - STATIC.len())
            .ok_or(HpackError::BadIndex)?;
        match part {
            Part::Name => self.table.copy(e.pos as usize, e.name_len as usize, out),
            Part::Value => self.table.copy(
                e.pos as usize + e.name_len as usize,
                e.value_len as usize,
                out,
            ),
        }
        Ok(out.len())
    }
}

/// Decodes an integer with an N-bit prefix (RFC 7541 §5.1) starting at `block[*i]`.
/// Values above 2^28 are refused: nothing in a header block needs more.
fn integer(block: &[u8], i: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*i).ok_or(HpackError::Truncated)?;
    *i += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*i).ok_or(HpackError::Truncated)?;
        *i += 1;
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Decodes a string literal (RFC 7541 §5.2) and appends it to `out`.
fn string(block: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = *block.get(*i).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, i, 7)?;
    let end = i.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*i..end).ok_or(HpackError::Truncated)?;
    *i = end;
    if huffman {
        huffman::decode(raw, out).map_err(HpackError::Huffman)
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// Appends an integer with an N-bit prefix; `first` holds the representation's flag bits.
pub fn write_integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(first | value as u8);
        return;
    }
    out.push(first | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Index (1-based) of the static entry for `:status` with this value, if any.
fn status_index(status: u16) -> Option<usize> {
    Some(match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => return None,
    })
}

/// Index (1-based) of the first static entry named `name` (ASCII case-insensitive), for the
/// names a response carries.
fn static_name_index(name: &[u8]) -> Option<usize> {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    // By length first, so most names cost one or two comparisons.
    Some(match name.len() {
        3 if is(b"age") => 21,
        3 if is(b"via") => 60,
        4 if is(b"date") => 33,
        4 if is(b"etag") => 34,
        4 if is(b"link") => 45,
        4 if is(b"vary") => 59,
        5 if is(b"allow") => 22,
        6 if is(b"server") => 54,
        7 if is(b"expires") => 36,
        7 if is(b"refresh") => 52,
        8 if is(b"location") => 46,
        10 if is(b"set-cookie") => 55,
        11 if is(b"retry-after") => 53,
        12 if is(b"content-type") => 31,
        13 if is(b"accept-ranges") => 18,
        13 if is(b"cache-control") => 24,
        13 if is(b"content-range") => 30,
        13 if is(b"last-modified") => 44,
        14 if is(b"content-length") => 28,
        16 if is(b"content-encoding") => 26,
        16 if is(b"content-language") => 27,
        16 if is(b"content-location") => 29,
        16 if is(b"www-authenticate") => 61,
        18 if is(b"proxy-authenticate") => 48,
        19 if is(b"content-disposition") => 25,
        25 if is(b"strict-transport-security") => 56,
        27 if is(b"access-control-allow-origin") => 20,
        _ => return None,
    })
}

/// Appends `:status` (RFC 9113 §8.3.2): an indexed field when the static table has it, else
/// a literal without indexing naming entry 8.
pub fn encode_status(out: &mut Vec<u8>, status: u16) {
    if let Some(index) = status_index(status) {
        write_integer(out, 0x80, 7, index);
        return;
    }
    let s = status.clamp(100, 999);
    write_integer(out, 0x00, 4, 8);
    out.push(3);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
}

/// Appends a regular field as a literal without indexing, its name lowercased.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 8);
    match static_name_index(name) {
        Some(index) => write_integer(out, 0x00, 4, index),
        None => {
            out.push(0x00);
            write_integer(out, 0x00, 7, name.len());
            let at = out.len();
            out.extend_from_slice(name);
            out[at..].make_ascii_lowercase();
        }
    }
    write_integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn fields(list: &FieldList) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    /// Decodes each block in turn with one decoder of table size 4096 (or `limit`), checking
    /// the fields and the dynamic table's size after each.
    /// A header block (hex), the fields it decodes to, and the table size after it.
    type Step<'a> = (&'a str, &'a [(&'a str, &'a str)], usize);

    fn check_sequence(limit: usize, steps: &[Step<'_>]) {
        let mut d = Decoder::new(limit);
        let mut out = FieldList::new();
        for (n, (block, want, table_size)) in steps.iter().enumerate() {
            d.decode(&hex(block), &mut out, usize::MAX).unwrap();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(fields(&out), want, "block {n}");
            assert_eq!(d.table_size(), *table_size, "table size after block {n}");
        }
    }

    // RFC 7541 Appendix C.1: integer representation examples.
    #[test]
    fn integers_c1() {
        let mut out = Vec::new();
        write_integer(&mut out, 0, 5, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        write_integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        write_integer(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
        let mut i = 0;
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], &mut i, 5), Ok(1337));
        assert_eq!(i, 3);
    }

    #[test]
    fn integer_overflow_is_refused() {
        let mut i = 0;
        let block = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(integer(&block, &mut i, 7), Err(HpackError::IntegerOverflow));
        let mut i = 0;
        assert_eq!(
            integer(&[0x7f, 0x80], &mut i, 7),
            Err(HpackError::Truncated)
        );
        // 2^28 + 126 still fits.
        let mut i = 0;
        assert!(integer(&[0x7f, 0xff, 0xff, 0xff, 0x7f], &mut i, 7).is_ok());
    }

    // C.2.1 Literal header field with indexing.
    #[test]
    fn c2_1_literal_with_indexing() {
        check_sequence(
            4096,
            &[(
                "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
                &[("custom-key", "custom-header")],
                55,
            )],
        );
    }

    // C.2.2 Literal header field without indexing.
    #[test]
    fn c2_2_literal_without_indexing() {
        check_sequence(
            4096,
            &[(
                "040c 2f73 616d 706c 652f 7061 7468",
                &[(":path", "/sample/path")],
                0,
            )],
        );
    }

    // C.2.3 Literal header field never indexed.
    #[test]
    fn c2_3_literal_never_indexed() {
        check_sequence(
            4096,
            &[(
                "1008 7061 7373 776f 7264 0673 6563 7265 74",
                &[("password", "secret")],
                0,
            )],
        );
    }

    // C.2.4 Indexed header field.
    #[test]
    fn c2_4_indexed() {
        check_sequence(4096, &[("82", &[(":method", "GET")], 0)]);
    }

    const C3_1: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const C3_2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const C3_3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];

    // C.3 Request examples without Huffman coding.
    #[test]
    fn c3_requests_without_huffman() {
        check_sequence(
            4096,
            &[
                (
                    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                    C3_1,
                    57,
                ),
                ("8286 84be 5808 6e6f 2d63 6163 6865", C3_2, 110),
                (
                    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                    C3_3,
                    164,
                ),
            ],
        );
    }

    // C.4 Request examples with Huffman coding.
    #[test]
    fn c4_requests_with_huffman() {
        check_sequence(
            4096,
            &[
                ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", C3_1, 57),
                ("8286 84be 5886 a8eb 1064 9cbf", C3_2, 110),
                (
                    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                    C3_3,
                    164,
                ),
            ],
        );
    }

    const C5_1: &[(&str, &str)] = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const C5_2: &[(&str, &str)] = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const C5_3: &[(&str, &str)] = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];

    // C.5 Response examples without Huffman coding, table size 256 (evictions).
    #[test]
    fn c5_responses_without_huffman_with_eviction() {
        check_sequence(
            256,
            &[
                (
                    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
                     3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
                     7861 6d70 6c65 2e63 6f6d",
                    C5_1,
                    222,
                ),
                ("4803 3330 37c1 c0bf", C5_2, 222),
                (
                    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220
                     474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157
                     454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076
                     6572 7369 6f6e 3d31",
                    C5_3,
                    215,
                ),
            ],
        );
    }

    // C.6 Response examples with Huffman coding, table size 256 (evictions).
    #[test]
    fn c6_responses_with_huffman_with_eviction() {
        check_sequence(
            256,
            &[
                (
                    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
                     82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                    C5_1,
                    222,
                ),
                ("4883 640e ffc1 c0bf", C5_2, 222),
                (
                    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b
                     d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27
                     0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                    C5_3,
                    215,
                ),
            ],
        );
    }

    #[test]
    fn size_update_only_at_block_start() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        // Two updates at the start, then a field: fine.
        d.decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x82], &mut out, usize::MAX)
            .unwrap();
        assert_eq!(out.len(), 1);
        // An update after a field: refused.
        assert_eq!(
            d.decode(&[0x82, 0x20], &mut out, usize::MAX),
            Err(HpackError::BadSizeUpdate)
        );
    }

    #[test]
    fn size_update_above_the_limit_is_refused() {
        let mut d = Decoder::new(256);
        let mut out = FieldList::new();
        let mut block = Vec::new();
        write_integer(&mut block, 0x20, 5, 257);
        assert_eq!(
            d.decode(&block, &mut out, usize::MAX),
            Err(HpackError::BadSizeUpdate)
        );
        block.clear();
        write_integer(&mut block, 0x20, 5, 256);
        d.decode(&block, &mut out, usize::MAX).unwrap();
    }

    #[test]
    fn a_lowered_limit_requires_a_size_update_at_the_next_block() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        d.set_limit(1024);
        assert_eq!(
            d.decode(&[0x82], &mut out, usize::MAX),
            Err(HpackError::SizeUpdateMissing)
        );
        let mut block = Vec::new();
        write_integer(&mut block, 0x20, 5, 1024);
        block.push(0x82);
        d.decode(&block, &mut out, usize::MAX).unwrap();
        // Only once.
        d.decode(&[0x82], &mut out, usize::MAX).unwrap();
        // Raising it back (never above the size at creation) asks nothing.
        d.set_limit(4096);
        d.decode(&[0x82], &mut out, usize::MAX).unwrap();
    }

    #[test]
    fn size_update_evicts() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        d.decode(
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
            &mut out,
            usize::MAX,
        )
        .unwrap();
        assert_eq!(d.table_size(), 55);
        d.decode(&[0x20], &mut out, usize::MAX).unwrap();
        assert_eq!(d.table_size(), 0);
        // Index 62 is gone now.
        assert_eq!(
            d.decode(&[0xbe], &mut out, usize::MAX),
            Err(HpackError::BadIndex)
        );
    }

    #[test]
    fn index_zero_and_past_the_tables_are_refused() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        assert_eq!(
            d.decode(&[0x80], &mut out, usize::MAX),
            Err(HpackError::BadIndex)
        );
        assert_eq!(
            d.decode(&[0xbe], &mut out, usize::MAX),
            Err(HpackError::BadIndex)
        );
        assert_eq!(
            d.decode(&[0x0f, 0x2f], &mut out, usize::MAX),
            Err(HpackError::BadIndex)
        );
    }

    #[test]
    fn truncated_strings_are_refused() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        assert_eq!(
            d.decode(&[0x04, 0x05, b'/'], &mut out, usize::MAX),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            d.decode(&[0x40], &mut out, usize::MAX),
            Err(HpackError::Truncated)
        );
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(64);
        let mut out = FieldList::new();
        // custom-key: custom-header (55) fits; a 40-byte value (82) does not.
        d.decode(
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
            &mut out,
            usize::MAX,
        )
        .unwrap();
        assert_eq!(d.table_size(), 55);
        let mut block = vec![0x40, 0x01, b'k', 40];
        block.extend_from_slice(&[b'v'; 40]);
        d.decode(&block, &mut out, usize::MAX).unwrap();
        assert_eq!(d.table_size(), 0);
        assert_eq!(out.get(0).unwrap().1, &[b'v'; 40][..]);
    }

    #[test]
    fn the_ring_wraps_around() {
        // Table of 100 bytes: entries of 33..=40 bytes keep evicting and wrapping.
        let mut d = Decoder::new(100);
        let mut out = FieldList::new();
        for n in 0..50u8 {
            let value = vec![b'a' + n % 26; usize::from(n % 8)];
            let mut block = vec![0x40, 0x01, b'k', value.len() as u8];
            block.extend_from_slice(&value);
            // Then refer to the entry just inserted (62) and, if any, the one before (63).
            block.push(0xbe);
            d.decode(&block, &mut out, usize::MAX).unwrap();
            assert_eq!(out.get(1).unwrap(), (&b"k"[..], &value[..]), "round {n}");
        }
    }

    #[test]
    fn a_list_over_the_limit_is_truncated_but_the_table_stays_in_step() {
        let mut d = Decoder::new(4096);
        let mut out = FieldList::new();
        // Two inserted fields of 55 bytes each; the limit takes only one.
        let one = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let mut block = one.clone();
        block.extend_from_slice(&one);
        d.decode(&block, &mut out, 60).unwrap();
        assert!(out.is_truncated());
        assert_eq!(out.len(), 1);
        assert_eq!(d.table_size(), 110);
        // The next block refers to both entries.
        d.decode(&[0xbe, 0xbf], &mut out, usize::MAX).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn encoder_uses_static_entries_and_lowercases_names() {
        let mut out = Vec::new();
        encode_status(&mut out, 200);
        encode_status(&mut out, 302);
        encode_field(&mut out, b"Content-Type", b"text/plain");
        encode_field(&mut out, b"X-Custom", b"v");
        assert_eq!(out[0], 0x88);
        assert_eq!(&out[1..6], &[0x08, 3, b'3', b'0', b'2']);
        let mut d = Decoder::new(4096);
        let mut list = FieldList::new();
        d.decode(&out, &mut list, usize::MAX).unwrap();
        assert_eq!(
            fields(&list),
            [
                (":status", "200"),
                (":status", "302"),
                ("content-type", "text/plain"),
                ("x-custom", "v")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // Nothing was inserted: the encoder keeps no dynamic table.
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn static_name_indices_name_the_right_entries() {
        for (i, (name, _)) in STATIC.iter().enumerate().skip(14) {
            if let Some(index) = static_name_index(name) {
                assert_eq!(index, i + 1, "{}", String::from_utf8_lossy(name));
            }
        }
        for s in [200, 204, 206, 304, 400, 404, 500] {
            let i = status_index(s).unwrap();
            assert_eq!(STATIC[i - 1].1, s.to_string().as_bytes());
        }
    }
}
