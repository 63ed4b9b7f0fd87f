-- kinesis.checkpoints - where a consumer keeps its place in each shard, and
-- (for lease stores) which worker reads which shard. This header is the store
-- interface every store implements (memory, file, dynamodb); the consumer
-- (kinesis.consumer) speaks only through it.
--
-- A checkpoint (cp) is a table:
--   { sequence = "<decimal sequence number>" | "SHARD_END" | "TRIM_HORIZON"
--                | "LATEST" | "AT_TIMESTAMP",
--     sub_sequence = integer | nil,   -- the last sub-record done of an aggregate
--     timestamp = number | nil }      -- epoch seconds, with sequence = "AT_TIMESTAMP"
-- A decimal sequence means "everything up to and including this record (and
-- sub-records <= sub_sequence of it) is done"; SHARD_END means the shard was
-- read to its end; the three position names mean "nothing done yet, start here"
-- (a lease store writes them when it creates a lease, as the KCL does).
--
-- Methods (all may yield inside kinesis.run and nginx; failures return nil, err
-- with err a kinesis.errors table, never raise):
--   store:open{ client =, stream =, stream_arn =, application =, worker_id = }
--       -> true | nil, err      called once by consumer:run() before anything else
--   store:get(shard_id) -> cp | nil (no checkpoint) | nil, err
--   store:set(shard_id, cp, expected) -> true | nil, err
--       compare-and-set: `expected` is the cp this worker last read or wrote
--       for the shard (nil: none). err.code "CheckpointConflict" when the
--       stored value is not `expected` (another writer), "LeaseLost" when this
--       worker no longer holds the shard's lease. The consumer treats both as
--       "stop processing this shard now".
--   store:list() -> { [shard_id] = cp } | nil, err
--   store:sync_shards(shards) -> true | nil, err
--       the stream's current shards, as ListShards returns them (ShardId,
--       ParentShardId, AdjacentParentShardId, HashKeyRange,
--       SequenceNumberRange), each with one added field `initial`: the cp a
--       lease created now must hold (TRIM_HORIZON for a shard whose parents
--       are read first, else the consumer's start position). Stores record
--       lineage and create leases here; memory/file only remember the list.
--   store:acquire() -> { [shard_id] = true, ... } | nil, err
--       the shards this worker may process now. memory/file: every synced
--       shard. Lease stores renew held leases and take free/expired ones here.
--   store:holds(shard_id) -> boolean
--       asked before each batch is handed to the handler (no I/O: answers from
--       what the last acquire() learnt, and false once a lease may have expired)
--   store:release(shard_id) -> true | nil, err   graceful hand-over on stop/shard end
--   store:close()                                 after the last release
--   store.renew_interval   optional number (seconds): the consumer calls
--       acquire() at least this often; absent: on every shard sync.
--   store.parent_rule      optional "strict": see docs/consumer.md
--
-- This module also offers the helpers the stores share (validation, equality,
-- sequence-number order, the two conflict errors).

local errors = require "kinesis.errors"

local type, tostring, error, math_type, pairs, ipairs = type, tostring, error, math.type, pairs, ipairs

local M = {}

local POSITIONS = { SHARD_END = true, TRIM_HORIZON = true, LATEST = true, AT_TIMESTAMP = true }
M.POSITIONS = POSITIONS

local function is_int(v)
  if math_type then return math_type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

--- Checks a cp's shape; returns true or nil, message naming the field and rule.
function M.check(cp)
  if type(cp) ~= "table" then return nil, "checkpoint must be a table" end
  local s = cp.sequence
  if type(s) ~= "string" then return nil, "checkpoint.sequence must be a string" end
  if not POSITIONS[s] and not s:match("^%d+$") then
    return nil, "checkpoint.sequence must be a decimal sequence number or one of SHARD_END, TRIM_HORIZON, LATEST, AT_TIMESTAMP"
  end
  if cp.sub_sequence ~= nil and (not is_int(cp.sub_sequence) or cp.sub_sequence < 0) then
    return nil, "checkpoint.sub_sequence must be a non-negative integer or nil"
  end
  if s == "AT_TIMESTAMP" and type(cp.timestamp) ~= "number" then
    return nil, "checkpoint.timestamp must be a number with sequence AT_TIMESTAMP"
  end
  return true
end

--- A copy holding only the cp fields (stores never keep the caller's table).
function M.copy(cp)
  if cp == nil then return nil end
  return { sequence = cp.sequence, sub_sequence = cp.sub_sequence, timestamp = cp.timestamp }
end

--- Whether two cps (either may be nil) are the same position.
function M.equal(a, b)
  if a == nil or b == nil then return a == b end
  return a.sequence == b.sequence and a.sub_sequence == b.sub_sequence and a.timestamp == b.timestamp
end

--- Orders two decimal sequence numbers (strings of any length): -1, 0, 1.
function M.compare_sequence(a, b)
  a, b = a:gsub("^0+(%d)", "%1"), b:gsub("^0+(%d)", "%1")
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

function M.conflict(shard_id, message)
  return errors.new { kind = "checkpoint", code = "CheckpointConflict", shard_id = shard_id,
    message = message or ("the checkpoint of " .. tostring(shard_id) .. " was changed by another writer") }
end

function M.lease_lost(shard_id, message)
  return errors.new { kind = "checkpoint", code = "LeaseLost", shard_id = shard_id,
    message = message or ("this worker no longer holds the lease of " .. tostring(shard_id)) }
end

--- Validates set()'s arguments for every store; raises on misuse (a
-- programming error of the caller, as DESIGN.md allows).
function M.check_set(shard_id, cp)
  if type(shard_id) ~= "string" or shard_id == "" then
    error("kinesis.checkpoints: shard_id must be a non-empty string", 3)
  end
  local ok, msg = M.check(cp)
  if not ok then error("kinesis.checkpoints: " .. msg, 3) end
end

--- The lease side of a store for one worker that reads every shard (the
-- memory and file stores): it holds whatever the consumer synced, and
-- releasing is nothing. Installs sync_shards, acquire, holds, release and
-- close into the store class `Store`.
function M.single_worker(Store)
  function Store:sync_shards(shards)
    local known = {}
    for _, s in ipairs(shards) do known[s.ShardId] = true end
    self.shards = known
    return true
  end
  function Store:acquire()
    local out = {}
    for id in pairs(self.shards) do out[id] = true end
    return out
  end
  function Store:holds(shard_id)
    return self.shards[shard_id] == true
  end
  function Store:release() return true end
  function Store:close() end
  return Store
end

-- the stores, loaded on first use
setmetatable(M, { __index = function(t, k)
  if k == "memory" or k == "file" or k == "dynamodb" then
    local mod = require("kinesis.checkpoints." .. k)
    local ctor = type(mod) == "table" and (mod.new or mod) or mod
    rawset(t, k, ctor)
    return ctor
  end
end })

return M
