//! The store's objects and multipart uploads, in memory, with S3's multipart rules: parts
//! numbered 1..=10000, every part but the last at least 5 MiB, the parts listed in ascending
//! order with their ETags, the object's ETag the MD5 of the parts' MD5s followed by `-<parts>`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use md5::Md5;
use sha2::{Digest, Sha256};

use codepipeline_job_port::domain::S3Location;

/// The smallest a part may be, but the last: 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// An object's bytes, kept as the chunks they arrived in (a 200 MiB upload is not copied into
/// one buffer).
#[derive(Clone, Default)]
pub struct Content {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Content {
    /// Appends a chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len() as u64;
            self.chunks.push(chunk);
        }
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes from `start` to `end` (exclusive), as chunks sharing this content's memory.
    pub fn slice(&self, start: u64, end: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        for chunk in &self.chunks {
            let chunk_end = offset + chunk.len() as u64;
            if chunk_end > start && offset < end {
                let from = start.saturating_sub(offset) as usize;
                let to = (end.min(chunk_end) - offset) as usize;
                if from < to {
                    out.push(chunk.slice(from..to));
                }
            }
            offset = chunk_end;
            if offset >= end {
                break;
            }
        }
        out
    }

    /// Every chunk, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// All the bytes in one buffer (for tests and small objects).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter().copied())
            .collect()
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        let mut content = Self::default();
        content.push(Bytes::from(bytes));
        content
    }
}

/// How an object is encrypted, as its request headers said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encryption {
    /// `x-amz-server-side-encryption`: `aws:kms`, `aws:kms:dsse` or `AES256`.
    pub algorithm: Option<String>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    pub kms_key_id: Option<String>,
}

/// The checksums an object (or a part) was sent with, each verified, base64 as S3 shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checksums {
    /// `x-amz-checksum-sha256`; for a multipart object S3's composite `<base64>-<parts>`.
    pub sha256: Option<String>,
    /// `x-amz-checksum-crc32`; composite likewise.
    pub crc32: Option<String>,
}

impl Checksums {
    /// Whether these are a multipart upload's composite checksums.
    pub fn is_composite(&self) -> bool {
        self.sha256
            .iter()
            .chain(&self.crc32)
            .any(|value| value.contains('-'))
    }
}

/// A stored object.
#[derive(Clone)]
pub struct Object {
    /// Its bytes.
    pub content: Content,
    /// Its content type, as sent.
    pub content_type: Option<String>,
    /// Its encryption, as requested.
    pub encryption: Encryption,
    /// Its ETag, quoted.
    pub etag: String,
    /// The checksums it was sent with.
    pub checksums: Checksums,
    /// How many parts it was uploaded in (0: one PutObject).
    pub parts: u32,
    /// When it was written.
    pub last_modified: SystemTime,
}

impl Object {
    /// An object of these bytes, its ETag and SHA-256 computed, unencrypted.
    pub fn new(bytes: Vec<u8>, content_type: &str) -> Self {
        let sha256 = aws_smithy_types::base64::encode(Sha256::digest(&bytes));
        Self {
            etag: quoted_hex(&Md5::digest(&bytes)),
            content: Content::from(bytes),
            content_type: Some(content_type.to_owned()),
            encryption: Encryption::default(),
            checksums: Checksums {
                sha256: Some(sha256),
                crc32: None,
            },
            parts: 0,
            last_modified: SystemTime::now(),
        }
    }
}

/// An uploaded part.
#[derive(Clone)]
pub struct Part {
    /// Its bytes.
    pub content: Content,
    /// The MD5 of its bytes (its ETag, unquoted and in binary).
    pub md5: [u8; 16],
    /// Its SHA-256, when it was sent with `x-amz-checksum-sha256`.
    pub sha256: Option<[u8; 32]>,
    /// Its CRC32, when it was sent with `x-amz-checksum-crc32`.
    pub crc32: Option<u32>,
}

impl Part {
    /// Its ETag, quoted.
    pub fn etag(&self) -> String {
        quoted_hex(&self.md5)
    }
}

/// What a multipart upload was created with.
#[derive(Debug, Clone, Default)]
pub struct UploadSettings {
    /// The object's content type.
    pub content_type: Option<String>,
    /// The object's encryption.
    pub encryption: Encryption,
    /// `x-amz-checksum-algorithm` (upper case): the parts' checksums then make the object's
    /// composite checksum.
    pub checksum_algorithm: Option<String>,
}

struct Upload {
    location: S3Location,
    settings: UploadSettings,
    parts: BTreeMap<u32, Part>,
    /// When it was created: an upload left in progress longer than the limits allow is
    /// forgotten, with its parts.
    created: Instant,
}

impl Upload {
    fn bytes(&self) -> u64 {
        self.parts.values().map(|part| part.content.len()).sum()
    }
}

/// How much the store may hold: it lives in memory, and a shared emulator must not be made to
/// hold any upload anyone sends.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// The bytes of every object and every part of an upload in progress together.
    pub max_bytes: u64,
    /// Multipart uploads in progress at once.
    pub max_uploads: usize,
    /// How long an upload may stay in progress before it is forgotten as abandoned.
    pub upload_ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_bytes: 2 << 30,
            max_uploads: 1024,
            upload_ttl: Duration::from_secs(60 * 60),
        }
    }
}

/// Why a multipart call failed, in S3's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// NoSuchUpload: no upload with this ID for this key (or it was completed or aborted).
    #[error("no such upload")]
    NoSuchUpload,
    /// InvalidPart: a listed part was not uploaded, or its ETag is not the one given.
    #[error("part {0} was not uploaded with that ETag")]
    InvalidPart(u32),
    /// InvalidPartOrder: the list is not in ascending part-number order.
    #[error("the parts are not in ascending order")]
    InvalidPartOrder,
    /// EntityTooSmall: a part but the last is under 5 MiB.
    #[error("part {part} is {size} bytes, under the 5 MiB minimum")]
    EntityTooSmall {
        /// The part.
        part: u32,
        /// Its size.
        size: u64,
    },
    /// MalformedXML: no parts listed.
    #[error("no parts listed")]
    NoParts,
    /// The store holds as many bytes as its limits allow.
    #[error("the store is full")]
    StoreFull,
    /// As many uploads are in progress as the store's limits allow.
    #[error("too many uploads in progress")]
    TooManyUploads,
}

/// The store holds as many bytes as its limits allow: nothing more is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is full")]
pub struct StoreFull;

#[derive(Default)]
struct Inner {
    objects: HashMap<(String, String), Arc<Object>>,
    uploads: HashMap<String, Upload>,
    /// The bytes of every object and every part held.
    bytes: u64,
}

impl Inner {
    /// Forgets the uploads in progress longer than `ttl`, with their parts.
    fn forget_abandoned(&mut self, ttl: Duration, now: Instant) {
        let abandoned: Vec<String> = self
            .uploads
            .iter()
            .filter(|(_, upload)| now.duration_since(upload.created) > ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for id in abandoned {
            if let Some(upload) = self.uploads.remove(&id) {
                self.bytes -= upload.bytes();
            }
        }
    }
}

/// Every object and multipart upload in progress, within the store's limits.
#[derive(Default)]
pub struct Objects {
    inner: Mutex<Inner>,
    limits: StoreLimits,
}

fn key(location: &S3Location) -> (String, String) {
    (location.bucket_name.clone(), location.object_key.clone())
}

impl Objects {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is one insert or removal: a poisoned lock leaves nothing half-done.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A store within `limits`.
    pub fn with_limits(limits: StoreLimits) -> Self {
        Self {
            inner: Mutex::default(),
            limits,
        }
    }

    /// How many more bytes the store may take now: what a request body may be read up to.
    pub fn room(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.lock().bytes)
    }

    /// Stores (or replaces) the object at `location`, if the store has room for it.
    pub fn put(&self, location: &S3Location, object: Object) -> Result<Arc<Object>, StoreFull> {
        let object = Arc::new(object);
        let mut inner = self.lock();
        let replaced = inner
            .objects
            .get(&key(location))
            .map_or(0, |old| old.content.len());
        let bytes = inner.bytes - replaced + object.content.len();
        if bytes > self.limits.max_bytes {
            return Err(StoreFull);
        }
        inner.bytes = bytes;
        inner.objects.insert(key(location), object.clone());
        Ok(object)
    }

    /// The object at `location`.
    pub fn get(&self, location: &S3Location) -> Option<Arc<Object>> {
        self.lock().objects.get(&key(location)).cloned()
    }

    /// Starts a multipart upload to `location`: its upload ID. Uploads abandoned past the
    /// limits' time are forgotten first; then at most the limits' number may be in progress.
    pub fn create_upload(
        &self,
        location: &S3Location,
        settings: UploadSettings,
    ) -> Result<String, MultipartError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.forget_abandoned(self.limits.upload_ttl, now);
        if inner.uploads.len() >= self.limits.max_uploads {
            return Err(MultipartError::TooManyUploads);
        }
        let id = crate::random::text(64);
        inner.uploads.insert(
            id.clone(),
            Upload {
                location: location.clone(),
                settings,
                parts: BTreeMap::new(),
                created: now,
            },
        );
        Ok(id)
    }

    /// Whether `upload_id` is an upload in progress to `location`.
    pub fn has_upload(&self, location: &S3Location, upload_id: &str) -> bool {
        self.lock()
            .uploads
            .get(upload_id)
            .is_some_and(|upload| upload.location == *location)
    }

    /// Stores part `number` of an upload (replacing an earlier upload of that number): its ETag.
    pub fn upload_part(
        &self,
        location: &S3Location,
        upload_id: &str,
        number: u32,
        part: Part,
    ) -> Result<String, MultipartError> {
        let mut inner = self.lock();
        let held = inner.bytes;
        let upload = inner
            .uploads
            .get_mut(upload_id)
            .filter(|upload| upload.location == *location)
            .ok_or(MultipartError::NoSuchUpload)?;
        let replaced = upload.parts.get(&number).map_or(0, |old| old.content.len());
        let bytes = held - replaced + part.content.len();
        if bytes > self.limits.max_bytes {
            return Err(MultipartError::StoreFull);
        }
        let etag = part.etag();
        upload.parts.insert(number, part);
        inner.bytes = bytes;
        Ok(etag)
    }

    /// Completes an upload from the listed `(part number, ETag)`s: the object now stored. The
    /// upload stays in progress when the list is refused, as S3 keeps it.
    pub fn complete_upload(
        &self,
        location: &S3Location,
        upload_id: &str,
        listed: &[(u32, String)],
    ) -> Result<Arc<Object>, MultipartError> {
        let mut inner = self.lock();
        let upload = inner
            .uploads
            .get(upload_id)
            .filter(|upload| upload.location == *location)
            .ok_or(MultipartError::NoSuchUpload)?;
        if listed.is_empty() {
            return Err(MultipartError::NoParts);
        }
        if listed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(MultipartError::InvalidPartOrder);
        }
        let mut parts = Vec::with_capacity(listed.len());
        for (number, etag) in listed {
            let part = upload
                .parts
                .get(number)
                .filter(|part| part.etag().trim_matches('"') == etag.trim_matches('"'))
                .ok_or(MultipartError::InvalidPart(*number))?;
            parts.push((*number, part));
        }
        if let Some((number, part)) = parts[..parts.len() - 1]
            .iter()
            .find(|(_, part)| part.content.len() < MIN_PART_SIZE)
        {
            return Err(MultipartError::EntityTooSmall {
                part: *number,
                size: part.content.len(),
            });
        }
        let count = parts.len();
        let mut content = Content::default();
        let mut md5s = Md5::new();
        for (_, part) in &parts {
            md5s.update(part.md5);
            for chunk in part.content.chunks() {
                content.push(chunk.clone());
            }
        }
        let algorithm = upload.settings.checksum_algorithm.as_deref();
        let composite_sha256 = (algorithm == Some("SHA256"))
            .then(|| {
                let mut hash = Sha256::new();
                for (_, part) in &parts {
                    hash.update(part.sha256?);
                }
                Some(composite(&hash.finalize(), count))
            })
            .flatten();
        let composite_crc32 = (algorithm == Some("CRC32"))
            .then(|| {
                let mut hash = crc32fast::Hasher::new();
                for (_, part) in &parts {
                    hash.update(&part.crc32?.to_be_bytes());
                }
                Some(composite(&hash.finalize().to_be_bytes(), count))
            })
            .flatten();
        let object = Object {
            content,
            content_type: upload.settings.content_type.clone(),
            encryption: upload.settings.encryption.clone(),
            etag: format!("\"{}-{count}\"", hex::encode(md5s.finalize())),
            checksums: Checksums {
                sha256: composite_sha256,
                crc32: composite_crc32,
            },
            parts: count as u32,
            last_modified: SystemTime::now(),
        };
        let object = Arc::new(object);
        // The listed parts become the object; the parts not listed, and any object it replaces,
        // are let go.
        if let Some(upload) = inner.uploads.remove(upload_id) {
            inner.bytes -= upload.bytes();
        }
        if let Some(old) = inner.objects.insert(key(location), object.clone()) {
            inner.bytes -= old.content.len();
        }
        inner.bytes += object.content.len();
        Ok(object)
    }

    /// Aborts an upload: its parts are dropped, and nothing is stored.
    pub fn abort_upload(
        &self,
        location: &S3Location,
        upload_id: &str,
    ) -> Result<(), MultipartError> {
        let mut inner = self.lock();
        match inner.uploads.get(upload_id) {
            Some(upload) if upload.location == *location => {
                if let Some(upload) = inner.uploads.remove(upload_id) {
                    inner.bytes -= upload.bytes();
                }
                Ok(())
            }
            _ => Err(MultipartError::NoSuchUpload),
        }
    }

    /// How many multipart uploads are in progress.
    pub fn uploads_in_progress(&self) -> usize {
        self.lock().uploads.len()
    }
}

/// S3's composite checksum: the checksum of the parts' checksums, then `-<parts>`.
fn composite(digest: &[u8], parts: usize) -> String {
    format!("{}-{parts}", aws_smithy_types::base64::encode(digest))
}

/// `"<hex>"`, as S3 quotes ETags.
pub fn quoted_hex(digest: &[u8]) -> String {
    format!("\"{}\"", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location() -> S3Location {
        S3Location {
            bucket_name: "bucket".to_owned(),
            object_key: "pipeline/Out/1.zip".to_owned(),
        }
    }

    fn other(key: &str) -> S3Location {
        S3Location {
            bucket_name: "bucket".to_owned(),
            object_key: key.to_owned(),
        }
    }

    #[test]
    fn the_store_holds_no_more_bytes_than_its_limit_and_a_replacement_frees_the_old() {
        let objects = Objects::with_limits(StoreLimits {
            max_bytes: 10,
            ..StoreLimits::default()
        });
        objects
            .put(&other("a"), Object::new(vec![0; 6], "x"))
            .unwrap();
        assert!(
            objects
                .put(&other("b"), Object::new(vec![0; 6], "x"))
                .is_err_and(|full| full == StoreFull)
        );
        assert_eq!(objects.room(), 4);
        objects
            .put(&other("a"), Object::new(vec![0; 9], "x"))
            .expect("replacing a frees its bytes");
        let id = objects
            .create_upload(&other("c"), UploadSettings::default())
            .unwrap();
        assert_eq!(
            objects.upload_part(&other("c"), &id, 1, part(vec![1; 2])),
            Err(MultipartError::StoreFull)
        );
        objects.abort_upload(&other("c"), &id).unwrap();
        assert_eq!(objects.room(), 1);
    }

    #[test]
    fn uploads_in_progress_are_bounded_and_abandoned_ones_are_forgotten_with_their_parts() {
        let objects = Objects::with_limits(StoreLimits {
            max_bytes: 100,
            max_uploads: 1,
            upload_ttl: Duration::from_millis(20),
        });
        let first = objects
            .create_upload(&other("a"), UploadSettings::default())
            .unwrap();
        objects
            .upload_part(&other("a"), &first, 1, part(vec![1; 50]))
            .unwrap();
        assert_eq!(
            objects.create_upload(&other("b"), UploadSettings::default()),
            Err(MultipartError::TooManyUploads)
        );
        std::thread::sleep(Duration::from_millis(40));
        objects
            .create_upload(&other("b"), UploadSettings::default())
            .expect("the abandoned upload was forgotten");
        assert!(!objects.has_upload(&other("a"), &first));
        assert_eq!(objects.room(), 100, "with its parts");
    }

    fn part(bytes: Vec<u8>) -> Part {
        let sha256 = Sha256::digest(&bytes).into();
        Part {
            md5: Md5::digest(&bytes).into(),
            sha256: Some(sha256),
            crc32: Some(crc32fast::hash(&bytes)),
            content: Content::from(bytes),
        }
    }

    #[test]
    fn content_slices_across_chunks() {
        let mut content = Content::default();
        for chunk in [&b"abc"[..], b"", b"defg", b"h"] {
            content.push(Bytes::copy_from_slice(chunk));
        }
        assert_eq!(content.len(), 8);
        let joined = |chunks: Vec<Bytes>| chunks.concat();
        assert_eq!(joined(content.slice(0, 8)), b"abcdefgh");
        assert_eq!(joined(content.slice(2, 5)), b"cde");
        assert_eq!(joined(content.slice(7, 8)), b"h");
        assert_eq!(joined(content.slice(3, 7)), b"defg");
        assert!(content.slice(4, 4).is_empty());
    }

    #[test]
    fn a_multipart_upload_makes_one_object_with_s3s_etag() {
        let objects = Objects::default();
        let settings = UploadSettings {
            checksum_algorithm: Some("SHA256".to_owned()),
            ..Default::default()
        };
        let id = objects.create_upload(&location(), settings).unwrap();
        let first = vec![1u8; MIN_PART_SIZE as usize];
        let etag1 = objects
            .upload_part(&location(), &id, 1, part(first.clone()))
            .unwrap();
        let etag2 = objects
            .upload_part(&location(), &id, 2, part(vec![2u8]))
            .unwrap();
        let object = objects
            .complete_upload(&location(), &id, &[(1, etag1.clone()), (2, etag2)])
            .unwrap();
        assert_eq!(object.content.len(), MIN_PART_SIZE + 1);
        let mut md5s = Md5::new();
        md5s.update(Md5::digest(&first));
        md5s.update(Md5::digest([2u8]));
        assert_eq!(
            object.etag,
            format!("\"{}-2\"", hex::encode(md5s.finalize()))
        );
        assert!(object.checksums.sha256.as_deref().unwrap().ends_with("-2"));
        assert!(object.checksums.is_composite());
        assert_eq!(object.parts, 2);
        assert_eq!(objects.get(&location()).unwrap().etag, object.etag);
        assert_eq!(objects.uploads_in_progress(), 0);
        assert_eq!(
            objects
                .complete_upload(&location(), &id, &[(1, etag1)])
                .err(),
            Some(MultipartError::NoSuchUpload),
            "a completed upload is gone"
        );
    }

    #[test]
    fn parts_under_5_mib_but_the_last_are_entity_too_small() {
        let objects = Objects::default();
        let id = objects
            .create_upload(&location(), UploadSettings::default())
            .unwrap();
        let small = objects
            .upload_part(&location(), &id, 1, part(vec![0; 1024]))
            .unwrap();
        let last = objects
            .upload_part(&location(), &id, 2, part(vec![0; 10]))
            .unwrap();
        assert_eq!(
            objects
                .complete_upload(&location(), &id, &[(1, small.clone()), (2, last)])
                .err(),
            Some(MultipartError::EntityTooSmall {
                part: 1,
                size: 1024
            })
        );
        // A single small part is the last one: fine. The refused list left the upload open.
        let object = objects
            .complete_upload(&location(), &id, &[(1, small)])
            .unwrap();
        assert_eq!(object.content.len(), 1024);
        assert!(
            object.checksums.sha256.is_none(),
            "no checksum algorithm declared"
        );
    }

    #[test]
    fn listed_parts_must_exist_match_their_etags_and_ascend() {
        let objects = Objects::default();
        let id = objects
            .create_upload(&location(), UploadSettings::default())
            .unwrap();
        let etag = objects
            .upload_part(&location(), &id, 1, part(vec![7; 10]))
            .unwrap();
        let wrong_etag = quoted_hex(&[0; 16]);
        for (listed, expected) in [
            (vec![(2, etag.clone())], MultipartError::InvalidPart(2)),
            (vec![(1, wrong_etag)], MultipartError::InvalidPart(1)),
            (
                vec![(1, etag.clone()), (1, etag.clone())],
                MultipartError::InvalidPartOrder,
            ),
            (vec![], MultipartError::NoParts),
        ] {
            assert_eq!(
                objects.complete_upload(&location(), &id, &listed).err(),
                Some(expected)
            );
        }
        let other = S3Location {
            object_key: "elsewhere".to_owned(),
            ..location()
        };
        assert_eq!(
            objects
                .complete_upload(&other, &id, &[(1, etag.clone())])
                .err(),
            Some(MultipartError::NoSuchUpload),
            "an upload belongs to its key"
        );
        // The ETag may be given without its quotes.
        assert!(
            objects
                .complete_upload(&location(), &id, &[(1, etag.trim_matches('"').to_owned())])
                .is_ok()
        );
    }

    #[test]
    fn an_aborted_upload_leaves_nothing() {
        let objects = Objects::default();
        let id = objects
            .create_upload(&location(), UploadSettings::default())
            .unwrap();
        objects
            .upload_part(&location(), &id, 1, part(vec![1; 10]))
            .unwrap();
        objects.abort_upload(&location(), &id).unwrap();
        assert!(objects.get(&location()).is_none());
        assert_eq!(objects.uploads_in_progress(), 0);
        assert_eq!(
            objects.abort_upload(&location(), &id),
            Err(MultipartError::NoSuchUpload)
        );
        assert_eq!(
            objects
                .upload_part(&location(), &id, 2, part(vec![1]))
                .err(),
            Some(MultipartError::NoSuchUpload)
        );
    }
}
