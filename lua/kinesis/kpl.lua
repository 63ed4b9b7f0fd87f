-- kinesis.kpl - KPL-compatible record aggregation: many user records packed
-- into one Kinesis record (magic F3 89 9A C2, a protobuf AggregatedRecord,
-- the MD5 of the protobuf; amazon-kinesis-producer aggregation-format.md),
-- and read back the way the KCL reads them (AggregatorUtil.deaggregate).
-- The codec is C (src/kpl.c); this module owns the policy: validation, the
-- outer record's keys, the size accounting, what counts as an aggregate.
local core = require "kinesis.core"
local errors = require "kinesis.errors"

local type, error, pairs, setmetatable, tostring = type, error, pairs, setmetatable, tostring
local floor, format = math.floor, string.format

local kpl_encode, kpl_decode, kpl_in_range = core.kpl_encode, core.kpl_decode, core.kpl_in_range
local u128_check = core.u128_check

local M = {}

M.MAGIC = core.kpl_magic
--- The service's limit on one record: Data + PartitionKey <= 1 MiB
-- (PutRecord API reference). The aggregator's default max_bytes.
M.MAX_BYTES = 1048576
-- magic + MD5 around the protobuf
local OVERHEAD = 20

---------------------------------------------------------------- sizes

-- Bytes of a protobuf varint holding n (n >= 0; plain arithmetic so that
-- LuaJIT's doubles work too).
local function varint_len(n)
  local len = 1
  while n >= 128 do
    n = floor(n / 128)
    len = len + 1
  end
  return len
end

-- Bytes of a length-delimited field (1-byte key) with an n-byte body.
local function field_len(n)
  return 1 + varint_len(n) + n
end

-- Bytes of a records entry with the given indexes (ehki nil: no EHK).
local function record_len(pki, ehki, data_len)
  local body = 1 + varint_len(pki) + field_len(data_len)
  if ehki then body = body + 1 + varint_len(ehki) end
  return field_len(body)
end

---------------------------------------------------------------- errors

local function validation(op, code, message)
  return errors.new { kind = "validation", code = code, message = message, op = op }
end

local function protocol(code, message)
  return errors.new { kind = "protocol", code = code, message = message, op = "deaggregate" }
end

-- Why user record r (named `what` in messages) cannot be aggregated, or nil.
local function check_record(r, what)
  if type(r) ~= "table" then
    return format("%s is a %s, not a table", what, type(r))
  end
  local pk, data, ehk = r.PartitionKey, r.Data, r.ExplicitHashKey
  if type(pk) ~= "string" or pk == "" then
    return what .. ": PartitionKey must be a non-empty string"
  end
  if type(data) ~= "string" then
    return format("%s: Data must be a string, got %s", what, type(data))
  end
  if ehk ~= nil then
    if type(ehk) ~= "string" then
      return format("%s: ExplicitHashKey must be a decimal string, got %s", what, type(ehk))
    end
    local ok, why = u128_check(ehk)
    if not ok then return format("%s: bad ExplicitHashKey: %s", what, why.message) end
  end
  return nil
end

---------------------------------------------------------------- aggregator

local Aggregator = {}
Aggregator.__index = Aggregator
Aggregator.__name = "kinesis.kpl_aggregator"

local function reset(self)
  self.pks, self.pk_pos = {}, {}     -- partition key table; key -> 0-based index
  self.ehks, self.ehk_pos = {}, {}   -- explicit hash key table, same
  self.records = {}                  -- { partition_key_index=, explicit_hash_key_index=, data= }
  self.n = 0
  self.pb_size = 0                   -- bytes of the protobuf so far
  self.outer_pk, self.outer_ehk = nil, nil
end

-- Protobuf bytes record (pk, ehk, data) would add to the aggregate.
local function cost(self, pk, ehk, data)
  local add = 0
  local pki = self.pk_pos[pk]
  if not pki then
    pki = #self.pks
    add = add + field_len(#pk)
  end
  local ehki
  if ehk then
    ehki = self.ehk_pos[ehk]
    if not ehki then
      ehki = #self.ehks
      add = add + field_len(#ehk)
    end
  end
  return add + record_len(pki, ehki, #data)
end

-- What the service counts for an aggregate of pb protobuf bytes whose
-- outer record has partition key pk: Data + PartitionKey.
local function entry_size(pb, pk)
  return OVERHEAD + pb + #pk
end

-- Bytes record (pk, ehk, data) takes as the only record of an aggregate.
local function alone_size(pk, ehk, data)
  local pb = field_len(#pk) + record_len(0, ehk and 0 or nil, #data)
  if ehk then pb = pb + field_len(#ehk) end
  return entry_size(pb, pk)
end

-- Adds a checked record; the caller has made sure it fits.
local function append(self, pk, ehk, data)
  self.pb_size = self.pb_size + cost(self, pk, ehk, data)
  local pki = self.pk_pos[pk]
  if not pki then
    pki = #self.pks
    self.pks[pki + 1] = pk
    self.pk_pos[pk] = pki
  end
  local ehki
  if ehk then
    ehki = self.ehk_pos[ehk]
    if not ehki then
      ehki = #self.ehks
      self.ehks[ehki + 1] = ehk
      self.ehk_pos[ehk] = ehki
    end
  end
  local n = self.n + 1
  self.records[n] = { partition_key_index = pki, explicit_hash_key_index = ehki, data = data }
  self.n = n
  if n == 1 then
    -- The outer record takes the first user record's keys, as
    -- aws-kinesis-agg does (vectors: outer_record).
    self.outer_pk, self.outer_ehk = pk, ehk
  end
end

--- aggregator([opts]) -> agg
-- A producer-side packer. opts.max_bytes (default 1 MiB) bounds what the
-- service counts for each entry it hands out: Data + outer PartitionKey;
-- opts.max_records bounds the user records per entry (default: no bound).
--   agg:add(record) -> entry | nil       entry: the full aggregate when this
--                                        record did not fit (the record then
--                                        starts the next one); nil, err when
--                                        the record is invalid or too large
--                                        to fit even alone
--   agg:flush()     -> entry | nil       the pending aggregate, nil if empty
--   agg:count()     -> pending user records
--   agg:size()      -> pending bytes as the service counts them (0 if empty)
function M.aggregator(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'aggregator' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local max_bytes = opts.max_bytes == nil and M.MAX_BYTES or opts.max_bytes
  local max_records = opts.max_records == nil and math.huge or opts.max_records
  if type(max_bytes) ~= "number" or max_bytes ~= max_bytes or max_bytes <= OVERHEAD then
    error("bad argument #1 to 'aggregator' (max_bytes must be a number above " .. OVERHEAD .. ")", 2)
  end
  if type(max_records) ~= "number" or max_records ~= max_records or max_records < 1 then
    error("bad argument #1 to 'aggregator' (max_records must be a number of at least 1)", 2)
  end
  local self = setmetatable({ max_bytes = max_bytes, max_records = max_records }, Aggregator)
  reset(self)
  return self
end

function Aggregator:add(record)
  local why = check_record(record, "user record")
  if why then return nil, validation("aggregator:add", "ValidationError", why) end
  local pk, ehk, data = record.PartitionKey, record.ExplicitHashKey, record.Data
  local alone = alone_size(pk, ehk, data)
  if alone > self.max_bytes then
    return nil, validation("aggregator:add", "RecordTooLarge", format(
      "user record with %d bytes of Data and a %d-byte PartitionKey takes %d bytes "
      .. "aggregated, over max_bytes %s", #data, #pk, alone, tostring(self.max_bytes)))
  end
  local full
  if self.n > 0 and (self.n >= self.max_records or
      entry_size(self.pb_size + cost(self, pk, ehk, data), self.outer_pk) > self.max_bytes) then
    full = self:flush()
  end
  append(self, pk, ehk, data)
  return full
end

function Aggregator:flush()
  if self.n == 0 then return nil end
  local data = kpl_encode(self.pks, self.ehks, self.records)
  if #data ~= OVERHEAD + self.pb_size then
    error(format("kinesis.kpl: aggregate is %d bytes, accounted %d", #data, OVERHEAD + self.pb_size))
  end
  local entry = { PartitionKey = self.outer_pk, ExplicitHashKey = self.outer_ehk, Data = data }
  reset(self)
  return entry
end

function Aggregator:count()
  return self.n
end

function Aggregator:size()
  if self.n == 0 then return 0 end
  return entry_size(self.pb_size, self.outer_pk)
end

---------------------------------------------------------------- aggregate

--- aggregate(records[, opts]) -> entry | nil, err
-- All of records (an array of {PartitionKey=, Data=, ExplicitHashKey=}) in
-- one aggregate, in order: entry = {PartitionKey=, ExplicitHashKey=, Data=}
-- ready for PutRecord(s). The entry takes the first record's PartitionKey
-- and, if it has one, its ExplicitHashKey. Fails (nil, err) on an invalid
-- record, on an empty list, and when the entry would exceed opts.max_bytes
-- (default 1 MiB: Data + PartitionKey); kpl.aggregator splits instead.
function M.aggregate(records, opts)
  if type(records) ~= "table" then
    error("bad argument #1 to 'aggregate' (table expected, got " .. type(records) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'aggregate' (table expected, got " .. type(opts) .. ")", 2)
  end
  local agg = M.aggregator { max_bytes = opts and opts.max_bytes }
  local n = #records
  if n == 0 then return nil, validation("aggregate", "ValidationError", "no records to aggregate") end
  for i = 1, n do
    local r = records[i]
    local why = check_record(r, "record " .. i)
    if why then return nil, validation("aggregate", "ValidationError", why) end
    append(agg, r.PartitionKey, r.ExplicitHashKey, r.Data)
    if agg:size() > agg.max_bytes then
      return nil, validation("aggregate", "RecordTooLarge", format(
        "records 1..%d already aggregate to %d bytes, over max_bytes %s "
        .. "(kinesis.kpl.aggregator splits them into several entries)", i, agg:size(), tostring(agg.max_bytes)))
    end
  end
  return agg:flush()
end

---------------------------------------------------------------- deaggregate

-- The record as the only "user record" of itself: every field kept, marked
-- as not aggregated (the KCL passes such records through unchanged).
local function passthrough(record)
  local u = {}
  for k, v in pairs(record) do u[k] = v end
  u.Aggregated = false
  return u
end

local STRICT_CODES = {
  checksum = "KPLChecksumMismatch",
  malformed = "KPLMalformed",
  missing_field = "KPLMissingField",
}

-- The inclusive hash key range of a shard table (or a bare range), both
-- ends checked; raises on a wrong type, nil + message on a bad decimal.
local function shard_range(shard)
  if type(shard) ~= "table" then
    error("bad argument #2 to 'deaggregate' (opts.shard must be a table, got " .. type(shard) .. ")", 3)
  end
  local range = shard.HashKeyRange or shard
  local lo, hi = type(range) == "table" and range.StartingHashKey, type(range) == "table" and range.EndingHashKey
  if type(lo) ~= "string" or type(hi) ~= "string" then
    error("bad argument #2 to 'deaggregate' (opts.shard needs HashKeyRange.StartingHashKey "
      .. "and EndingHashKey strings)", 3)
  end
  local ok, why = u128_check(lo)
  if not ok then return nil, nil, "bad StartingHashKey: " .. why.message end
  ok, why = u128_check(hi)
  if not ok then return nil, nil, "bad EndingHashKey: " .. why.message end
  return lo, hi
end

--- deaggregate(record[, opts]) -> users, nil, dropped | nil, err
-- record: as GetRecords (or SubscribeToShard) returns it. users: its user
-- records in order, each {PartitionKey=, ExplicitHashKey=, Data=,
-- SequenceNumber=, SubSequenceNumber= (0-based position in the aggregate),
-- Aggregated = true} plus the outer record's other fields
-- (ApproximateArrivalTimestamp, EncryptionType, ...).
-- Like the KCL, a record that is too short, lacks the magic, fails the MD5
-- or protobuf parsing (a missing required field included) is not an
-- aggregate: it comes back unchanged as the only element, with
-- Aggregated = false and no SubSequenceNumber. opts.strict = true turns the
-- last three (the magic is there, the rest is corrupt) into nil, err.
-- A key index outside its table, or an ExplicitHashKey that is not a 128-bit
-- decimal, is an error for the aggregate (vectors: recommended): nil, err,
-- where err.records holds the user records that were sound and err.problems
-- lists each fault (the KCL logs such records and drops them).
-- opts.shard (a ListShards shard, or {StartingHashKey=, EndingHashKey=}):
-- as the KCL's AggregatorUtil does, if any user record's effective hash key
-- (ExplicitHashKey, else the MD5 hash key of PartitionKey) is outside the
-- shard's range, the whole aggregate yields no user records; `dropped` then
-- counts them (otherwise 0). Records that are not aggregates are never
-- filtered.
function M.deaggregate(record, opts)
  if type(record) ~= "table" then
    error("bad argument #1 to 'deaggregate' (table expected, got " .. type(record) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'deaggregate' (table expected, got " .. type(opts) .. ")", 2)
  end
  local data = record.Data
  if type(data) ~= "string" then
    error("bad argument #1 to 'deaggregate' (record.Data must be a string, got " .. type(data) .. ")", 2)
  end
  local lo, hi
  if opts and opts.shard ~= nil then
    local why
    lo, hi, why = shard_range(opts.shard)
    if not lo then return nil, validation("deaggregate", "ValidationError", "opts.shard: " .. why) end
  end

  local pks, ehks, recs = kpl_decode(data)
  if not pks then
    local code, why = ehks.code, ehks.message
    if opts and opts.strict and STRICT_CODES[code] then
      return nil, protocol(STRICT_CODES[code], "record starts with the KPL magic but " .. why)
    end
    return { passthrough(record) }, nil, 0
  end

  local users, nu, problems, first_code = {}, 0, nil, nil
  local function problem(code, message)
    problems = problems or {}
    problems[#problems + 1] = message
    first_code = first_code or code
  end
  local npk, nehk = #pks, #ehks
  for i = 1, #recs do
    local r = recs[i]
    local pki, ehki = r.partition_key_index, r.explicit_hash_key_index
    local pk = pks[pki + 1]
    local ehk = ehki and ehks[ehki + 1]
    if pk == nil then
      problem("KPLIndexOutOfRange", format("user record %d: partition_key_index %.0f outside a table of %d",
        i - 1, pki, npk))
    elseif ehki and ehk == nil then
      problem("KPLIndexOutOfRange", format("user record %d: explicit_hash_key_index %.0f outside a table of %d",
        i - 1, ehki, nehk))
    elseif ehk and not u128_check(ehk) then
      problem("KPLBadExplicitHashKey", format("user record %d: ExplicitHashKey %q is not a 128-bit decimal",
        i - 1, ehk:sub(1, 48)))
    else
      local u = {}
      for k, v in pairs(record) do u[k] = v end
      u.PartitionKey, u.ExplicitHashKey, u.Data = pk, ehk, r.data
      u.SubSequenceNumber, u.Aggregated = i - 1, true
      nu = nu + 1
      users[nu] = u
    end
  end

  local dropped = 0
  if lo then
    for i = 1, nu do
      local u = users[i]
      local inside, why = kpl_in_range(u.PartitionKey, u.ExplicitHashKey, lo, hi)
      -- nil: a user record's ExplicitHashKey is not a 128-bit decimal
      if inside == nil then return nil, protocol("KPLMalformed", why.message) end
      if not inside then
        -- AggregatorUtil.deaggregate: one user record outside the shard
        -- discards every user record of that aggregate.
        dropped, users = nu, {}
        break
      end
    end
  end

  if problems then
    local err = protocol(first_code, format("%d of %d user records unusable; %s",
      #problems, #recs, problems[1]))
    err.records, err.problems = users, problems
    return nil, err
  end
  return users, nil, dropped
end

M.Aggregator = Aggregator

return M
