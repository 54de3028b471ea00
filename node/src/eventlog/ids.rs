//! The event log's id index: which event ids the log holds, for
//! deduplication, in bounded memory however long the log grows.
//!
//! An id is kept as its 128-bit xxh3 hash: two distinct ids collide with
//! probability about n²/2¹²⁹ (10⁻²⁵ for 16 million ids). Recent hashes sit
//! in a memory table; when it fills they are written, sorted, to a run file
//! with a blocked Bloom filter (10 bits per id, ~1% false positives) and a
//! sparse index (one hash in [`SPARSE`]) that stay in memory. A lookup reads
//! the disk only for a true duplicate or a false positive, one block of
//! [`SPARSE`] hashes. Runs are merged [`FAN_IN`] at a time into the next
//! level (size-tiered, as in an LSM tree), so a lookup checks a few filters
//! per level. With 16 million ids that is ~20 MiB of filters instead of the
//! ~400 MiB a hash set of the ids would take.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Hashes held in memory before they are written as a run.
const MEMTABLE: usize = 1 << 16;
/// Runs of one level merged into one run of the next.
const FAN_IN: usize = 4;
/// Hashes per sparse index entry (and per block read on a lookup).
const SPARSE: usize = 256;
/// Filter bits per hash.
const BLOOM_BITS: usize = 10;
/// Bits set per hash (the optimum for 10 bits per hash). 8 bits and 6
/// probes saved 4 MiB at 16 million ids, but the extra false positives'
/// reads doubled the index's share of ingestion time.
const PROBES: u64 = 7;
const MAGIC: &[u8; 8] = b"TRPIDS01";
const HEADER: u64 = 32;

/// An id's hash.
pub fn hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The hashes are uniform already: use their low bits as the table hash.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Memtable = HashSet<u128, BuildHasherDefault<Identity>>;

/// A blocked Bloom filter: each hash sets [`PROBES`] bits in one 512-bit block, so
/// a lookup costs one cache line.
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    fn with_capacity(n: usize) -> Self {
        let blocks = (n * BLOOM_BITS).div_ceil(512).max(1);
        Self {
            blocks: vec![[0; 8]; blocks],
        }
    }

    fn probes(&self, h: u128) -> (usize, impl Iterator<Item = usize>) {
        let low = h as u64;
        let block = ((u128::from(low) * self.blocks.len() as u128) >> 64) as usize;
        let high = (h >> 64) as u64;
        (
            block,
            (0..PROBES).map(move |i| ((high >> (i * 9)) & 511) as usize),
        )
    }

    fn insert(&mut self, h: u128) {
        let (block, bits) = self.probes(h);
        let words = &mut self.blocks[block];
        for bit in bits {
            words[bit >> 6] |= 1 << (bit & 63);
        }
    }

    fn may_contain(&self, h: u128) -> bool {
        let (block, mut bits) = self.probes(h);
        let words = &self.blocks[block];
        bits.all(|bit| words[bit >> 6] & (1 << (bit & 63)) != 0)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.blocks
            .iter()
            .flat_map(|b| b.iter().flat_map(|w| w.to_le_bytes()))
            .collect()
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Self {
            blocks: words
                .chunks_exact(8)
                .map(|c| c.try_into().unwrap_or_default())
                .collect(),
        }
    }
}

/// One sorted run on disk: `MAGIC`, count, filter blocks (header of
/// [`HEADER`] bytes), the hashes (16 bytes each, little-endian, sorted),
/// the filter, the sparse index.
struct Run {
    name: String,
    file: File,
    count: u64,
    bloom: Bloom,
    sparse: Vec<u128>,
}

fn read_u128s(bytes: &[u8]) -> Vec<u128> {
    bytes
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

impl Run {
    fn open(dir: &Path, name: &str) -> std::io::Result<Self> {
        let file = File::open(dir.join(name))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            return Err(std::io::Error::other(format!("{name} is not an id run")));
        }
        let count = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let blocks = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
        let at = HEADER + count * 16;
        let mut bloom = vec![0u8; blocks as usize * 64];
        file.read_exact_at(&mut bloom, at)?;
        let mut sparse = vec![0u8; (count as usize).div_ceil(SPARSE) * 16];
        file.read_exact_at(&mut sparse, at + bloom.len() as u64)?;
        Ok(Self {
            name: name.to_owned(),
            file,
            count,
            bloom: Bloom::from_bytes(&bloom),
            sparse: read_u128s(&sparse),
        })
    }

    /// Writes `hashes` (sorted, distinct; at most `capacity`) as run `name`.
    fn write(
        dir: &Path,
        name: &str,
        capacity: usize,
        hashes: impl Iterator<Item = std::io::Result<u128>>,
    ) -> std::io::Result<Self> {
        let tmp = dir.join(format!("{name}.tmp"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        out.write_all(&[0u8; HEADER as usize])?;
        let mut bloom = Bloom::with_capacity(capacity);
        let mut sparse = Vec::with_capacity(capacity.div_ceil(SPARSE));
        let mut count = 0u64;
        for h in hashes {
            let h = h?;
            if count as usize % SPARSE == 0 {
                sparse.push(h);
            }
            bloom.insert(h);
            out.write_all(&h.to_le_bytes())?;
            count += 1;
        }
        out.write_all(&bloom.to_bytes())?;
        for h in &sparse {
            out.write_all(&h.to_le_bytes())?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&count.to_le_bytes());
        header[16..24].copy_from_slice(&(bloom.blocks.len() as u64).to_le_bytes());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_data()?;
        std::fs::rename(&tmp, dir.join(name))?;
        Ok(Self {
            name: name.to_owned(),
            file,
            count,
            bloom,
            sparse,
        })
    }

    fn contains(&self, h: u128) -> std::io::Result<bool> {
        if !self.bloom.may_contain(h) {
            return Ok(false);
        }
        let block = self.sparse.partition_point(|k| *k <= h);
        if block == 0 {
            return Ok(false);
        }
        let first = (block - 1) * SPARSE;
        let n = SPARSE.min(self.count as usize - first);
        let mut bytes = vec![0u8; n * 16];
        self.file
            .read_exact_at(&mut bytes, HEADER + first as u64 * 16)?;
        Ok(read_u128s(&bytes).binary_search(&h).is_ok())
    }

    /// Its hashes in order.
    fn iter(&self) -> std::io::Result<impl Iterator<Item = std::io::Result<u128>>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(HEADER))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut left = self.count;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut buf = [0u8; 16];
            Some(
                reader
                    .read_exact(&mut buf)
                    .map(|()| u128::from_le_bytes(buf)),
            )
        }))
    }
}

/// Merges sorted hash streams into one sorted stream.
fn merge(
    mut inputs: Vec<std::iter::Peekable<Box<dyn Iterator<Item = std::io::Result<u128>>>>>,
) -> impl Iterator<Item = std::io::Result<u128>> {
    std::iter::from_fn(move || {
        let mut best: Option<(usize, u128)> = None;
        for (i, input) in inputs.iter_mut().enumerate() {
            match input.peek() {
                Some(Ok(h)) if best.is_none_or(|(_, b)| *h < b) => best = Some((i, *h)),
                Some(Err(_)) => return input.next(),
                _ => {}
            }
        }
        let (i, _) = best?;
        inputs[i].next()
    })
}

/// The id index of one event log directory.
pub struct IdIndex {
    dir: PathBuf,
    memtable: Memtable,
    /// Runs by level, oldest first.
    levels: Vec<Vec<Run>>,
    next_run: u64,
}

impl IdIndex {
    /// Opens the runs named (by the manifest) in `dir`; other run files
    /// (left by a crash between writing a run and the manifest) are removed.
    pub fn open(dir: &Path, runs: &[Vec<String>]) -> std::io::Result<Self> {
        let mut levels = Vec::new();
        let mut next_run = 0;
        let mut known = HashSet::new();
        for names in runs {
            let mut level = Vec::new();
            for name in names {
                level.push(Run::open(dir, name)?);
                known.insert(name.clone());
                next_run = next_run.max(run_number(name).map_or(0, |n| n + 1));
            }
            levels.push(level);
        }
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("ids-") && !known.contains(&name) {
                std::fs::remove_file(dir.join(&name))?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            memtable: Memtable::default(),
            levels,
            next_run,
        })
    }

    /// The runs by level, for the manifest.
    pub fn runs(&self) -> Vec<Vec<String>> {
        self.levels
            .iter()
            .map(|level| level.iter().map(|r| r.name.clone()).collect())
            .collect()
    }

    /// Whether the index holds `h`.
    pub fn contains(&self, h: u128) -> std::io::Result<bool> {
        if self.memtable.contains(&h) {
            return Ok(true);
        }
        for run in self.levels.iter().flatten() {
            if run.contains(h)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds `h`; whether the memory table is full and should be written
    /// with [`IdIndex::persist`].
    pub fn insert(&mut self, h: u128) -> bool {
        self.memtable.insert(h);
        self.memtable.len() >= MEMTABLE
    }

    /// Writes the memory table as a run and merges full levels. The caller
    /// records [`IdIndex::runs`] in its manifest, then calls
    /// [`IdIndex::remove_merged`] with what this returned.
    pub fn persist(&mut self) -> std::io::Result<Vec<String>> {
        if self.memtable.is_empty() {
            return Ok(Vec::new());
        }
        // The memory table is kept until its run is written: on failure
        // the index still holds every id.
        let mut hashes: Vec<u128> = self.memtable.iter().copied().collect();
        hashes.sort_unstable();
        let name = self.new_name(0);
        let run = Run::write(&self.dir, &name, hashes.len(), hashes.into_iter().map(Ok))?;
        self.memtable.clear();
        self.push(0, run);
        let mut merged = Vec::new();
        let mut level = 0;
        while self.levels.get(level).is_some_and(|l| l.len() >= FAN_IN) {
            let mut runs = std::mem::take(&mut self.levels[level]);
            // Only their hashes are read from here on: free the filters
            // before the merged run's is built.
            for run in &mut runs {
                run.bloom = Bloom { blocks: Vec::new() };
                run.sparse = Vec::new();
            }
            let name = self.new_name(level + 1);
            let run = match Self::merge_runs(&self.dir, &name, &runs) {
                Ok(run) => run,
                Err(e) => {
                    // Nothing merged: the runs stay, read back with their filters.
                    for old in &runs {
                        self.levels[level].push(Run::open(&self.dir, &old.name)?);
                    }
                    return Err(e);
                }
            };
            merged.extend(runs.into_iter().map(|r| r.name));
            self.push(level + 1, run);
            level += 1;
        }
        Ok(merged)
    }

    fn merge_runs(dir: &Path, name: &str, runs: &[Run]) -> std::io::Result<Run> {
        let capacity = runs.iter().map(|r| r.count as usize).sum();
        let inputs = runs
            .iter()
            .map(|r| {
                r.iter().map(|it| {
                    (Box::new(it) as Box<dyn Iterator<Item = std::io::Result<u128>>>).peekable()
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Run::write(dir, name, capacity, merge(inputs))
    }

    /// Deletes run files merged away (after the manifest stopped naming them).
    pub fn remove_merged(&self, names: &[String]) -> std::io::Result<()> {
        for name in names {
            std::fs::remove_file(self.dir.join(name))?;
        }
        Ok(())
    }

    /// Forgets every id: the memory table and all runs (their files go
    /// once the manifest no longer names them: see [`IdIndex::open`]).
    pub fn clear(&mut self) -> Vec<String> {
        self.memtable.clear();
        let names = self.runs().into_iter().flatten().collect();
        self.levels.clear();
        names
    }

    fn new_name(&mut self, level: usize) -> String {
        self.next_run += 1;
        format!("ids-{:012}-L{level}", self.next_run)
    }

    fn push(&mut self, level: usize, run: Run) {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        self.levels[level].push(run);
    }
}

fn run_number(name: &str) -> Option<u64> {
    name.strip_prefix("ids-")?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_in_memory_in_runs_and_after_merges_and_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let mut index = IdIndex::open(dir.path(), &[]).expect("open");
        let n = MEMTABLE * (FAN_IN + 1) + 10;
        let mut removed = Vec::new();
        for i in 0..n {
            if index.insert(hash(&format!("id-{i}"))) {
                removed.extend(index.persist().expect("persist"));
            }
        }
        // Four level-0 runs were merged into one level-1 run.
        assert_eq!(removed.len(), FAN_IN);
        index.remove_merged(&removed).expect("removed");
        let runs = index.runs();
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1]);
        for i in (0..n).step_by(997) {
            assert!(index.contains(hash(&format!("id-{i}"))).expect("read"));
        }
        let absent = (0..20_000)
            .filter(|i| index.contains(hash(&format!("other-{i}"))).expect("read"))
            .count();
        assert_eq!(absent, 0);

        // Reopened from the manifest's runs: the memory table's ids are
        // gone (the log replays them), the runs' are there.
        index.persist().expect("persist");
        let runs = index.runs();
        drop(index);
        std::fs::write(dir.path().join("ids-999999999999-L0"), b"stray").expect("stray");
        let index = IdIndex::open(dir.path(), &runs).expect("reopen");
        assert!(!dir.path().join("ids-999999999999-L0").exists());
        for i in (0..n).step_by(991) {
            assert!(index.contains(hash(&format!("id-{i}"))).expect("read"));
        }
        assert!(!index.contains(hash("never")).expect("read"));
    }

    #[test]
    fn the_filter_rarely_lies() {
        let mut bloom = Bloom::with_capacity(100_000);
        for i in 0..100_000 {
            bloom.insert(hash(&format!("in-{i}")));
        }
        assert!((0..100_000).all(|i| bloom.may_contain(hash(&format!("in-{i}")))));
        let false_positives = (0..100_000)
            .filter(|i| bloom.may_contain(hash(&format!("out-{i}"))))
            .count();
        assert!(false_positives < 3_000, "{false_positives} false positives");
    }
}
