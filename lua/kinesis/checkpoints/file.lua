-- kinesis.checkpoints.file - checkpoints of one consumer process in one JSON
-- file, replaced atomically on every write (temporary file, fsync, rename,
-- fsync of the directory: kinesis.core.write_atomic), so a crash leaves the
-- previous or the new content, never half of it. One process per file: the
-- compare-and-set of set() is against what this process read and wrote.

local checkpoints = require "kinesis.checkpoints"
local errors = require "kinesis.errors"
local cjson = require("cjson").new()
local core = require "kinesis.core"

local copy, equal, check_set, check = checkpoints.copy, checkpoints.equal, checkpoints.check_set, checkpoints.check
local pairs, type, tostring, setmetatable, error = pairs, type, tostring, setmetatable, error
local open = io.open
local tointeger = math.tointeger or function(v) return v end

local FORMAT = 1

local Store = {}
Store.__index = Store
Store.__name = "kinesis.checkpoints.file"

local M = {}

local function store_error(code, message, path)
  return errors.new { kind = "checkpoint", code = code, message = message, path = path }
end

--- Creates a file store. opts.path: the checkpoint file (required).
function M.new(opts)
  if type(opts) ~= "table" then error("kinesis.checkpoints.file expects a table { path = ... }", 2) end
  if type(opts.path) ~= "string" or opts.path == "" then
    error("kinesis.checkpoints.file: path must be a non-empty string", 2)
  end
  return setmetatable({ kind = "file", path = opts.path, cps = nil, shards = {}, writes = 0 }, Store)
end

-- Reads the file: a table of cps (empty when the file does not exist).
local function load(path)
  local f = open(path, "rb")
  if not f then return { cps = {} } end
  local text = f:read("*a")
  f:close()
  -- an empty file (created beforehand, e.g. by os.tmpname) holds nothing yet;
  -- this store itself never leaves one, it replaces the file whole
  if text == "" then return { cps = {} } end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" or doc.format ~= FORMAT or type(doc.checkpoints) ~= "table" then
    return nil, store_error("CorruptCheckpoints",
      "checkpoint file " .. path .. " is not a checkpoint file of format " .. FORMAT, path)
  end
  local cps = {}
  for id, cp in pairs(doc.checkpoints) do
    if type(cp) == "table" and cp.sub_sequence ~= nil then cp.sub_sequence = tointeger(cp.sub_sequence) end
    local good, msg = check(cp)
    if type(id) ~= "string" or not good then
      return nil, store_error("CorruptCheckpoints", "checkpoint file " .. path .. ": shard " .. tostring(id) .. ": " .. tostring(msg), path)
    end
    cps[id] = copy(cp)
  end
  return { cps = cps, stream = doc.stream, application = doc.application }
end

function Store:open(info)
  info = info or {}
  local doc, err = load(self.path)
  if not doc then return nil, err end
  local stream = info.stream or info.stream_arn
  if doc.stream and stream and doc.stream ~= stream then
    return nil, store_error("CheckpointMismatch", "checkpoint file " .. self.path .. " belongs to stream " ..
      tostring(doc.stream) .. ", not " .. tostring(stream), self.path)
  end
  self.cps, self.stream, self.application = doc.cps, stream or doc.stream, info.application or doc.application
  return true
end

local function ensure(self)
  if self.cps then return true end
  return self:open {}
end

function Store:get(shard_id)
  local ok, err = ensure(self)
  if not ok then return nil, err end
  return copy(self.cps[shard_id])
end

-- Serializes the whole set in a stable order (shards sorted) and replaces the file.
local function save(self, cps)
  local ids = {}
  for id in pairs(cps) do ids[#ids + 1] = id end
  table.sort(ids)
  local parts = {}
  for i, id in ipairs(ids) do
    local cp = cps[id]
    parts[i] = cjson.encode(id) .. ":" .. cjson.encode { sequence = cp.sequence, sub_sequence = cp.sub_sequence, timestamp = cp.timestamp }
  end
  local text = '{"format":' .. FORMAT .. ',"stream":' .. cjson.encode(self.stream or "") ..
    ',"application":' .. cjson.encode(self.application or "") ..
    ',"checkpoints":{' .. table.concat(parts, ",\n") .. "}}\n"
  local ok, werr = core.write_atomic(self.path, text)
  if not ok then return nil, store_error("CheckpointWriteFailed", werr.message, self.path) end
  return true
end

function Store:set(shard_id, cp, expected)
  check_set(shard_id, cp)
  local ok, err = ensure(self)
  if not ok then return nil, err end
  if not equal(self.cps[shard_id], expected) then return nil, checkpoints.conflict(shard_id) end
  local old = self.cps[shard_id]
  self.cps[shard_id] = copy(cp)
  ok, err = save(self, self.cps)
  if not ok then
    self.cps[shard_id] = old
    return nil, err
  end
  self.writes = self.writes + 1
  return true
end

function Store:list()
  local ok, err = ensure(self)
  if not ok then return nil, err end
  local out = {}
  for id, cp in pairs(self.cps) do out[id] = copy(cp) end
  return out
end

-- one worker reads every shard: no leases
checkpoints.single_worker(Store)

return M
