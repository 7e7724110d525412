//! The gate's Lua scripts. Each touches only one SKU's keys, which share a hash tag, so
//! every script runs on one Redis Cluster slot.
//!
//! A SKU has four keys: its counter, its in-flight hash, its done hash (the keys that
//! committed through the gate, so a replay is never refused after sell-out), and its partial
//! mark (present, with an expiry, while the done hash may lack keys committed before it: the
//! counter was warmed for a SKU that already had ledger rows, as after Redis lost its data).
//!
//! An in-flight record is a field of the SKU's in-flight hash: the idempotency key maps to
//! `"<units>:<admitted at, ms on the Redis clock>"`. Redis's clock, not the service's, so the
//! reconcilers of many instances agree on a record's age.

use redis::Script;

/// Admission. KEYS: units, in-flight, done, partial, hold. ARGV: key, units.
///
/// Returns `{status, units left}`:
/// - `1` admitted: the counter was decremented and the record written;
/// - `0` refused: the counter holds fewer units (second value) than asked; nothing changed;
/// - `2` already in flight under this key with the same units (a client retrying an unknown
///   outcome): admitted without a second decrement, the record is kept;
/// - `3` cold: no counter for the SKU yet, nothing changed;
/// - `4` the key is in flight for other units: nothing changed, the database decides;
/// - `5` the key committed through the gate before: nothing changed, the database answers
///   (a replay of the first receipt, or a refusal of a reused key), even after sell-out;
/// - `6` short (second value) while the done hash is partial: nothing changed; refused unless
///   the database has the key (a replay the done hash does not know);
/// - `7` enough units, but a restock from zero is held while a sold-out hint may still live
///   somewhere (see [`RECONCILE`]): nothing changed, refused. With the done hash partial, the
///   hold answers `6` (0 units) instead, so that a replay the done hash does not know is
///   still looked up in the database and answered.
pub(crate) const ADMIT: &str = r"
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local held_units = string.match(held, '^(%d+)')
  if held_units == ARGV[2] then return {2, 0} end
  return {4, 0}
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {5, 0} end
local units = redis.call('GET', KEYS[1])
if not units then return {3, 0} end
units = tonumber(units)
local asked = tonumber(ARGV[2])
if units < asked then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {6, units} end
  return {0, units}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {6, 0} end
  return {7, units}
end
local now = redis.call('TIME')
redis.call('DECRBY', KEYS[1], asked)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000)))
return {1, units - asked}
";

/// Give-back after a definite refusal or failure: the record is removed and its units return
/// to the counter, atomically, once (a second give-back finds no record). A counter that was
/// dropped meanwhile stays dropped: the next warm-up recomputes it. KEYS: units, in-flight.
/// ARGV: key. Returns the units given back (0 when there was no record).
pub(crate) const GIVE_BACK: &str = r"
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return 0 end
local units = tonumber(string.match(held, '^(%d+)'))
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], units) end
return units
";

/// Settling a commit: the record moves from in flight to done, where a later replay of the
/// key finds it (status `5` of [`ADMIT`]). A done hash grown past its bound is dropped and
/// the SKU marked partial for the replay window, so a replay is still answered (status `6`)
/// while memory stays bounded. KEYS: in-flight, done, partial. ARGV: key, most keys in the
/// done hash, replay window ms. Returns 0 without a record, 1 settled, 2 settled and trimmed.
pub(crate) const SETTLE: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.match(held, '^(%d+)'))
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  return 2
end
return 1
";

/// Recording sales that reached the database without a record (Redis was down, see
/// `bypassed.rs`): their keys go to the done hash, bounded as by [`SETTLE`]. KEYS: done,
/// partial. ARGV: most keys in the done hash, replay window ms, then `key, units` pairs.
/// Returns 1, or 2 when the done hash was trimmed.
pub(crate) const RECORD_DONE: &str = r"
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 2
end
return 1
";

/// The sold-out snapshot behind the local hint (`sold_out.rs`). KEYS: units, in-flight, done,
/// partial, hinted. ARGV: most done keys returned, the hint's life in ms. Returns `{counter
/// (-1 when cold), records in flight, complete, done keys}`: the keys only when the counter
/// is 0 with nothing in flight, and `complete` 1 only then, with no partial mark and at most
/// that many keys. A usable snapshot marks the SKU hinted for the hint's life (the longest
/// asked), so that a restock from zero is held until every hint has expired.
pub(crate) const SOLD_OUT: &str = r"
local units = redis.call('GET', KEYS[1])
if not units then return {-1, 0, 0, {}} end
units = tonumber(units)
local in_flight = redis.call('HLEN', KEYS[2])
if units ~= 0 or in_flight ~= 0 then return {units, in_flight, 0, {}} end
if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
end
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('HLEN', KEYS[3]) > tonumber(ARGV[1]) then
  return {0, 0, 0, {}}
end
return {0, 0, 1, redis.call('HKEYS', KEYS[3])}
";

/// Reconciliation: settles the records found committed, drops the stale ones that never
/// committed, then sets the counter to the database's available units less every record still
/// in flight, atomically against admissions. A cold counter warmed with a partial window
/// (`> 0` ms: the SKU has ledger rows the done hash does not hold) marks the done hash partial
/// for that long. A counter raised from 0 while the SKU is marked hinted (a sold-out hint may
/// still live in some instance) is held until the mark expires, plus 20 ms for the instances'
/// clocks: the admissions it holds back are what could otherwise commit a key that such a hint
/// would refuse to replay. KEYS: units, in-flight, done, partial, hinted, hold. ARGV:
/// available, partial window ms, number of committed keys `n`, `n` committed keys, then the
/// stale keys.
/// Returns `{counter before (-1 when cold), counter after, units still in flight}`.
pub(crate) const RECONCILE: &str = r"
local committed = tonumber(ARGV[3])
for i = 4, #ARGV do
  local held = redis.call('HGET', KEYS[2], ARGV[i])
  if held then
    redis.call('HDEL', KEYS[2], ARGV[i])
    if i < 4 + committed then redis.call('HSET', KEYS[3], ARGV[i], string.match(held, '^(%d+)')) end
  end
end
local pending = 0
for _, held in ipairs(redis.call('HVALS', KEYS[2])) do
  pending = pending + tonumber(string.match(held, '^(%d+)'))
end
local before = redis.call('GET', KEYS[1])
if before then
  before = tonumber(before)
else
  before = -1
  local window = tonumber(ARGV[2])
  if window > 0 then redis.call('SET', KEYS[4], '1', 'PX', window) end
end
local units = tonumber(ARGV[1]) - pending
if units < 0 then units = 0 end
if before == 0 and units > 0 then
  local hinted = redis.call('PTTL', KEYS[5])
  if hinted > 0 then redis.call('SET', KEYS[6], '1', 'PX', hinted + 20) end
end
redis.call('SET', KEYS[1], string.format('%d', units))
return {before, units, pending}
";

/// The in-flight records with their age on the Redis clock. KEYS: in-flight. Returns a flat
/// list `key, units, age ms, ...`.
pub(crate) const IN_FLIGHT: &str = r"
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local out = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local units, at = string.match(fields[i + 1], '^(%d+):(%d+)$')
  table.insert(out, fields[i])
  table.insert(out, tonumber(units))
  table.insert(out, now_ms - tonumber(at))
end
return out
";

/// The gate's scripts, loaded once per process (EVALSHA, falling back to EVAL on a node that
/// has not seen them).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) admit: Script,
    pub(crate) give_back: Script,
    pub(crate) settle: Script,
    pub(crate) reconcile: Script,
    pub(crate) in_flight: Script,
    pub(crate) record_done: Script,
    pub(crate) sold_out: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            admit: Script::new(ADMIT),
            give_back: Script::new(GIVE_BACK),
            settle: Script::new(SETTLE),
            reconcile: Script::new(RECONCILE),
            in_flight: Script::new(IN_FLIGHT),
            record_done: Script::new(RECORD_DONE),
            sold_out: Script::new(SOLD_OUT),
        }
    }
}
