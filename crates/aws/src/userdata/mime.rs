//! MIME multi-part user data (what cloud-init and nodeadm read): splitting the user's document
//! into parts and writing ours.

use super::UserDataError;

/// One part: its headers (as written, `Content-Type` among them) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Header lines without the line end.
    pub headers: Vec<String>,
    /// The body, each line ending in `\n`.
    pub body: String,
}

impl Part {
    /// A part with just a `Content-Type`.
    pub fn new(content_type: &str, body: &str) -> Self {
        Self {
            headers: vec![format!("Content-Type: {content_type}")],
            body: body.to_owned(),
        }
    }
}

/// Whether the user data is a MIME document (its first header is `MIME-Version` or a
/// multipart `Content-Type`).
pub fn is_mime(data: &str) -> bool {
    let first = data.trim_start().lines().next().unwrap_or_default();
    let lower = first.to_ascii_lowercase();
    lower.starts_with("mime-version:") || lower.starts_with("content-type: multipart/")
}

/// The user's user data as parts: a MIME document's parts, or the whole text as one part of
/// `default_type` (chosen by the caller's family).
pub fn user_parts(data: Option<&str>, default_type: &str) -> Result<Vec<Part>, UserDataError> {
    let Some(data) = data.filter(|d| !d.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    if !is_mime(data) {
        return Ok(vec![Part::new(default_type, &with_newline(data))]);
    }
    let lines: Vec<&str> = data.lines().map(|l| l.trim_end_matches('\r')).collect();
    let header_end = lines
        .iter()
        .position(|l| l.is_empty())
        .ok_or_else(|| UserDataError::Mime("no blank line after the headers".into()))?;
    let boundary = lines[..header_end]
        .iter()
        .find_map(|l| boundary_of(l))
        .ok_or_else(|| UserDataError::Mime("no boundary in the Content-Type header".into()))?;
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in &lines[header_end + 1..] {
        if *line == close {
            break;
        }
        if *line == open {
            if let Some(p) = current.take() {
                parts.push(part(&p)?);
            }
            current = Some(Vec::new());
        } else if let Some(p) = current.as_mut() {
            p.push(line);
        }
        // Lines before the first boundary are the preamble, which readers ignore.
    }
    if let Some(p) = current {
        parts.push(part(&p)?);
    }
    Ok(parts)
}

fn part(lines: &[&str]) -> Result<Part, UserDataError> {
    let end = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    let headers: Vec<String> = lines[..end].iter().map(|l| (*l).to_owned()).collect();
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-type:"))
    {
        return Err(UserDataError::Mime("a part has no Content-Type".into()));
    }
    let mut body = String::new();
    for l in lines.iter().skip(end + 1) {
        body.push_str(l);
        body.push('\n');
    }
    Ok(Part { headers, body })
}

/// The `boundary` parameter of a `Content-Type` header line.
fn boundary_of(header: &str) -> Option<String> {
    let (name, value) = header.split_once(':')?;
    if !name.trim().eq_ignore_ascii_case("content-type") {
        return None;
    }
    value.split(';').find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// A MIME multi-part document of `parts`, with upstream's boundary `//` unless a body
/// contains it (then a longer one no body contains).
pub fn write(parts: &[Part]) -> String {
    let mut boundary = "//".to_owned();
    while parts
        .iter()
        .any(|p| p.body.contains(&format!("--{boundary}")))
    {
        boundary.push('/');
    }
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n\n");
    for p in parts {
        out.push_str(&format!("--{boundary}\n"));
        for h in &p.headers {
            out.push_str(h);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&with_newline(&p.body));
    }
    out.push_str(&format!("--{boundary}--\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_one_part_and_mime_keeps_its_parts() -> Result<(), UserDataError> {
        assert!(user_parts(None, "text/x-shellscript")?.is_empty());
        let one = user_parts(Some("echo hi"), "text/x-shellscript")?;
        assert_eq!(one, [Part::new("text/x-shellscript", "echo hi\n")]);
        let doc = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUND\"\r\n\r\n\
                   preamble\r\n--BOUND\r\nContent-Type: text/x-shellscript\r\n\r\necho a\r\n\
                   --BOUND\r\nContent-Type: application/node.eks.aws\r\n\r\nkind: NodeConfig\r\n\
                   --BOUND--\r\n";
        let parts = user_parts(Some(doc), "ignored")?;
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, "echo a\n");
        assert_eq!(parts[1].headers, ["Content-Type: application/node.eks.aws"]);
        assert!(matches!(
            user_parts(Some("MIME-Version: 1.0\n\nx"), "t"),
            Err(UserDataError::Mime(_))
        ));
        Ok(())
    }

    #[test]
    fn written_documents_read_back_and_avoid_boundaries_in_bodies() -> Result<(), UserDataError> {
        let parts = vec![
            Part::new("text/x-shellscript", "echo --//\n"),
            Part::new("application/node.eks.aws", "kind: NodeConfig\n"),
        ];
        let doc = write(&parts);
        assert!(doc.contains("boundary=\"///\""), "{doc}");
        assert_eq!(user_parts(Some(&doc), "x")?, parts);
        Ok(())
    }
}
