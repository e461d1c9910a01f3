//! A fast JSON-lines event formatter: one object per event with `timestamp` (RFC 3339, UTC,
//! microseconds), `level`, the event's fields flattened at the top level (`message` included)
//! and `target`. It writes straight into the subscriber's per-event buffer: no map, no
//! intermediate strings, no timestamp library. The access log runs through it once per request,
//! so its cost is part of every request's cost.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The formatter (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a `String` (its writes inline) and handed over in one write:
        // `Writer` would make each of the ~100 small writes a dynamic call.
        let meta = event.metadata();
        let mut line = String::with_capacity(LINE_CAPACITY);
        line.push_str("{\"timestamp\":\"");
        write_timestamp(&mut line, SystemTime::now())?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        let mut fields = Fields {
            out: &mut line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str(",\"target\":");
        write_str(&mut line, meta.target())?;
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Room for an access line without growing.
const LINE_CAPACITY: usize = 512;

/// `,"name":`, the key text [`Line`]'s methods take (`name` is a literal from source code:
/// nothing in it needs escaping).
#[macro_export]
macro_rules! json_key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// One JSON line written without `tracing`'s dispatch: byte for byte what [`JsonLines`]
/// writes for an event at `level` with `message` and the same fields in the same order (a
/// test holds the two to that). The access log takes this path once per request; every other
/// event goes through `tracing`.
pub struct Line<'a> {
    out: &'a mut String,
}

impl<'a> Line<'a> {
    /// Starts a line in `out` (cleared first) at the current time; `message` is written as it
    /// is (see [`Line::plain`]).
    pub fn start(out: &'a mut String, level: tracing::Level, message: &'static str) -> Self {
        out.clear();
        out.reserve(LINE_CAPACITY);
        out.push_str("{\"timestamp\":\"");
        // Writing into a `String` cannot fail.
        let _ = write_timestamp(out, SystemTime::now());
        out.push_str("\",\"level\":\"");
        out.push_str(level.as_str());
        out.push('"');
        let mut line = Self { out };
        line.plain(crate::json_key!("message"), message);
        line
    }

    /// `,"key":"value"`. `key` is `,"name":` as [`json_key!`](crate::json_key) writes it:
    /// one copy for the name and its punctuation.
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.out.push_str(key);
        let _ = write_str(self.out, value);
        self
    }

    /// `,"key":"value"` for a value the gateway built from characters JSON never escapes
    /// (closed sets written in source code, a peer address, a configured tenant id): no scan.
    /// Checked in debug builds.
    pub fn plain(&mut self, key: &'static str, value: &str) -> &mut Self {
        debug_assert!(
            !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
            "{value:?} needs escaping"
        );
        self.out.push_str(key);
        self.out.push('"');
        self.out.push_str(value);
        self.out.push('"');
        self
    }

    /// `,"key":value`.
    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.out.push_str(key);
        let _ = write_u64(self.out, value, 1);
        self
    }

    /// `,"key":value` as `{value}` writes it.
    pub fn f64(&mut self, key: &'static str, value: f64) -> &mut Self {
        self.out.push_str(key);
        let _ = write_f64(self.out, value);
        self
    }

    /// Closes the line with the target (written as it is, see [`Line::plain`]) and a newline.
    pub fn finish(mut self, target: &'static str) {
        self.plain(crate::json_key!("target"), target);
        self.out.push_str("}\n");
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, W: Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> Fields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_str(",\"")?;
                // Field names are identifiers or dotted literals written in source code:
                // nothing in them needs escaping.
                self.out.write_str(field.name())?;
                self.out.write_str("\":")?;
                value(self.out)
            })();
        }
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write_u64(w, value, 1));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| {
            if value < 0 {
                w.write_char('-')?;
            }
            write_u64(w, value.unsigned_abs(), 1)
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write_f64(w, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(&mut *w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON number as `{value}` writes it, without `fmt` for values with at most three
/// decimals below 2^40 / 1000 (durations in milliseconds to the microsecond, up to ~12 days);
/// `null` when not finite.
fn write_f64<W: Write>(w: &mut W, value: f64) -> fmt::Result {
    if !value.is_finite() {
        return w.write_str("null");
    }
    let thousandths = value.abs() * 1000.0;
    // Exact: the double nearest `n / 1000` prints as `n / 1000` with trailing zeros dropped.
    // Below 2^40 thousandths, doubles are far closer together than 0.001, so no shorter
    // decimal names the same double.
    if thousandths < (1u64 << 40) as f64 && thousandths.fract() == 0.0 && value != 0.0 {
        let n = thousandths as u64;
        if (n as f64) / 1000.0 == value.abs() {
            if value < 0.0 {
                w.write_char('-')?;
            }
            write_u64(w, n / 1000, 1)?;
            let mut frac = n % 1000;
            if frac > 0 {
                let mut width = 3;
                while frac % 10 == 0 {
                    frac /= 10;
                    width -= 1;
                }
                w.write_char('.')?;
                write_u64(w, frac, width)?;
            }
            return Ok(());
        }
    }
    write!(w, "{value}")
}

/// A JSON string literal.
fn write_str<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

/// `v` in decimal, zero-padded to at least `width` digits (at most 20), without `fmt`
/// (`itoa` writes two digits per step).
fn write_u64<W: Write>(w: &mut W, v: u64, width: usize) -> fmt::Result {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(v);
    const ZEROS: &str = "00000000000000000000";
    let pad = width.min(ZEROS.len()).saturating_sub(digits.len());
    w.write_str(&ZEROS[..pad])?;
    w.write_str(digits)
}

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Most values (ids, names, numbers) need no escaping: one scan, one copy. The scan has
        // no early exit so that it compiles to vector instructions.
        let special = s.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !special {
            return self.0.write_str(s);
        }
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// `2026-11-26T23:03:31.704962Z`. The part up to the seconds is formatted once per second
/// and thread.
fn write_timestamp<W: Write>(w: &mut W, now: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return Ok(false);
        };
        if c.0 != secs {
            c.1.clear();
            write_second(&mut c.1, secs)?;
            c.0 = secs;
        }
        w.write_str(&c.1).map(|()| true)
    })?;
    if !cached {
        write_second(w, secs)?;
    }
    write_u64(w, since.subsec_micros().into(), 6)?;
    w.write_str("Z")
}

/// `2026-11-26T23:03:31.`
fn write_second<W: Write>(w: &mut W, secs: u64) -> fmt::Result {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let parts = [
        (y.unsigned_abs(), 4, "-"),
        (m.into(), 2, "-"),
        (d.into(), 2, "T"),
        (rem / 3600, 2, ":"),
        (rem % 3600 / 60, 2, ":"),
        (rem % 60, 2, "."),
    ];
    for (v, width, sep) in parts {
        write_u64(w, v, width)?;
        w.write_str(sep)?;
    }
    Ok(())
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn timestamps_match_the_calendar() {
        let t = |secs: u64, micros: u32| {
            let mut s = String::new();
            write_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()),
            )
            .expect("write");
            s
        };
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(t(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(t(1_795_734_211, 704_962), "2026-11-26T23:03:31.704962Z");
        assert_eq!(t(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn integers_are_written_in_decimal() {
        let w = |v: u64, width: usize| {
            let mut s = String::new();
            write_u64(&mut s, v, width).expect("write");
            s
        };
        assert_eq!(w(0, 1), "0");
        assert_eq!(w(7, 4), "0007");
        assert_eq!(w(1234, 2), "1234");
        assert_eq!(w(u64::MAX, 1), u64::MAX.to_string());
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let f = |v: f64| {
            let mut s = String::new();
            write_f64(&mut s, v).expect("write");
            s
        };
        for micros in [
            0u64,
            1,
            10,
            100,
            568,
            1000,
            1500,
            2_000_000,
            123_456_789,
            999_999_999_999,
        ] {
            let v = micros as f64 / 1000.0;
            assert_eq!(f(v), format!("{v}"), "{micros} µs");
            assert_eq!(f(-v), format!("{}", -v), "-{micros} µs");
        }
        for v in [0.1 + 0.2, 1.0 / 3.0, 1e300, 5e-324, 0.0005] {
            assert_eq!(f(v), format!("{v}"));
        }
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(f64::INFINITY), "null");
    }

    proptest::proptest! {
        #[test]
        fn durations_are_written_as_display_writes_them(micros in 0u64..(1 << 42), scale in 0u32..4) {
            let v = micros as f64 / 10f64.powi(scale as i32 + 1);
            let mut s = String::new();
            write_f64(&mut s, v).expect("write");
            proptest::prop_assert_eq!(s, format!("{v}"));
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\nd\u{1}é").expect("write");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_are_one_json_object_per_line() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let err = std::io::Error::other("boom \"quoted\"");
            tracing::info!(
                target: "access",
                request_id = "r-1",
                status = 200u16,
                upstream_status = 0u16,
                neg = -3i64,
                ok = true,
                duration_ms = 1.5f64,
                nan = f64::NAN,
                peer = %"127.0.0.1:1",
                error = &err as &(dyn std::error::Error + 'static),
                "request"
            );
            tracing::warn!(detail = ?vec!["x"], "second \"line\"");
        });
        let out = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2);
        let a = &lines[0];
        assert_eq!(a["message"], "request");
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["target"], "access");
        assert_eq!(a["request_id"], "r-1");
        assert_eq!(a["status"], 200);
        assert_eq!(a["neg"], -3);
        assert_eq!(a["ok"], true);
        assert_eq!(a["duration_ms"], 1.5);
        assert!(a["nan"].is_null());
        assert_eq!(a["peer"], "127.0.0.1:1");
        assert_eq!(a["error"], "boom \"quoted\"");
        assert!(a["timestamp"].as_str().expect("ts").ends_with('Z'));
        assert_eq!(lines[1]["message"], "second \"line\"");
        assert_eq!(lines[1]["detail"], "[\"x\"]");
    }
}
