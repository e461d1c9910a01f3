//! The upstream HTTP/1.1 codec, for the one exchange the gateway makes: a `POST` whose body is
//! in memory, answered by a response that is read whole.
//!
//! It replaces hyper's client connection on this leg because that one is built for every
//! shape of request. hyper encodes the request from a `Request`, runs a dispatcher state machine
//! and streams the body through `http_body` frames. Here the request head is written straight
//! from the header map into a buffer that the connection keeps, together with the body when it
//! is small: one write, and no allocation once the buffer has grown. The response head is
//! parsed with `httparse` (the parser hyper uses) in one pass. Header values are slices of the
//! read buffer, as hyper's are, and a `Content-Length` body is a slice of it too.
//!
//! Framing follows RFC 9112 §6.3 for responses: 1xx informational heads are skipped (a `101`
//! is returned and `check_status` turns it into a protocol error). `204` and `304` have no body.
//! `Transfer-Encoding` ending in `chunked` is decoded, with chunk extensions and trailers
//! dropped. Any other `Transfer-Encoding`, or neither header, reads until the peer closes.
//! Several `Content-Length` values that disagree, or one that is not a number, are a protocol
//! error (response splitting). A connection goes back to the pool only when the response said
//! HTTP/1.1 without `Connection: close`, its length was known, and nothing followed it.
//!
//! Sizes are bounded: the head at [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields, the body at
//! the caller's limit, checked against `Content-Length` before anything is read. Time is bounded
//! by the caller (`upstream.timeout` over the whole exchange).

use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header, response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest response head accepted, status line and fields (eTelecom's are a few hundred
/// bytes).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may carry (hyper's default).
pub(super) const MAX_HEADERS: usize = 100;
/// The read buffer's size when it has to grow, and the room below which it does. Responses take
/// slices of it, so one buffer serves many small responses before a new one is allocated.
const READ_CHUNK: usize = 8 * 1024;
const READ_ROOM: usize = 2 * 1024;
/// Bodies up to this size are copied behind the head and sent in the same write.
const INLINE_BODY: usize = 16 * 1024;
/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange failed. `Write` means the request did not get through whole, so the peer
/// cannot have acted on it.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error("sending the request failed")]
    Write(#[source] io::Error),
    #[error("reading the response failed")]
    Read(#[source] io::Error),
    #[error("the connection closed before the response was complete")]
    Closed,
    #[error("invalid HTTP/1.1 response: {0}")]
    Invalid(&'static str),
    #[error("the response body is larger than the limit")]
    TooLarge,
}

/// A whole response, and whether its connection can carry the next request.
pub(super) struct Response {
    pub(super) head: response::Parts,
    pub(super) body: Bytes,
    pub(super) reusable: bool,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One HTTP/1.1 connection: the stream and its two buffers, kept between exchanges.
pub(super) struct Conn<T> {
    io: T,
    read: BytesMut,
    write: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    pub(super) fn new(io: T) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    pub(super) fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Whether bytes arrived that no request asked for (such a connection is not reused).
    pub(super) fn has_unread(&self) -> bool {
        !self.read.is_empty()
    }

    /// Writes `POST <path> HTTP/1.1`, the headers as they are (names are lower case, values
    /// were validated when they were built: neither can hold CR or LF), `content-length`, and
    /// the body.
    pub(super) async fn send(
        &mut self,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), Error> {
        encode_head(&mut self.write, path, headers, body.len());
        let inline = body.len() <= INLINE_BODY;
        if inline {
            self.write.extend_from_slice(body);
        }
        let sent = async {
            self.io.write_all(&self.write).await?;
            if !inline {
                self.io.write_all(body).await?;
            }
            self.io.flush().await
        };
        sent.await.map_err(Error::Write)
    }

    /// Reads the response to the request just sent, its body at most `limit` bytes.
    pub(super) async fn receive(&mut self, limit: usize) -> Result<Response, Error> {
        let head = loop {
            if let Some(head) = parse_head(&mut self.read)? {
                if head.parts.status.is_informational()
                    && head.parts.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                break head;
            }
            if self.read.len() >= MAX_HEAD {
                return Err(Error::Invalid("response head too large"));
            }
            if self.fill().await? == 0 {
                return Err(Error::Closed);
            }
        };
        let body = match head.framing {
            Framing::Empty => Bytes::new(),
            Framing::Length(len) => self.body_of_length(len, limit).await?,
            Framing::Chunked => self.chunked_body(limit).await?,
            Framing::UntilClose => self.body_until_close(limit).await?,
        };
        let reusable = head.keep_alive
            && head.framing != Framing::UntilClose
            && head.parts.status != StatusCode::SWITCHING_PROTOCOLS
            && self.read.is_empty();
        Ok(Response {
            head: head.parts,
            body,
            reusable,
        })
    }

    /// Reads more into the read buffer; `Ok(0)` is the end of the stream.
    async fn fill(&mut self) -> Result<usize, Error> {
        if self.read.capacity() - self.read.len() < READ_ROOM {
            self.read.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.read).await.map_err(Error::Read)
    }

    async fn body_of_length(&mut self, len: u64, limit: usize) -> Result<Bytes, Error> {
        let len = usize::try_from(len).map_err(|_| Error::TooLarge)?;
        if len > limit {
            return Err(Error::TooLarge);
        }
        while self.read.len() < len {
            self.read.reserve(len - self.read.len());
            if self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(Error::Read)?
                == 0
            {
                return Err(Error::Closed);
            }
        }
        Ok(self.read.split_to(len).freeze())
    }

    async fn body_until_close(&mut self, limit: usize) -> Result<Bytes, Error> {
        loop {
            if self.read.len() > limit {
                return Err(Error::TooLarge);
            }
            if self.fill().await? == 0 {
                return Ok(self.read.split().freeze());
            }
        }
    }

    async fn chunked_body(&mut self, limit: usize) -> Result<Bytes, Error> {
        let mut body = BytesMut::new();
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.read.len() < MAX_CHUNK_LINE => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(Error::Invalid("chunk size line too long"));
                    }
                    Err(_) => return Err(Error::Invalid("bad chunk size")),
                }
                self.more().await?;
            };
            if size == 0 {
                self.read.advance(line);
                return self.trailers().await.map(|()| body.freeze());
            }
            let size = usize::try_from(size).map_err(|_| Error::TooLarge)?;
            if size > limit.saturating_sub(body.len()) {
                return Err(Error::TooLarge);
            }
            let end = line + size + 2;
            while self.read.len() < end {
                self.more().await?;
            }
            if &self.read[line + size..end] != b"\r\n" {
                return Err(Error::Invalid("chunk not followed by CRLF"));
            }
            body.extend_from_slice(&self.read[line..line + size]);
            self.read.advance(end);
        }
    }

    /// Skips the trailer section after the last chunk, up to and with its empty line.
    async fn trailers(&mut self) -> Result<(), Error> {
        loop {
            if self.read.starts_with(b"\r\n") {
                self.read.advance(2);
                return Ok(());
            }
            if let Some(at) = find(&self.read, b"\r\n\r\n") {
                self.read.advance(at + 4);
                return Ok(());
            }
            if self.read.len() >= MAX_HEAD {
                return Err(Error::Invalid("trailers too large"));
            }
            self.more().await?;
        }
    }

    /// Reads more where the message is not complete yet: the end of the stream is an error.
    async fn more(&mut self) -> Result<(), Error> {
        match self.fill().await? {
            0 => Err(Error::Closed),
            _ => Ok(()),
        }
    }
}

/// The request head into `out` (cleared first).
fn encode_head(out: &mut Vec<u8>, path: &str, headers: &HeaderMap, body_len: usize) {
    out.clear();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A parsed response head.
struct Head {
    parts: response::Parts,
    framing: Framing,
    keep_alive: bool,
}

/// Where a field's name and value lie in the head (offsets: the head is under [`MAX_HEAD`]).
#[derive(Clone, Copy, Default)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Heads with up to this many fields keep their offsets on the stack.
const INLINE_FIELDS: usize = 24;

/// Parses a complete head off the front of `buf`, or `None` while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    // httparse fills uninitialised slots: nothing is zeroed for 100 fields on every response.
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        &buf[..buf.len().min(MAX_HEAD)],
        &mut raw,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many header fields"));
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let (code, minor, count) = (resp.code, resp.version, resp.headers.len());
    let mut inline = [Field::default(); INLINE_FIELDS];
    let mut spilled = Vec::new();
    let fields: &mut [Field] = if count <= INLINE_FIELDS {
        &mut inline[..count]
    } else {
        spilled.resize(count, Field::default());
        &mut spilled
    };
    let base = buf.as_ptr() as usize;
    // Both slices point into `buf`, whose first `MAX_HEAD` bytes were parsed: their offsets
    // (their addresses less its own) fit in a `u32`.
    let at = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    for (f, h) in fields.iter_mut().zip(resp.headers.iter()) {
        f.name = at(h.name.as_bytes());
        f.value = at(h.value);
    }
    let raw = buf.split_to(len).freeze();
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Invalid("bad status code"))?;
    let version = match minor {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(Error::Invalid("bad HTTP version")),
    };
    let mut headers = HeaderMap::with_capacity(count + crate::headers::ADDED_TO_RESPONSE);
    for f in &*fields {
        let (name, value) = (range(f.name), range(f.value));
        let name =
            HeaderName::from_bytes(&raw[name]).map_err(|_| Error::Invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(raw.slice(value))
            .map_err(|_| Error::Invalid("bad header value"))?;
        headers.append(name, value);
    }
    let framing = framing(status, &headers)?;
    let keep_alive =
        version == Version::HTTP_11 && !has_token(&headers, header::CONNECTION, "close");
    // A `Transfer-Encoding` next to a `Content-Length` is honoured, but the connection is not
    // trusted with another request.
    let keep_alive = keep_alive
        && !(headers.contains_key(header::TRANSFER_ENCODING)
            && headers.contains_key(header::CONTENT_LENGTH));
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
    }))
}

fn range((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, Error> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
            .map(<[u8]>::trim_ascii);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let n = parse_length(part.trim_ascii()).ok_or(Error::Invalid("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// A `Content-Length`: one or more ASCII digits, nothing else.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
