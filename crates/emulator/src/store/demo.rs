//! The demo jobs' source artifact: a small real zip, as a source action would leave it.

use std::io::{Cursor, Write};

use zip::{CompressionMethod, ZipWriter, write::SimpleFileOptions};

/// The files of the demo source zip, with their contents.
pub fn demo_source_files(revision: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "README.md",
            format!("# demo-app\n\nThe demo pipeline's source at {revision}.\n"),
        ),
        (
            "buildspec.yml",
            "version: 0.2\nphases:\n  build:\n    commands:\n      - make build\n".to_owned(),
        ),
        (
            "src/main.rs",
            "fn main() {\n    println!(\"hello from demo-app\");\n}\n".to_owned(),
        ),
        ("REVISION", format!("{revision}\n")),
    ]
}

/// The demo source zip for `revision`: [`demo_source_files`], stored uncompressed.
pub fn demo_source_zip(revision: &str) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, content) in demo_source_files(revision) {
        zip.start_file(name, options)
            .and_then(|()| zip.write_all(content.as_bytes()).map_err(Into::into))
            .expect("writing to memory cannot fail");
    }
    zip.finish()
        .expect("writing to memory cannot fail")
        .into_inner()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_demo_zip_holds_the_demo_files() {
        let bytes = demo_source_zip("demo-revision-1");
        assert!(bytes.starts_with(b"PK\x03\x04"));
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 4);
        let mut readme = String::new();
        archive
            .by_name("README.md")
            .unwrap()
            .read_to_string(&mut readme)
            .unwrap();
        assert!(readme.contains("demo-revision-1"), "{readme}");
    }
}
