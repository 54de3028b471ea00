//! The event log's segment files: append-only, one frame per appended
//! batch, a new file every [`SEGMENT_BYTES`].
//!
//! A frame is `[u32 length][u32 crc32][payload]`; the payload is
//! `[u64 first offset][u64 last offset][u32 count]` and the events, each
//! `[u64 offset][u64 event time][u64 received][u16 len][id][u16 len]
//! [source][u16 len][type][u32 len][data as JSON]`. Frames are found
//! again by reading their headers when the log opens (one small read per
//! frame of up to a few thousand events); only the newest segment can end
//! in a torn frame, and that is checked and cut off.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use troupe_protocol::{Event, Payload};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const FRAME_HEADER: usize = 8;
const PAYLOAD_HEADER: usize = 20;

/// Why a frame could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The file could not be read.
    #[error("event log: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame this code wrote.
    #[error("event log {path} at byte {at}: {reason}")]
    Corrupt {
        /// The segment.
        path: String,
        /// Where the frame starts.
        at: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Where a frame is and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    /// Byte position of the frame in its segment.
    pub at: u64,
    /// Frame length, header included.
    pub len: u64,
    /// Offset of its last event.
    pub last: u64,
}

/// One segment file and the frames in it.
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// A handle for positioned reads (shared by readers).
    pub file: Arc<File>,
    /// Its frames in order.
    pub frames: Vec<FrameInfo>,
    /// Bytes of whole frames.
    pub len: u64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes `events` (offsets assigned, ascending) as one frame into `out`.
pub fn encode(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    let first = events.first().map_or(0, |e| e.offset);
    let last = events.last().map_or(0, |e| e.offset);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.extend_from_slice(&event.offset.to_le_bytes());
        out.extend_from_slice(&event.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&event.received_at_ms.to_le_bytes());
        put_str(out, &event.event_id);
        put_str(out, &event.source);
        put_str(out, &event.event_type);
        let data = event.data.as_str().as_bytes();
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    let payload = (out.len() - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[FRAME_HEADER..]);
    out[..4].copy_from_slice(&payload.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads through a payload.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

fn decode_events(payload: &[u8]) -> Option<Vec<Event>> {
    let mut c = Cursor { bytes: payload };
    let (_first, _last, count) = (c.u64()?, c.u64()?, c.u32()?);
    let mut events = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = c.u64()?;
        let timestamp_ms = c.u64()?;
        let received_at_ms = c.u64()?;
        let event_id = c.str()?;
        let source = c.str()?;
        let event_type = c.str()?;
        let len = c.u32()? as usize;
        let text = std::str::from_utf8(c.take(len)?).ok()?;
        let data = Payload::from_text(text.to_owned()).ok()?;
        events.push(Event {
            offset,
            event_id,
            source,
            event_type,
            timestamp_ms,
            received_at_ms,
            data,
        });
    }
    Some(events)
}

impl Segment {
    /// Name of the segment whose first event is `first`.
    pub fn name(first: u64) -> String {
        format!("{first:020}.seg")
    }

    /// Creates an empty segment.
    pub fn create(dir: &Path, first: u64) -> std::io::Result<Self> {
        let path = dir.join(Self::name(first));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Arc::new(file),
            frames: Vec::new(),
            len: 0,
        })
    }

    /// Opens a segment and finds its frames. With `check`, each frame's
    /// checksum is verified and the file cut at the first bad or torn one
    /// (the newest segment, after a crash mid-write).
    pub fn open(path: PathBuf, check: bool) -> Result<Self, FrameError> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut frames = Vec::new();
        let mut at = 0u64;
        let mut header = [0u8; FRAME_HEADER + PAYLOAD_HEADER];
        while at + header.len() as u64 <= size {
            file.read_exact_at(&mut header, at)?;
            let payload = u64::from(u32::from_le_bytes(
                header[..4].try_into().unwrap_or_default(),
            ));
            let len = FRAME_HEADER as u64 + payload;
            if payload < PAYLOAD_HEADER as u64 || at + len > size {
                break;
            }
            if check {
                let mut bytes = vec![0u8; payload as usize];
                file.read_exact_at(&mut bytes, at + FRAME_HEADER as u64)?;
                let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
                if crc32fast::hash(&bytes) != crc {
                    break;
                }
            }
            let word =
                |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().unwrap_or_default());
            frames.push(FrameInfo {
                at,
                len,
                last: word(FRAME_HEADER + 8),
            });
            at += len;
        }
        if at < size {
            if !check {
                return Err(FrameError::Corrupt {
                    path: path.display().to_string(),
                    at,
                    reason: "a torn frame in a closed segment".into(),
                });
            }
            tracing::warn!(segment = %path.display(), at, size, "cutting a torn tail off the event log");
            file.set_len(at)?;
        }
        Ok(Self {
            path,
            file: Arc::new(file),
            frames,
            len: at,
        })
    }

    /// Appends an encoded frame whose last offset is `last`; on failure
    /// the file is cut back, so the segment never holds part of a frame.
    pub fn append(&mut self, frame: &[u8], last: u64) -> std::io::Result<()> {
        let at = self.len;
        if let Err(e) = self.file.write_all_at(frame, at) {
            let _ = self.file.set_len(at);
            return Err(e);
        }
        self.len += frame.len() as u64;
        self.frames.push(FrameInfo {
            at,
            len: frame.len() as u64,
            last,
        });
        Ok(())
    }

    /// The last offset in this segment.
    pub fn last(&self) -> Option<u64> {
        self.frames.last().map(|f| f.last)
    }
}

/// Reads one frame's events.
pub fn read_frame(file: &File, path: &Path, frame: FrameInfo) -> Result<Vec<Event>, FrameError> {
    thread_local! {
        /// A frame's bytes, reused: a fresh buffer of a few hundred KiB
        /// per frame read was an mmap, page faults and munmap each time.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|bytes| {
        bytes.resize(frame.len as usize, 0);
        file.read_exact_at(bytes, frame.at)?;
        check_and_decode(bytes, path, frame)
    })
}

fn check_and_decode(bytes: &[u8], path: &Path, frame: FrameInfo) -> Result<Vec<Event>, FrameError> {
    let corrupt = |reason: &str| FrameError::Corrupt {
        path: path.display().to_string(),
        at: frame.at,
        reason: reason.to_owned(),
    };
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[FRAME_HEADER..]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    decode_events(&bytes[FRAME_HEADER..]).ok_or_else(|| corrupt("undecodable events"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(offset: u64) -> Event {
        Event {
            offset,
            event_id: format!("e{offset}"),
            source: "s".into(),
            event_type: "t".into(),
            timestamp_ms: 1_000 + offset,
            received_at_ms: 2_000,
            data: json!({"v": offset, "nested": {"x": [1, 2]}})
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into(),
        }
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let mut segment = Segment::create(dir.path(), 1).expect("create");
        let mut buf = Vec::new();
        for first in [1u64, 4] {
            let events: Vec<Event> = (first..first + 3).map(event).collect();
            encode(&events, &mut buf);
            segment.append(&buf, first + 2).expect("append");
        }
        let whole = segment.len;
        // Half a frame, as a crash mid-write leaves it.
        segment
            .file
            .write_all_at(&buf[..buf.len() / 2], whole)
            .expect("torn");
        let path = segment.path.clone();
        drop(segment);
        assert!(Segment::open(path.clone(), false).is_err());
        let segment = Segment::open(path.clone(), true).expect("open");
        assert_eq!(segment.len, whole);
        assert_eq!(segment.frames.len(), 2);
        assert_eq!(segment.last(), Some(6));
        let read = read_frame(&segment.file, &path, segment.frames[1]).expect("read");
        assert_eq!(read, (4..7).map(event).collect::<Vec<_>>());
    }
}
