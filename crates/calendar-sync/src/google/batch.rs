//! Google's batch wire format (`POST /batch/calendar/v3`): one `multipart/mixed` request of
//! `application/http` parts, one `multipart/mixed` answer with one HTTP response per part.
//!
//! google-calendar3 has no batch support and reqwest does not build `multipart/mixed`, so the
//! codec is ours. The decoder reads bytes from the network: it never panics, copies at most
//! the input's own bytes (plus a fixed size per part, parts capped by [`Limits`]), and is
//! linear in the input (each byte is looked at a bounded number of times).

use std::fmt::Write as _;

use rand::Rng as _;
use rand::distr::Alphanumeric;

/// Google's limit: "You're limited to 1000 calls in a single batch request".
pub(crate) const MAX_CALLS: usize = 1000;

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;

/// Why a batch could not be encoded or its answer decoded. Messages never quote the body
/// (it is whatever the network sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BatchError {
    /// The answer's Content-Type is not `multipart/mixed` (an HTML error page, JSON...).
    #[error("batch answer is not multipart/mixed")]
    NotMultipart,
    /// `multipart/mixed` without a `boundary` parameter.
    #[error("batch answer has no multipart boundary")]
    MissingBoundary,
    /// A boundary that is empty, too long or holds characters RFC 2046 forbids.
    #[error("invalid multipart boundary")]
    InvalidBoundary,
    /// More parts than [`Limits::max_parts`] (or more calls than Google accepts).
    #[error("batch has more than {0} parts")]
    TooManyParts(usize),
    /// One part of the answer is unreadable (0-based position among the parts).
    #[error("batch answer part {part}: {what}")]
    MalformedPart {
        /// Position of the part.
        part: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A request that cannot be put in a batch (CR/LF in a header, an Authorization header...).
    #[error("cannot batch request {part}: {what}")]
    BadRequest {
        /// Position of the request.
        part: usize,
        /// What is wrong with it.
        what: &'static str,
    },
}

/// Bounds on what [`decode`] accepts, so a hostile answer cannot make it allocate much more
/// than its own size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most parts in one answer (an answer holds one part per call sent).
    pub(crate) max_parts: usize,
    /// Most header lines per header block (the part's MIME headers, then its HTTP headers).
    pub(crate) max_header_lines: usize,
    /// Longest header or status line, in bytes.
    pub(crate) max_header_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parts: MAX_CALLS,
            max_header_lines: 64,
            max_header_line_len: 8 * 1024,
        }
    }
}

/// One call inside a batch: an HTTP request with a path only ("full URLs are not allowed").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InnerRequest {
    /// `POST`, `PUT`, `DELETE`...
    pub(crate) method: &'static str,
    /// Absolute path (and query), already percent-encoded.
    pub(crate) path: String,
    /// `Content-ID` without the angle brackets; `None` = `item-{index}` (0-based).
    pub(crate) content_id: Option<String>,
    /// Extra headers (e.g. `If-Match`). The outer request carries Authorization.
    pub(crate) headers: Vec<(String, String)>,
    /// JSON body, sent with `Content-Type: application/json`.
    pub(crate) json: Option<Vec<u8>>,
}

impl InnerRequest {
    /// events.insert: `POST {base}calendars/{calendar}/events`; `base_path` is the API's path,
    /// e.g. `/calendar/v3/`.
    pub(crate) fn insert(base_path: &str, calendar_id: &str, json: Vec<u8>) -> Self {
        let mut path = events_path(base_path, calendar_id);
        path.truncate(path.len() - 1); // no trailing '/'
        Self::new("POST", path, Some(json))
    }

    /// events.update: `PUT {base}calendars/{calendar}/events/{event}`.
    pub(crate) fn update(
        base_path: &str,
        calendar_id: &str,
        event_id: &str,
        json: Vec<u8>,
    ) -> Self {
        let mut path = events_path(base_path, calendar_id);
        push_segment(&mut path, event_id);
        Self::new("PUT", path, Some(json))
    }

    /// events.delete: `DELETE {base}calendars/{calendar}/events/{event}`.
    pub(crate) fn delete(base_path: &str, calendar_id: &str, event_id: &str) -> Self {
        let mut path = events_path(base_path, calendar_id);
        push_segment(&mut path, event_id);
        Self::new("DELETE", path, None)
    }

    fn new(method: &'static str, path: String, json: Option<Vec<u8>>) -> Self {
        InnerRequest {
            method,
            path,
            content_id: None,
            headers: Vec::new(),
            json,
        }
    }

    /// Sets the `Content-ID` (without `<>`); the adapter keeps the default `item-N`.
    #[cfg(test)]
    pub(crate) fn with_content_id(mut self, id: impl Into<String>) -> Self {
        self.content_id = Some(id.into());
        self
    }

    /// Adds a header to the inner request.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// `{base}calendars/{calendar}/events/`, the calendar id percent-encoded as one segment.
fn events_path(base_path: &str, calendar_id: &str) -> String {
    let mut p = String::with_capacity(base_path.len() + calendar_id.len() + 20);
    p.push_str(base_path);
    if !p.ends_with('/') {
        p.push('/');
    }
    p.push_str("calendars/");
    push_segment(&mut p, calendar_id);
    p.push_str("/events/");
    p
}

/// Percent-encodes everything but RFC 3986 unreserved characters: a `/`, `?` or `#` in an id
/// stays inside its segment.
fn push_segment(out: &mut String, segment: &str) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// An encoded batch: the outer request's Content-Type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// `multipart/mixed; boundary=...` (no trailing `;`: Google answers 400 to that).
    pub(crate) content_type: String,
    /// The multipart body, CRLF line endings.
    pub(crate) body: Vec<u8>,
}

/// Encodes `parts` with a random boundary that occurs nowhere in them.
pub(crate) fn encode(parts: &[InnerRequest]) -> Result<Encoded, BatchError> {
    let mut rng = rand::rng();
    loop {
        let random: String = (&mut rng)
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        match encode_with_boundary(parts, &format!("batch_{random}")) {
            // 62^32 possibilities: a collision means the content is built to collide; try again.
            Err(BatchError::InvalidBoundary) => {}
            other => return other,
        }
    }
}

/// Encodes `parts` with this boundary; [`BatchError::InvalidBoundary`] if it is not a valid
/// RFC 2046 boundary or occurs in a part (the parser would cut the part there).
pub(crate) fn encode_with_boundary(
    parts: &[InnerRequest],
    boundary: &str,
) -> Result<Encoded, BatchError> {
    if parts.len() > MAX_CALLS {
        return Err(BatchError::TooManyParts(MAX_CALLS));
    }
    if !valid_boundary(boundary) {
        return Err(BatchError::InvalidBoundary);
    }
    let mut body = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let bad = |what| BatchError::BadRequest { part: i, what };
        let id = p.content_id.clone().unwrap_or_else(|| format!("item-{i}"));
        if !clean(&id) || id.contains(['<', '>']) {
            return Err(bad("bad Content-ID"));
        }
        if !clean(&p.path) || !p.path.starts_with('/') || p.path.contains(' ') {
            return Err(bad("path must be absolute, without spaces or line breaks"));
        }
        let _ = write!(
            Text(&mut body),
            "--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{id}>\r\n\r\n{} {} HTTP/1.1\r\n",
            p.method,
            p.path
        );
        for (name, value) in &p.headers {
            if name.eq_ignore_ascii_case("authorization") {
                return Err(bad("Authorization belongs on the outer request"));
            }
            if !clean(name) || !clean(value) || name.is_empty() || name.contains(':') {
                return Err(bad("bad header"));
            }
            let _ = write!(Text(&mut body), "{name}: {value}\r\n");
        }
        if let Some(json) = &p.json {
            let _ = write!(
                Text(&mut body),
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                json.len()
            );
            body.extend_from_slice(json);
        } else {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
    }
    let _ = write!(Text(&mut body), "--{boundary}--\r\n");
    // Every part is written; the boundary must now occur only at our delimiters.
    let delimiters = parts.len() + 1;
    if count(&body, format!("--{boundary}").as_bytes()) != delimiters {
        return Err(BatchError::InvalidBoundary);
    }
    // A boundary with tspecials (space, `(`, `?`...) must be quoted in the header.
    let content_type = if boundary
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"'+_-.".contains(&c))
    {
        format!("multipart/mixed; boundary={boundary}")
    } else {
        format!("multipart/mixed; boundary=\"{boundary}\"")
    };
    Ok(Encoded { content_type, body })
}

/// `write!` into a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn clean(s: &str) -> bool {
    !s.contains(['\r', '\n'])
}

/// Non-overlapping occurrences of `needle` (linear: `needle` is at most 72 bytes).
fn count(hay: &[u8], needle: &[u8]) -> usize {
    let (mut n, mut i) = (0, 0);
    while let Some(rest) = hay.get(i..) {
        match rest.windows(needle.len()).position(|w| w == needle) {
            Some(p) => {
                n += 1;
                i += p + needle.len();
            }
            None => break,
        }
    }
    n
}

/// RFC 2046 `bchars`, 1 to 70 of them, not ending in a space.
fn valid_boundary(b: &str) -> bool {
    (1..=MAX_BOUNDARY_LEN).contains(&b.len())
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

/// One part of a batch answer: the response to one inner call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InnerResponse {
    /// The part's `Content-ID` without `<>` and the `response-` prefix Google adds, so it
    /// equals the request's (`item-3`); `None` if the part has none.
    pub(crate) content_id: Option<String>,
    /// The inner HTTP status.
    pub(crate) status: u16,
    /// The inner HTTP headers, in order, names as sent.
    pub(crate) headers: Headers,
    /// The inner body (up to the next delimiter; Content-Length is not trusted).
    pub(crate) body: Vec<u8>,
}

impl InnerResponse {
    /// The first header with this name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The position `N` of a default `item-N` Content-ID.
    pub(crate) fn item_index(&self) -> Option<usize> {
        self.content_id
            .as_deref()?
            .strip_prefix("item-")?
            .parse()
            .ok()
    }
}

/// A decoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The parts fully received, in order.
    pub(crate) parts: Vec<InnerResponse>,
    /// No closing delimiter: the answer was cut. Calls without a part here got no reply and
    /// must be retried as lost replies.
    pub(crate) truncated: bool,
}

/// Decodes a batch answer given its `Content-Type` header and body.
pub(crate) fn decode(
    content_type: &str,
    body: &[u8],
    limits: &Limits,
) -> Result<Decoded, BatchError> {
    let boundary = boundary_of(content_type)?;
    let mut parts = Vec::new();
    // Where the current part's content begins (just after its opening delimiter line).
    let mut part_start: Option<usize> = None;
    let mut start = 0;
    while start < body.len() {
        let end = memchr_nl(body, start);
        let next = (end + 1).min(body.len());
        let found = delimiter(&body[start..end], boundary.as_bytes());
        // An opening delimiter needs its line break: the answer may be cut inside the line.
        if let Some(close) = found.filter(|&close| close || end < body.len()) {
            if let Some(s) = part_start {
                if parts.len() >= limits.max_parts {
                    return Err(BatchError::TooManyParts(limits.max_parts));
                }
                // The line break before a delimiter belongs to the delimiter.
                let mut e = start;
                if e > s && body[e - 1] == b'\n' {
                    e -= 1;
                    if e > s && body[e - 1] == b'\r' {
                        e -= 1;
                    }
                }
                parts.push(parse_part(&body[s..e], parts.len(), limits)?);
            }
            if close {
                return Ok(Decoded {
                    parts,
                    truncated: false,
                });
            }
            part_start = Some(next);
        }
        start = next;
    }
    Ok(Decoded {
        parts,
        truncated: true,
    })
}

/// Index of the next `\n` at or after `from`, or the end.
fn memchr_nl(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

/// `Some(false)` for `--boundary`, `Some(true)` for `--boundary--` (each with optional
/// trailing whitespace and CR), `None` for any other line.
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    rest.iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\r'))
        .then_some(close)
}

/// The `boundary` parameter of a `multipart/mixed` Content-Type, quoted or not.
fn boundary_of(content_type: &str) -> Result<String, BatchError> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("multipart/mixed") {
        return Err(BatchError::NotMultipart);
    }
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let b = match value.strip_prefix('"') {
            // quoted-string: up to the closing quote, `\x` stands for `x`.
            Some(q) => {
                let mut out = String::new();
                let mut chars = q.chars();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => out.extend(chars.next()),
                        Some(c) => out.push(c),
                        None => return Err(BatchError::InvalidBoundary),
                    }
                }
                out
            }
            None => value.to_string(),
        };
        return if valid_boundary(&b) {
            Ok(b)
        } else {
            Err(BatchError::InvalidBoundary)
        };
    }
    Err(BatchError::MissingBoundary)
}

/// One part: optional MIME headers (Content-Type `application/http`, Content-ID), a blank
/// line, then an HTTP response.
fn parse_part(part: &[u8], index: usize, limits: &Limits) -> Result<InnerResponse, BatchError> {
    let bad = |what| BatchError::MalformedPart { part: index, what };
    let mut pos = skip_blank_lines(part, 0);
    let mut content_id = None;
    // Lenient: a part may start with the status line directly.
    if !part[pos..].starts_with(b"HTTP/") {
        let (mime, after) = headers(part, pos, limits).map_err(bad)?;
        for (name, value) in &mime {
            if name.eq_ignore_ascii_case("content-type") {
                let t = value.split(';').next().unwrap_or_default().trim();
                if !t.eq_ignore_ascii_case("application/http") {
                    return Err(bad("not application/http"));
                }
            } else if name.eq_ignore_ascii_case("content-id") {
                let v = value.trim();
                let v = v.strip_prefix('<').unwrap_or(v);
                let v = v.strip_suffix('>').unwrap_or(v);
                content_id = Some(v.strip_prefix("response-").unwrap_or(v).to_string());
            }
        }
        pos = skip_blank_lines(part, after);
    }
    let end = memchr_nl(part, pos);
    let line = trim_cr(&part[pos..end]);
    if line.len() > limits.max_header_line_len {
        return Err(bad("status line too long"));
    }
    let status = status_code(line).ok_or_else(|| bad("no HTTP status line"))?;
    let (headers, body_start) = headers(part, (end + 1).min(part.len()), limits).map_err(bad)?;
    Ok(InnerResponse {
        content_id,
        status,
        headers,
        body: part[body_start..].to_vec(),
    })
}

fn skip_blank_lines(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() {
        let end = memchr_nl(b, pos);
        if !trim_cr(&b[pos..end]).iter().all(u8::is_ascii_whitespace) || end == b.len() {
            break;
        }
        pos = end + 1;
    }
    pos
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/1.1 200 OK` (reason optional) -> 200.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// Header lines as (name, value), in order.
pub(crate) type Headers = Vec<(String, String)>;

/// A header block from `pos` to its blank line (or the end). Returns the headers and the
/// position after the blank line. Folded lines join the previous header; lines without a
/// colon are skipped (Google's own guide prints `Content-Type application/json`).
fn headers(b: &[u8], mut pos: usize, limits: &Limits) -> Result<(Headers, usize), &'static str> {
    let mut out: Headers = Vec::new();
    let mut lines = 0;
    while pos < b.len() {
        let end = memchr_nl(b, pos);
        let line = trim_cr(&b[pos..end]);
        pos = (end + 1).min(b.len());
        if line.is_empty() {
            break;
        }
        lines += 1;
        if lines > limits.max_header_lines {
            return Err("too many header lines");
        }
        if line.len() > limits.max_header_line_len {
            return Err("header line too long");
        }
        let line = std::str::from_utf8(line).map_err(|_| "header not UTF-8")?;
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains([' ', '\t']) {
            continue;
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Ok((out, pos))
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
