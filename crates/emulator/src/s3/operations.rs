//! The operations, once a request is authorised: objects read (whole, by range, or their head),
//! written, and uploaded in parts, against the engine's objects.

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use super::{
    MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_XML_BODY, RequestBody, S3Error, Store,
    answer::{Answer, AnswerBody},
    body::{Declared, Expected, Received, header_text, read_body},
    routing::param,
    xml,
};
use crate::store::{
    Checksums, Encryption, MAX_PART_NUMBER, Object, Part, UploadSettings, quoted_hex,
};
use codepipeline_job_port::domain::S3Location;

/// `x-amz-server-side-encryption` and its KMS key, checked as S3 checks them.
fn encryption(headers: &HeaderMap) -> Result<Encryption, S3Error> {
    let algorithm = header_text(headers, "x-amz-server-side-encryption");
    let kms_key_id = header_text(headers, "x-amz-server-side-encryption-aws-kms-key-id");
    if let Some(algorithm) = algorithm
        && !matches!(algorithm, "aws:kms" | "aws:kms:dsse" | "AES256")
    {
        return Err(S3Error::invalid_argument(
            "The encryption method specified is not supported",
            "x-amz-server-side-encryption",
            algorithm,
        ));
    }
    if kms_key_id.is_some() && !algorithm.is_some_and(|algorithm| algorithm.starts_with("aws:kms"))
    {
        return Err(S3Error::invalid_argument(
            "Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id",
            kms_key_id.unwrap_or_default(),
        ));
    }
    Ok(Encryption {
        algorithm: algorithm.map(str::to_owned),
        kms_key_id: kms_key_id.map(str::to_owned),
    })
}

/// One authorised request against the objects.
pub(super) struct Call<'a> {
    pub(super) store: &'a Store,
    pub(super) headers: &'a HeaderMap,
    pub(super) params: &'a [(String, String)],
    pub(super) location: S3Location,
    pub(super) declared: Declared,
}

impl Call<'_> {
    fn objects(&self) -> &crate::store::Objects {
        self.store.inner.emulator.objects()
    }

    /// GetObject (`body`) or HeadObject.
    pub(super) fn get(&self, body: bool) -> Result<Answer, S3Error> {
        let object = self
            .objects()
            .get(&self.location)
            .ok_or_else(|| S3Error::no_such_key(&self.location.object_key))?;
        let size = object.content.len();
        let range = match header_text(self.headers, "range") {
            Some(text) => parse_range(text, size)?,
            None => None,
        };
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("accept-ranges", "bytes");
        answer.header("etag", &object.etag);
        answer.header("last-modified", &http_date(object.last_modified));
        answer.header(
            "content-type",
            object
                .content_type
                .as_deref()
                .unwrap_or("binary/octet-stream"),
        );
        answer.encryption(&object.encryption);
        let (start, end) = range.unwrap_or((0, size));
        if let Some((start, end)) = range {
            answer.status = StatusCode::PARTIAL_CONTENT;
            answer.header(
                "content-range",
                &format!("bytes {start}-{}/{size}", end - 1),
            );
        }
        let checksum_mode = header_text(self.headers, "x-amz-checksum-mode")
            .is_some_and(|mode| mode.eq_ignore_ascii_case("ENABLED"));
        // A range has no checksum of its own: S3 sends the object's only with the whole object.
        if checksum_mode && range.is_none() {
            answer.checksums(&object.checksums);
        }
        if body {
            answer.body = AnswerBody::Object(object.content.slice(start, end), end - start);
        } else {
            answer.header("content-length", &(end - start).to_string());
        }
        Ok(answer)
    }

    pub(super) async fn put<B: RequestBody>(&self, body: &mut B) -> Result<Answer, S3Error> {
        let encryption = encryption(self.headers)?;
        let expected = Expected::from_headers(self.headers)?;
        let received = self
            .read_within_room(body, MAX_OBJECT_SIZE, &expected)
            .await?;
        received.check(self.declared, &expected)?;
        let object = Object {
            etag: quoted_hex(&received.md5),
            content: received.content,
            content_type: header_text(self.headers, "content-type").map(str::to_owned),
            encryption,
            checksums: sent_checksums(&expected),
            parts: 0,
            last_modified: SystemTime::now(),
        };
        let object = self
            .objects()
            .put(&self.location, object)
            .map_err(|_full| S3Error::store_full())?;
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("etag", &object.etag);
        answer.encryption(&object.encryption);
        answer.checksums(&object.checksums);
        Ok(answer)
    }

    /// Reads a body of at most `limit` bytes, and no more than the store has room for: a body
    /// the store could not keep is refused as it comes, not held whole first.
    async fn read_within_room<B: RequestBody>(
        &self,
        body: &mut B,
        limit: u64,
        expected: &Expected,
    ) -> Result<Received, S3Error> {
        let room = self.objects().room();
        if room >= limit {
            return self.read(body, limit, expected).await;
        }
        self.read(body, room, expected)
            .await
            .map_err(|error| match error.code {
                "EntityTooLarge" => S3Error::store_full(),
                _ => error,
            })
    }

    async fn read<B: RequestBody>(
        &self,
        body: &mut B,
        limit: u64,
        expected: &Expected,
    ) -> Result<Received, S3Error> {
        let sha256 = matches!(self.declared, Declared::Sha256(_)) || expected.sha256.is_some();
        read_body(body, self.headers, limit, sha256, expected.crc32.is_some()).await
    }

    fn upload_id(&self) -> &str {
        param(self.params, "uploadId").unwrap_or_default()
    }

    pub(super) fn create_upload(&self) -> Result<Answer, S3Error> {
        let encryption = encryption(self.headers)?;
        let checksum_algorithm = header_text(self.headers, "x-amz-checksum-algorithm")
            .map(|algorithm| {
                let algorithm = algorithm.to_ascii_uppercase();
                match algorithm.as_str() {
                    "CRC32" | "CRC32C" | "SHA1" | "SHA256" | "CRC64NVME" => Ok(algorithm),
                    _ => Err(S3Error::invalid_request(
                        "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]",
                    )),
                }
            })
            .transpose()?;
        let settings = UploadSettings {
            content_type: header_text(self.headers, "content-type").map(str::to_owned),
            encryption: encryption.clone(),
            checksum_algorithm: checksum_algorithm.clone(),
        };
        let upload_id = self
            .objects()
            .create_upload(&self.location, settings)
            .map_err(|error| S3Error::from_multipart(&error, ""))?;
        let mut answer = Answer::xml(xml::document(
            "InitiateMultipartUploadResult",
            &[
                ("Bucket", self.location.bucket_name.clone()),
                ("Key", self.location.object_key.clone()),
                ("UploadId", upload_id),
            ],
        ));
        answer.encryption(&encryption);
        if let Some(algorithm) = checksum_algorithm {
            answer.header("x-amz-checksum-algorithm", &algorithm);
        }
        Ok(answer)
    }

    pub(super) async fn upload_part<B: RequestBody>(
        &self,
        body: &mut B,
    ) -> Result<Answer, S3Error> {
        let number_text = param(self.params, "partNumber").unwrap_or_default();
        let number = number_text
            .parse::<u32>()
            .ok()
            .filter(|number| (1..=MAX_PART_NUMBER).contains(number))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                    "partNumber",
                    number_text,
                )
            })?;
        let upload_id = self.upload_id();
        if !self.objects().has_upload(&self.location, upload_id) {
            return Err(S3Error::no_such_upload(upload_id));
        }
        let expected = Expected::from_headers(self.headers)?;
        let received = self
            .read_within_room(body, MAX_PART_SIZE, &expected)
            .await?;
        received.check(self.declared, &expected)?;
        let part = Part {
            md5: received.md5,
            sha256: expected.sha256.as_ref().and(received.sha256),
            crc32: expected.crc32.as_ref().and(received.crc32),
            content: received.content,
        };
        let etag = self
            .objects()
            .upload_part(&self.location, upload_id, number, part)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        let mut answer = Answer::new(StatusCode::OK);
        answer.header("etag", &etag);
        answer.checksums(&sent_checksums(&expected));
        Ok(answer)
    }

    pub(super) async fn complete_upload<B: RequestBody>(
        &self,
        body: &mut B,
    ) -> Result<Answer, S3Error> {
        let upload_id = self.upload_id();
        if !self.objects().has_upload(&self.location, upload_id) {
            return Err(S3Error::no_such_upload(upload_id));
        }
        let received = read_body(body, self.headers, MAX_XML_BODY, true, false).await?;
        received.check(self.declared, &Expected::default())?;
        let text =
            String::from_utf8(received.content.to_vec()).map_err(|_| S3Error::malformed_xml())?;
        let listed = xml::complete_multipart_parts(&text)
            .map_err(|xml::Malformed| S3Error::malformed_xml())?;
        let object = self
            .objects()
            .complete_upload(&self.location, upload_id, &listed)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        let host = header_text(self.headers, "host").unwrap_or("localhost");
        let mut children = vec![
            (
                "Location",
                format!(
                    "http://{host}/{}/{}",
                    self.location.bucket_name, self.location.object_key
                ),
            ),
            ("Bucket", self.location.bucket_name.clone()),
            ("Key", self.location.object_key.clone()),
            ("ETag", object.etag.clone()),
        ];
        if let Some(sha256) = &object.checksums.sha256 {
            children.push(("ChecksumSHA256", sha256.clone()));
        }
        if let Some(crc32) = &object.checksums.crc32 {
            children.push(("ChecksumCRC32", crc32.clone()));
        }
        let mut answer = Answer::xml(xml::document("CompleteMultipartUploadResult", &children));
        answer.encryption(&object.encryption);
        Ok(answer)
    }

    pub(super) fn abort_upload(&self) -> Result<Answer, S3Error> {
        let upload_id = self.upload_id();
        self.objects()
            .abort_upload(&self.location, upload_id)
            .map_err(|error| S3Error::from_multipart(&error, upload_id))?;
        Ok(Answer::new(StatusCode::NO_CONTENT))
    }
}

/// The checksums a request sent (and that were verified), to record and echo.
fn sent_checksums(expected: &Expected) -> Checksums {
    Checksums {
        sha256: expected.sha256.as_ref().map(|(text, _)| text.clone()),
        crc32: expected.crc32.as_ref().map(|(text, _)| text.clone()),
    }
}

/// A `Range` header against an object of `size` bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n`
/// as `(start, end exclusive)`. A header S3 would ignore (another unit, several ranges, not a
/// range) is `None`: the whole object. A range that starts past the end is InvalidRange.
fn parse_range(text: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || S3Error::invalid_range(text, size);
    let parse = |n: &str| n.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => {
            let Some(n) = parse(last) else {
                return Ok(None);
            };
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            Ok(Some((size.saturating_sub(n), size)))
        }
        // bytes=a-: from a to the end.
        (false, true) => {
            let Some(start) = parse(first) else {
                return Ok(None);
            };
            if start >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((start, size)))
        }
        (false, false) => {
            let (Some(start), Some(last)) = (parse(first), parse(last)) else {
                return Ok(None);
            };
            if last < start {
                return Ok(None);
            }
            if start >= size {
                return Err(unsatisfiable());
            }
            Ok(Some((start, last.min(size - 1) + 1)))
        }
        (true, true) => Ok(None),
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), as `Last-Modified` carries it.
fn http_date(at: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_s3_reads_them() {
        let size = 10;
        for (text, expected) in [
            ("bytes=0-0", Some((0, 1))),
            ("bytes=2-4", Some((2, 5))),
            ("bytes=8-20", Some((8, 10))),
            ("bytes=7-", Some((7, 10))),
            ("bytes=-3", Some((7, 10))),
            ("bytes=-30", Some((0, 10))),
            // What S3 ignores: the whole object.
            ("bytes=5-2", None),
            ("bytes=1-2,4-5", None),
            ("items=1-2", None),
            ("bytes=x-", None),
            ("bytes=-", None),
        ] {
            assert_eq!(parse_range(text, size).ok(), Some(expected), "{text}");
        }
        for unsatisfiable in ["bytes=10-", "bytes=10-12", "bytes=-0"] {
            let error = parse_range(unsatisfiable, size).unwrap_err();
            assert_eq!(error.code, "InvalidRange", "{unsatisfiable}");
        }
        assert!(
            parse_range("bytes=0-", 0).is_err(),
            "an empty object has no byte 0"
        );
    }
}
