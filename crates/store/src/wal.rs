//! The embedded store's write-ahead log: a fixed-size file, written full of zeros once, that
//! takes each group of committed revisions as one record (one `pwrite`, one `fdatasync`).
//!
//! Why: a redb commit rewrites every page on the path to each key it touches, the change
//! log's and the meta table's, and then fsyncs them; at one commit per API change that was
//! 0.4 ms of CPU per change (bench/PROFILE.md, "Control plane"). Appending the change to a
//! preallocated file is one small write to blocks the file system already owns, so the
//! `fdatasync` needs no journal commit. The store folds the log into redb in one transaction
//! every few hundred revisions (a checkpoint) and then starts the log again.
//!
//! Layout: a header page, then records back to back.
//! * header (at 0): magic, the log's generation, a CRC-32 of both;
//! * record: magic, CRC-32 of the rest of the record, generation, first revision, payload
//!   length, row count, then each row as a u32 length and the `changes` row bytes (the
//!   encoded events of one revision, exactly as redb's `changes` table stores them).
//!
//! Reading stops at the first record that is not whole and valid: bad magic, another
//! generation (an older log's record past the current end), a wrong CRC (a torn write), or
//! a revision that does not follow the one before. Starting the log again writes a new
//! generation into the header, which turns every record after it into garbage at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::Revision;

const HEADER_MAGIC: [u8; 8] = *b"FULCWAL1";
const RECORD_MAGIC: [u8; 4] = *b"FWR1";
/// The header has a page of its own, so a record never shares a page with it.
const HEADER_BYTES: u64 = 4096;
const RECORD_HEAD: usize = 32;

/// One revision's `changes` row, as the log returns it on replay.
pub(crate) struct Row {
    pub revision: Revision,
    pub bytes: Vec<u8>,
}

pub(crate) struct Wal {
    file: File,
    capacity: u64,
    /// Where the next record goes.
    end: u64,
    generation: u64,
    /// The revision the next record must start with, once one was written (replay checks
    /// the same continuity).
    next_revision: Option<Revision>,
    /// Reused for every record.
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log at `path`, creating it (full of zeros, `capacity` bytes) when it is
    /// missing or shorter; returns it with every row it holds, oldest first. The caller
    /// folds those into redb and then calls [`Wal::restart`].
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Wal, Vec<Row>)> {
        let file = open_private(path)?;
        let len = file.metadata()?.len();
        let capacity = capacity.max(HEADER_BYTES * 2);
        if len < capacity {
            // Real blocks, not a hole or fallocate's unwritten extents: overwriting them
            // later changes no file system metadata, so `fdatasync` is one device flush.
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < capacity {
                let n = (capacity - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let capacity = capacity.max(len);
        let mut header = [0u8; 20];
        file.read_exact_at(&mut header, 0)?;
        let generation = match parse_header(&header) {
            Some(g) => g,
            None => {
                if header.iter().any(|b| *b != 0) {
                    tracing::warn!(path = %path.display(),
                        "the store's write-ahead log has no valid header; starting it afresh");
                }
                0
            }
        };
        let mut wal = Wal {
            file,
            capacity,
            end: HEADER_BYTES,
            generation,
            next_revision: None,
            buf: Vec::new(),
        };
        let rows = if generation == 0 {
            Vec::new()
        } else {
            wal.read_rows()?
        };
        Ok((wal, rows))
    }

    /// Whether a record of these rows fits after the last one.
    pub fn fits(&self, rows: &[&[u8]]) -> bool {
        self.end + record_len(rows) as u64 <= self.capacity
    }

    /// Whether these rows could fit in the log at all (after a restart).
    pub fn could_fit(&self, rows: &[&[u8]]) -> bool {
        HEADER_BYTES + record_len(rows) as u64 <= self.capacity
    }

    /// Bytes of records written since the last restart.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.end - HEADER_BYTES
    }

    /// Appends one record holding `rows` (revisions `first`, `first + 1`, …) and makes it
    /// durable. On error the log's end does not move, and the record's head is zeroed (best
    /// effort) so a replay does not take a change whose caller was told it failed.
    pub fn append(&mut self, first: Revision, rows: &[&[u8]]) -> io::Result<()> {
        debug_assert!(self.fits(rows));
        let len = record_len(rows);
        self.buf.clear();
        self.buf.reserve(len);
        self.buf.extend_from_slice(&RECORD_MAGIC);
        self.buf.extend_from_slice(&[0; 4]); // CRC, below
        self.buf.extend_from_slice(&self.generation.to_le_bytes());
        self.buf.extend_from_slice(&first.to_le_bytes());
        let payload = (len - RECORD_HEAD) as u32;
        self.buf.extend_from_slice(&payload.to_le_bytes());
        self.buf
            .extend_from_slice(&(rows.len() as u32).to_le_bytes());
        for row in rows {
            self.buf
                .extend_from_slice(&(row.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(row);
        }
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let written = self
            .file
            .write_all_at(&self.buf, self.end)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.end += len as u64;
                self.next_revision = Some(first + rows.len() as Revision);
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .file
                    .write_all_at(&[0; RECORD_HEAD], self.end)
                    .and_then(|()| self.file.sync_data());
                Err(e)
            }
        }
    }

    /// Starts the log again (every record in it is in redb now): a new generation in the
    /// header, made durable, invalidates them all.
    pub fn restart(&mut self) -> io::Result<()> {
        let generation = self.generation.wrapping_add(1).max(1);
        self.file.write_all_at(&header(generation), 0)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.end = HEADER_BYTES;
        self.next_revision = None;
        Ok(())
    }

    fn read_rows(&mut self) -> io::Result<Vec<Row>> {
        let mut data = vec![0u8; (self.capacity - HEADER_BYTES) as usize];
        self.file.read_exact_at(&mut data, HEADER_BYTES)?;
        let mut rows = Vec::new();
        let mut at = 0usize;
        while let Some((first, record_rows, len)) = self.record_at(&data[at..]) {
            if self.next_revision.is_some_and(|next| next != first) {
                break;
            }
            let next = first + record_rows.len() as Revision;
            rows.extend((first..).zip(record_rows).map(|(revision, bytes)| Row {
                revision,
                bytes: bytes.to_vec(),
            }));
            self.next_revision = Some(next);
            at += len;
        }
        self.end = HEADER_BYTES + at as u64;
        Ok(rows)
    }

    /// The record at the start of `data`, if it is whole and valid: (first revision, its
    /// rows, record length).
    fn record_at<'d>(&self, data: &'d [u8]) -> Option<(Revision, Vec<&'d [u8]>, usize)> {
        let head = data.get(..RECORD_HEAD)?;
        if head[..4] != RECORD_MAGIC {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or_default());
        let long = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
        if long(8) != self.generation {
            return None;
        }
        let first = long(16) as Revision;
        let len = RECORD_HEAD + word(24) as usize;
        let count = word(28) as usize;
        let record = data.get(..len)?;
        if crc32fast::hash(&record[8..]) != word(4) {
            return None;
        }
        // The CRC matched, so the lengths inside were written by `append`; check anyway.
        let mut payload = &record[RECORD_HEAD..];
        let mut rows = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let n = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
            rows.push(payload.get(4..4 + n)?);
            payload = &payload[4 + n..];
        }
        payload.is_empty().then_some((first, rows, len))
    }
}

/// Opens `path` for reading and writing, creating it readable by the owner only (there is
/// no moment when others could open it).
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn record_len(rows: &[&[u8]]) -> usize {
    RECORD_HEAD + rows.iter().map(|r| 4 + r.len()).sum::<usize>()
}

fn header(generation: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&HEADER_MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn parse_header(h: &[u8; 20]) -> Option<u64> {
    if h[..8] != HEADER_MAGIC || crc32fast::hash(&h[..16]).to_le_bytes() != h[16..20] {
        return None;
    }
    Some(u64::from_le_bytes(h[8..16].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(wal_rows: &[Row]) -> Vec<(Revision, Vec<u8>)> {
        wal_rows
            .iter()
            .map(|r| (r.revision, r.bytes.clone()))
            .collect()
    }

    #[test]
    fn records_come_back_until_the_log_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        {
            let (mut wal, got) = Wal::open(&path, 64 << 10).unwrap();
            assert!(got.is_empty());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 10);
            wal.restart().unwrap();
            wal.append(1, &[b"one", b"two"]).unwrap();
            wal.append(3, &[b"three"]).unwrap();
        }
        let (mut wal, got) = Wal::open(&path, 64 << 10).unwrap();
        assert_eq!(
            rows(&got),
            [
                (1, b"one".to_vec()),
                (2, b"two".to_vec()),
                (3, b"three".to_vec())
            ]
        );
        // Appends go after what was read.
        wal.append(4, &[b"four"]).unwrap();
        drop(wal);
        let (mut wal, got) = Wal::open(&path, 64 << 10).unwrap();
        assert_eq!(got.len(), 4);
        wal.restart().unwrap();
        wal.append(5, &[b"five"]).unwrap();
        drop(wal);
        // After a restart only the new generation's records count, though older ones
        // follow them in the file.
        let (_, got) = Wal::open(&path, 64 << 10).unwrap();
        assert_eq!(rows(&got), [(5, b"five".to_vec())]);
    }

    #[test]
    fn a_torn_or_foreign_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, _) = Wal::open(&path, 64 << 10).unwrap();
        wal.restart().unwrap();
        wal.append(1, &[b"kept"]).unwrap();
        let second_at = wal.end;
        wal.append(2, &[b"torn"]).unwrap();
        wal.append(3, &[b"after"]).unwrap();
        drop(wal);
        // Flip a payload byte of the second record: it and everything after are dropped.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", second_at + RECORD_HEAD as u64 + 4)
            .unwrap();
        let (_, got) = Wal::open(&path, 64 << 10).unwrap();
        assert_eq!(rows(&got), [(1, b"kept".to_vec())]);

        // A record that does not follow the revision before it ends the log too.
        let (mut wal, _) = Wal::open(&path, 64 << 10).unwrap();
        wal.restart().unwrap();
        wal.append(10, &[b"a"]).unwrap();
        wal.next_revision = None; // as if written by a confused writer
        wal.append(12, &[b"gap"]).unwrap();
        drop(wal);
        let (_, got) = Wal::open(&path, 64 << 10).unwrap();
        assert_eq!(rows(&got), [(10, b"a".to_vec())]);

        // A header that is not ours: an empty log, started afresh.
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let (wal, got) = Wal::open(&path, 64 << 10).unwrap();
        assert!(got.is_empty());
        assert_eq!(wal.used(), 0);
    }

    #[test]
    fn fits_counts_the_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(&dir.path().join("s.wal"), 16 << 10).unwrap();
        wal.restart().unwrap();
        let big = vec![1u8; 8 << 10];
        assert!(wal.fits(&[&big]));
        wal.append(1, &[&big]).unwrap();
        assert!(!wal.fits(&[&big]), "a second one would pass the end");
        assert!(wal.could_fit(&[&big]));
        let huge = vec![1u8; 16 << 10];
        assert!(!wal.could_fit(&[&huge]));
        assert_eq!(wal.used(), (RECORD_HEAD + 4 + big.len()) as u64);
    }
}
