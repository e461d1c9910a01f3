//! The raw HTTP/1 request target, which hyper does not keep: hyper parses it into an
//! [`http::Uri`], and that drops a `#fragment` without a trace. A fragment never belongs in a
//! request (RFC 9110 §4.2.4: it is for the client) and the gateway refuses one, so the bytes are
//! looked at as they are read.
//!
//! [`Framing`] follows the HTTP/1 message framing of the bytes a connection reads (request line,
//! headers, a `Content-Length` or chunked body, trailers) to find each request line, and reports
//! the requests whose target carries a `#`. It copies nothing in the usual case (a whole line in
//! one read); a line split across reads keeps at most [`CARRY`] bytes of its start. Anything it
//! does not understand (a malformed length, a transfer coding other than chunked, an HTTP/2
//! preface) turns it off for the connection: hyper refuses such messages itself, and a report is
//! only ever believed when the request hyper parsed has the target length the framing saw
//! ([`Fragment::matches`]).

use memchr::{memchr, memchr3};

/// The start of a split line that is kept: enough for any header name the framing reads, a
/// `Content-Length` value and a chunk size.
const CARRY: usize = 128;

/// A request whose target had a `#fragment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fragment {
    /// The request's index on its connection (0 for the first).
    pub index: u64,
    /// The length of the target before the `#`.
    pub target_len: usize,
}

impl Fragment {
    /// Whether the request hyper parsed is this one: its target is what came before the `#`.
    pub(super) fn matches(&self, uri: &http::Uri) -> bool {
        uri.path_and_query().map_or(0, |p| p.as_str().len()) == self.target_len
    }
}

/// Which line a line-based state is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The rest of the request line after the target (the version).
    Version,
    Header,
    ChunkSize,
    /// The CRLF that ends a chunk's data.
    ChunkEnd,
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages (empty lines before a request line are allowed).
    Start,
    Method,
    Target,
    Line(Line),
    Body(u64),
    ChunkData(u64),
    /// Not following this connection any more.
    Off,
}

/// What the head read so far says about the message's body.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    fragment: bool,
    target_len: usize,
    content_length: Option<u64>,
    chunked: bool,
}

/// One connection's HTTP/1 framing, fed every byte it reads.
#[derive(Debug)]
pub(super) struct Framing {
    state: State,
    head: Head,
    /// Request heads completed so far.
    heads: u64,
    /// The start of a line split across reads.
    carry: Vec<u8>,
    /// Whether the split line was longer than [`CARRY`].
    carry_cut: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            state: State::Start,
            head: Head::default(),
            heads: 0,
            carry: Vec::new(),
            carry_cut: false,
        }
    }
}

impl Framing {
    /// Stops following the connection (it speaks HTTP/2).
    pub(super) fn off(&mut self) {
        self.state = State::Off;
    }

    /// Reads `data`, the next bytes of the connection; `found` gets every request head completed
    /// in it whose target has a fragment.
    pub(super) fn feed(&mut self, mut data: &[u8], found: &mut impl FnMut(Fragment)) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Start => {
                    let Some(i) = data.iter().position(|b| !matches!(b, b'\r' | b'\n')) else {
                        return;
                    };
                    data = &data[i..];
                    self.head = Head::default();
                    self.state = State::Method;
                }
                State::Method => match memchr(b' ', data) {
                    Some(i) => {
                        data = &data[i + 1..];
                        self.state = State::Target;
                    }
                    None => return,
                },
                State::Target => {
                    let end = memchr3(b' ', b'\r', b'\n', data);
                    let part = &data[..end.unwrap_or(data.len())];
                    if !self.head.fragment {
                        match memchr(b'#', part) {
                            Some(h) => {
                                self.head.fragment = true;
                                self.head.target_len += h;
                            }
                            None => self.head.target_len += part.len(),
                        }
                    }
                    let Some(i) = end else { return };
                    data = &data[i..];
                    self.state = State::Line(Line::Version);
                }
                State::Body(n) | State::ChunkData(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = match (self.state, n - k) {
                        (State::Body(_), 0) => State::Start,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::Line(Line::ChunkEnd),
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::Line(kind) => match memchr(b'\n', data) {
                    None => {
                        self.keep(data);
                        return;
                    }
                    Some(i) => {
                        let (line, rest) = (&data[..i], &data[i + 1..]);
                        data = rest;
                        if self.carry.is_empty() && !self.carry_cut {
                            self.end_line(kind, line, false, found);
                        } else {
                            self.keep(line);
                            let mut whole = std::mem::take(&mut self.carry);
                            let cut = std::mem::take(&mut self.carry_cut);
                            self.end_line(kind, &whole, cut, found);
                            whole.clear();
                            self.carry = whole;
                        }
                    }
                },
            }
        }
    }

    /// Keeps the start of a line that continues in a later read.
    fn keep(&mut self, part: &[u8]) {
        let room = CARRY - self.carry.len();
        self.carry.extend_from_slice(&part[..part.len().min(room)]);
        self.carry_cut |= part.len() > room;
    }

    /// A complete line of kind `kind` (without its `\n`; `cut`: only its start is known).
    fn end_line(&mut self, kind: Line, line: &[u8], cut: bool, found: &mut impl FnMut(Fragment)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.state = match kind {
            Line::Version => State::Line(Line::Header),
            Line::Header if line.is_empty() && !cut => self.end_head(found),
            Line::Header => match self.header(line, cut) {
                Some(()) => State::Line(Line::Header),
                None => State::Off,
            },
            Line::ChunkSize => match chunk_size(line) {
                Some(0) => State::Line(Line::Trailer),
                Some(n) => State::ChunkData(n),
                None => State::Off,
            },
            Line::ChunkEnd if line.is_empty() => State::Line(Line::ChunkSize),
            Line::ChunkEnd => State::Off,
            Line::Trailer if line.is_empty() && !cut => State::Start,
            Line::Trailer => State::Line(Line::Trailer),
        };
    }

    /// Reads a header line for the body's framing; `None`: one the framing cannot follow.
    fn header(&mut self, line: &[u8], cut: bool) -> Option<()> {
        // Most lines are neither, and are passed on their first byte.
        if !matches!(line.first().map(u8::to_ascii_lowercase), Some(b'c' | b't')) {
            return Some(());
        }
        let colon = memchr(b':', line)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            if cut {
                return None;
            }
            // `5, 5` is one length said twice; anything else is refused by hyper too.
            let mut n = None;
            for v in value.split(|b| *b == b',') {
                let v = std::str::from_utf8(v.trim_ascii())
                    .ok()?
                    .parse::<u64>()
                    .ok()?;
                if n.is_some_and(|n| n != v) {
                    return None;
                }
                n = Some(v);
            }
            if self.head.content_length.is_some_and(|c| Some(c) != n) {
                return None;
            }
            self.head.content_length = n;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if cut {
                return None;
            }
            // The last coding decides; only chunked is ever accepted last.
            let last = value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return None;
            }
            self.head.chunked = true;
        }
        Some(())
    }

    /// The head is complete: reports it and moves to its body.
    fn end_head(&mut self, found: &mut impl FnMut(Fragment)) -> State {
        let head = std::mem::take(&mut self.head);
        if head.fragment {
            found(Fragment {
                index: self.heads,
                target_len: head.target_len,
            });
        }
        self.heads += 1;
        match (head.chunked, head.content_length) {
            (true, _) => State::Line(Line::ChunkSize),
            (false, Some(n)) if n > 0 => State::Body(n),
            (false, _) => State::Start,
        }
    }
}

/// A chunk-size line's size (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|b| *b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` bytes; the fragments found.
    fn run(bytes: &[u8], step: usize) -> Vec<Fragment> {
        let mut framing = Framing::default();
        let mut got = Vec::new();
        for piece in bytes.chunks(step) {
            framing.feed(piece, &mut |f| got.push(f));
        }
        got
    }

    const PIPELINE: &[u8] =
        b"POST /v1/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 11\r\n\r\n{\"a\":\"#x\"}\n\
        POST /v1/b?q#frag HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n\
        4;ext=1\r\n{\"#\"\r\n1\r\n}\r\n0\r\nX-Trailer: #t\r\n\r\n\
        \r\nPOST /v1/c HTTP/1.1\r\nX-Note: a#b\r\nContent-Length: 0\r\n\r\n\
        GET /#only HTTP/1.1\r\n\r\n";

    #[test]
    fn fragments_are_found_in_request_lines_only_however_the_bytes_are_split() {
        let want = vec![
            Fragment {
                index: 1,
                target_len: "/v1/b?q".len(),
            },
            Fragment {
                index: 3,
                target_len: 1,
            },
        ];
        for step in [1, 2, 3, 7, 16, 64, PIPELINE.len()] {
            assert_eq!(run(PIPELINE, step), want, "pieces of {step} bytes");
        }
    }

    #[test]
    fn what_it_cannot_follow_turns_it_off() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\nab",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nab",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let bytes = format!("{head}GET /#x HTTP/1.1\r\n\r\n");
            assert_eq!(run(bytes.as_bytes(), 5), vec![], "{head:?}");
        }
        let mut framing = Framing::default();
        framing.off();
        framing.feed(b"GET /#x HTTP/1.1\r\n\r\n", &mut |_| panic!("off"));
    }

    #[test]
    fn long_lines_keep_only_their_start() {
        let long = "a".repeat(10_000);
        let bytes =
            format!("POST /{long}#f HTTP/1.1\r\nX-Long: {long}\r\nContent-Length: 3\r\n\r\n#{{}}");
        let mut framing = Framing::default();
        let mut got = Vec::new();
        for piece in bytes.as_bytes().chunks(100) {
            framing.feed(piece, &mut |f| got.push(f));
            assert!(framing.carry.len() <= CARRY);
        }
        assert_eq!(
            got,
            vec![Fragment {
                index: 0,
                target_len: 1 + long.len()
            }]
        );
        assert_eq!(framing.state, State::Start);
    }

    #[test]
    fn a_fragment_is_believed_only_for_the_request_it_was_seen_in() {
        let f = Fragment {
            index: 0,
            target_len: 7,
        };
        assert!(f.matches(&"/v1/b?q".parse().unwrap()));
        assert!(!f.matches(&"/v1/bb?q".parse().unwrap()));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// One request: a target (maybe with a fragment), a body sent with a length or in
        /// chunks, and header lines that hold `#` and framing look-alikes.
        fn request() -> impl Strategy<Value = (Vec<u8>, Option<usize>)> {
            (
                "/[a-z#?=&%]{0,12}",
                proptest::option::of("[a-z#]{0,6}"),
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::option::of(proptest::collection::vec(1usize..9, 0..5)),
                any::<bool>(),
            )
                .prop_map(|(path, fragment, body, chunks, title_case)| {
                    let target = match &fragment {
                        Some(f) => format!("{path}#{f}"),
                        None => path.clone(),
                    };
                    let before = target.find('#');
                    let mut m = format!("POST {target} HTTP/1.1\r\nX-Content-Length: 9#\r\n");
                    match chunks {
                        Some(sizes) => {
                            let te = if title_case {
                                "Transfer-Encoding"
                            } else {
                                "transfer-encoding"
                            };
                            m.push_str(&format!("{te}: chunked\r\n\r\n"));
                            let mut m = m.into_bytes();
                            let mut rest = &body[..];
                            for size in sizes {
                                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                                if chunk.is_empty() {
                                    break;
                                }
                                m.extend_from_slice(
                                    format!("{:x};e=#\r\n", chunk.len()).as_bytes(),
                                );
                                m.extend_from_slice(chunk);
                                m.extend_from_slice(b"\r\n");
                                rest = tail;
                            }
                            m.extend_from_slice(b"0\r\nT: #\r\n\r\n");
                            (m, before)
                        }
                        None => {
                            let cl = if title_case {
                                "Content-Length"
                            } else {
                                "content-length"
                            };
                            m.push_str(&format!("{cl}: {}\r\n\r\n", body.len()));
                            let mut m = m.into_bytes();
                            m.extend_from_slice(&body);
                            (m, before)
                        }
                    }
                })
        }

        proptest! {
            #[test]
            fn every_fragment_is_found_and_nothing_else(
                requests in proptest::collection::vec(request(), 1..6),
                step in 1usize..50,
            ) {
                let mut bytes = Vec::new();
                let mut want = Vec::new();
                for (i, (m, before)) in requests.iter().enumerate() {
                    bytes.extend_from_slice(m);
                    if let Some(target_len) = before {
                        want.push(Fragment { index: i as u64, target_len: *target_len });
                    }
                }
                prop_assert_eq!(run(&bytes, step), want);
            }

            #[test]
            fn any_bytes_never_panic_or_grow_the_carry(
                bytes in proptest::collection::vec(any::<u8>(), 0..600),
                step in 1usize..64,
            ) {
                let mut framing = Framing::default();
                for piece in bytes.chunks(step) {
                    framing.feed(piece, &mut |_| {});
                    prop_assert!(framing.carry.len() <= CARRY);
                }
            }
        }
    }
}
