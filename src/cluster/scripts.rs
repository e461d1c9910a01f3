//! The Lua scripts run in Redis (through EVALSHA; the client loads a script on `NOSCRIPT`). Both
//! read the clock with `TIME`, so every gateway of the fleet decides on Redis's one clock, not on
//! its own. Times are integer microseconds, written with `%.0f` (Lua's default number format
//! would round a 16-digit timestamp).

/// GCRA for one bucket, with its pause, in one round trip.
///
/// KEYS: 1 = the bucket's theoretical arrival time (TAT), 2 = its pause deadline (same hash tag).
/// ARGV: 1 = emission interval (µs, may be fractional), 2 = burst, 3 = longest wait to reserve
/// (µs; 0 = never reserve: reject and shadow modes).
///
/// Returns `{status, wait_us, remaining}`: status 0 = allowed, 1 = reserved (the caller sleeps
/// `wait_us` then goes), 2 = limited (retry after `wait_us`), 3 = paused (for `wait_us`).
/// A denied call takes nothing. The TAT key lives exactly until the bucket would be full again.
pub(super) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {3, paused - now, 0}
end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
local wait = allow_at - now
if wait > 0 and wait > max_wait then
  return {2, math.ceil(wait), 0}
end
local status = 1
local remaining = 0
if wait <= 0 then
  status = 0
  wait = 0
  remaining = math.floor((now - allow_at) / interval)
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {status, math.ceil(wait), remaining}
";

/// Extends a bucket's pause; a shorter pause never cuts a running longer one.
///
/// KEYS: 1 = the pause deadline. ARGV: 1 = the pause (µs). The key lives until the deadline.
pub(super) const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(ARGV[1])
local deadline = now + pause
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < deadline then
  redis.call('SET', KEYS[1], string.format('%.0f', deadline), 'PX', math.ceil(pause / 1000) + 1)
end
return 1
";
