//! Video tasks as the API shows them, and the checks made once at the
//! edge: what an uploaded file really is (sniffed from its first bytes, not
//! believed from its name or part header) and what may be kept of its name.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a task is: `uploaded → processing → processed`, or `failed`.
pub mod status {
    pub const UPLOADED: &str = "uploaded";
    pub const PROCESSING: &str = "processing";
    pub const PROCESSED: &str = "processed";
    pub const FAILED: &str = "failed";

    /// No worker will touch the task again.
    pub fn is_settled(status: &str) -> bool {
        status == PROCESSED || status == FAILED
    }
}

/// A video task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    #[serde(skip)]
    pub owner_id: Uuid,
    /// `uploaded`, `processing`, `processed` or `failed`.
    pub status: String,
    /// Percent of the processing done (100 once processed).
    pub progress: u8,
    pub file_name: String,
    /// The container the upload was recognised as.
    pub content_type: String,
    pub original_size: u64,
    pub processed_size: Option<u64>,
    /// Why the task failed (`failed` only).
    pub failure_reason: Option<String>,
    /// The error of the last failed attempt that will be retried.
    pub last_error: Option<String>,
    /// Processing attempts so far.
    pub attempts: u32,
    /// Grows with every change; a client that saw version `n` has seen
    /// everything up to it.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the upload handler stores for a new task.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub file_name: String,
    pub content_type: String,
    pub original_size: u64,
    pub created_at: DateTime<Utc>,
}

/// Object keys of a task: derived from its id, never from user input.
pub fn original_key(id: Uuid) -> String {
    format!("{TASKS_PREFIX}/{id}/original")
}

pub fn processed_key(id: Uuid) -> String {
    format!("{TASKS_PREFIX}/{id}/processed.mp4")
}

/// Every object of the service lives under this prefix.
pub const TASKS_PREFIX: &str = "tasks";

/// The task an object key belongs to.
pub fn task_of_key(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(TASKS_PREFIX)?.strip_prefix('/')?;
    let (id, _) = rest.split_once('/')?;
    id.parse().ok()
}

/// Bytes of an upload looked at to recognise its container.
pub const SNIFF_BYTES: usize = 512;

/// The media type of a video container recognised from its first bytes,
/// or `None` (images, audio-only files, documents, anything unknown).
pub fn sniff_video(head: &[u8]) -> Option<&'static str> {
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return iso_media_type(&head[8..12]);
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        let webm = head.windows(4).any(|w| w == b"webm");
        return Some(if webm {
            "video/webm"
        } else {
            "video/x-matroska"
        });
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"AVI " {
        return Some("video/x-msvideo");
    }
    if head.starts_with(b"FLV\x01") {
        return Some("video/x-flv");
    }
    if head.starts_with(&[0x00, 0x00, 0x01, 0xBA]) || head.starts_with(&[0x00, 0x00, 0x01, 0xB3]) {
        return Some("video/mpeg");
    }
    if head.starts_with(&[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Some("video/x-ms-asf");
    }
    if head.starts_with(b"OggS") && head.windows(7).any(|w| w == b"\x80theora") {
        return Some("video/ogg");
    }
    // MPEG transport stream: a sync byte every 188 bytes.
    if head.len() >= 377 && head[0] == 0x47 && head[188] == 0x47 && head[376] == 0x47 {
        return Some("video/mp2t");
    }
    None
}

/// ISO base media files (MP4, MOV, 3GP) share `ftyp`; the major brand
/// tells video from still images (HEIF, AVIF) and audio (M4A).
fn iso_media_type(brand: &[u8]) -> Option<&'static str> {
    match brand {
        b"heic" | b"heix" | b"hevc" | b"hevx" | b"mif1" | b"msf1" | b"avif" | b"avis" => None,
        b"M4A " | b"M4B " | b"M4P " | b"F4A " | b"F4B " => None,
        b"qt  " => Some("video/quicktime"),
        [b'3', b'g', ..] => Some("video/3gpp"),
        _ => Some("video/mp4"),
    }
}

/// Longest file name kept.
const MAX_FILE_NAME: usize = 100;

/// What is kept of an uploaded file's name, for showing it and for the
/// download's `Content-Disposition`: the last path segment, letters,
/// digits and `.-_ ` only, at most 100 characters; `video` when nothing is
/// left.
pub fn clean_file_name(name: Option<&str>) -> String {
    let last = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let kept: String = last
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .take(MAX_FILE_NAME)
        .collect();
    let kept = kept.trim().trim_start_matches('.').to_owned();
    if kept.is_empty() {
        "video".into()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftyp(brand: &[u8; 4]) -> Vec<u8> {
        let mut head = vec![0, 0, 0, 0x20];
        head.extend_from_slice(b"ftyp");
        head.extend_from_slice(brand);
        head.extend_from_slice(&[0; 20]);
        head
    }

    #[test]
    fn video_containers_are_recognised_by_content() {
        assert_eq!(sniff_video(&ftyp(b"isom")), Some("video/mp4"));
        assert_eq!(sniff_video(&ftyp(b"qt  ")), Some("video/quicktime"));
        assert_eq!(sniff_video(&ftyp(b"3gp5")), Some("video/3gpp"));
        assert_eq!(
            sniff_video(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00webm"),
            Some("video/webm")
        );
        assert_eq!(
            sniff_video(b"RIFF\x00\x00\x00\x00AVI LIST"),
            Some("video/x-msvideo")
        );
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert_eq!(sniff_video(&ts), Some("video/mp2t"));
    }

    #[test]
    fn images_audio_and_text_are_not_videos() {
        assert_eq!(sniff_video(&ftyp(b"heic")), None);
        assert_eq!(sniff_video(&ftyp(b"avif")), None);
        assert_eq!(sniff_video(&ftyp(b"M4A ")), None);
        assert_eq!(sniff_video(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), None);
        assert_eq!(sniff_video(b"%PDF-1.7\n"), None);
        assert_eq!(sniff_video(b"OggS\0\x02\0\0\0\0\0\0\0\0\x01vorbis"), None);
        assert_eq!(sniff_video(b"plain text pretending to be movie.mp4"), None);
        assert_eq!(sniff_video(b""), None);
    }

    #[test]
    fn file_names_are_cleaned() {
        assert_eq!(clean_file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            clean_file_name(Some("C:\\clips\\my clip (1).mp4")),
            "my clip 1.mp4"
        );
        assert_eq!(
            clean_file_name(Some("\"evil\r\nheader\".mov")),
            "evilheader.mov"
        );
        assert_eq!(clean_file_name(Some(".hidden")), "hidden");
        assert_eq!(clean_file_name(None), "video");
        assert_eq!(clean_file_name(Some("///")), "video");
        assert_eq!(clean_file_name(Some(&"a".repeat(300))).len(), 100);
    }

    #[test]
    fn object_keys_name_their_task() {
        let id = Uuid::now_v7();
        assert_eq!(task_of_key(&original_key(id)), Some(id));
        assert_eq!(task_of_key(&processed_key(id)), Some(id));
        assert_eq!(task_of_key("tasks/not-a-uuid/original"), None);
        assert_eq!(task_of_key("other/x"), None);
        zocalo_objects::check_key(&original_key(id)).unwrap();
        zocalo_objects::check_key(&processed_key(id)).unwrap();
    }
}
