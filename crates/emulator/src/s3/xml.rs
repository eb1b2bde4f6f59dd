//! The little XML the store speaks: answers written element by element, and the one request
//! body it reads, CompleteMultipartUpload's list of parts.

/// S3's namespace, on every answer's root element.
pub const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The XML declaration every answer starts with.
pub const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `text` with the five XML specials escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An answer document: `<root xmlns=...>` around `children`, each `(name, text)`.
pub fn document(root: &str, children: &[(&str, String)]) -> String {
    let mut out = format!("{DECLARATION}\n<{root} xmlns=\"{NAMESPACE}\">");
    for (name, text) in children {
        out.push_str(&format!("<{name}>{}</{name}>", escape(text)));
    }
    out.push_str(&format!("</{root}>"));
    out
}

/// A body that is not the XML S3 expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed;

/// The `(PartNumber, ETag)` pairs of a `<CompleteMultipartUpload>` body, in the order listed.
/// Other elements of a part (its checksums) are read past.
pub fn complete_multipart_parts(body: &str) -> Result<Vec<(u32, String)>, Malformed> {
    let body = skip_prolog(body.trim_start());
    let inner = element_content(body, "CompleteMultipartUpload").ok_or(Malformed)?;
    let mut parts = Vec::new();
    let mut rest = inner;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (part, after) = next_element(rest, "Part").ok_or(Malformed)?;
        let number = child_text(part, "PartNumber")
            .and_then(|number| number.trim().parse::<u32>().ok())
            .ok_or(Malformed)?;
        let etag = child_text(part, "ETag").ok_or(Malformed)?;
        parts.push((number, unescape(etag.trim())?));
        rest = after;
    }
    Ok(parts)
}

/// Skips `<?xml ...?>`, if there.
fn skip_prolog(text: &str) -> &str {
    match text.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or("", |(_, after)| after.trim_start()),
        None => text,
    }
}

/// The content of the document's root element `name` (attributes allowed), nothing after it.
fn element_content<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let (content, rest) = next_element(text, name)?;
    rest.trim().is_empty().then_some(content)
}

/// The element `name` that `text` starts with: its content and what follows it.
fn next_element<'a>(text: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let after_name = text.strip_prefix('<')?.strip_prefix(name)?;
    let open_end = after_name.find('>')?;
    let attributes = &after_name[..open_end];
    if !(attributes.is_empty() || attributes.starts_with(char::is_whitespace)) {
        return None;
    }
    let body = &after_name[open_end + 1..];
    let close = format!("</{name}>");
    let end = body.find(&close)?;
    Some((&body[..end], &body[end + close.len()..]))
}

/// The text of the first child element `name` of an element's content.
fn child_text<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = content.find(&open)? + open.len();
    let end = content[start..].find(&format!("</{name}>"))?;
    Some(&content[start..start + end])
}

/// `text` with its entity and character references resolved.
fn unescape(text: &str) -> Result<String, Malformed> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(';').ok_or(Malformed)?;
        let entity = &after[..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(decimal) = entity.strip_prefix('#') {
                    decimal.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or(Malformed)?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_complete_multipart_body_is_read() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber></Part><Part><ChecksumCRC32>AAAA</ChecksumCRC32><ETag>"def"</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            complete_multipart_parts(body),
            Ok(vec![(1, "\"abc\"".to_owned()), (2, "\"def\"".to_owned())])
        );
        assert_eq!(
            complete_multipart_parts("<CompleteMultipartUpload></CompleteMultipartUpload>"),
            Ok(vec![])
        );
    }

    #[test]
    fn other_bodies_are_malformed() {
        for body in [
            "",
            "not xml",
            "<CompleteMultipartUpload>",
            "<CompleteMultipartUploadX></CompleteMultipartUploadX>",
            "<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Other/></CompleteMultipartUpload>",
            "<CompleteMultipartUpload></CompleteMultipartUpload>trailing",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&bogus;</ETag></Part></CompleteMultipartUpload>",
        ] {
            assert_eq!(complete_multipart_parts(body), Err(Malformed), "{body}");
        }
    }

    #[test]
    fn answers_are_escaped() {
        assert_eq!(
            document("R", &[("Key", "a<b&\"c\"".to_owned())]),
            format!(
                "{DECLARATION}\n<R xmlns=\"{NAMESPACE}\"><Key>a&lt;b&amp;&quot;c&quot;</Key></R>"
            )
        );
    }
}
