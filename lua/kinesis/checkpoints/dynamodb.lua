-- kinesis.checkpoints.dynamodb - many workers, one stream: shard leases and
-- checkpoints in a DynamoDB table in the KCL 2.x format, so workers of this
-- library and KCL workers can read (and hand over) each other's rows. Every
-- write is conditional (leaseCounter, leaseOwner); renewals and checkpoints of
-- one lease are serialized so they never race on the counter. See docs/leases.md.

local checkpoints = require "kinesis.checkpoints"
local leases = require "kinesis.leases"
local errors = require "kinesis.errors"
local runtime = require "kinesis.runtime"

local type, pairs, ipairs, tostring, setmetatable, error, pcall, next =
  type, pairs, ipairs, tostring, setmetatable, error, pcall, next
local format, huge = string.format, math.huge
local copy, check_set, compare_sequence = checkpoints.copy, checkpoints.check_set, checkpoints.compare_sequence
local A, KEY = leases.ATTR, leases.KEY

local M = {}

local Store = {}
Store.__index = Store
Store.__name = "kinesis.checkpoints.dynamodb"

local CONDITION_FAILED = "ConditionalCheckFailedException"
local DYNAMODB_OPTIONS = { "region", "credentials", "profile", "retry", "timeout", "transport", "verify",
  "cafile", "pool", "log", "clock", "use_fips", "use_dualstack" }

local function bad(field, rule)
  error("kinesis.checkpoints.dynamodb: " .. field .. " " .. rule, 3)
end

local function number_option(opts, name, lo, default)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < lo then bad(name, "must be a number >= " .. lo) end
  return v
end

local function store_error(code, message)
  return errors.new { kind = "checkpoint", code = code, message = message }
end

--- kinesis.checkpoints.dynamodb{ table = "name", ... } -> store (see docs/leases.md).
-- Misuse (a bad option) raises, naming the option.
function M.new(opts)
  if type(opts) ~= "table" then error("kinesis.checkpoints.dynamodb expects a table { table = ... }", 2) end
  local name = opts.table
  if type(name) ~= "string" or #name < 3 or #name > 255 or name:find("[^%w_.-]") then
    bad("table", "must be a DynamoDB table name (3-255 of a-z A-Z 0-9 _ . -)")
  end
  if opts.client ~= nil and (type(opts.client) ~= "table" or type(opts.client.update_item) ~= "function") then
    bad("client", "must be a kinesis.dynamodb client")
  end
  if opts.dynamodb ~= nil and type(opts.dynamodb) ~= "table" then bad("dynamodb", "must be a table of kinesis.dynamodb.new options") end
  if opts.endpoint ~= nil and type(opts.endpoint) ~= "string" then bad("endpoint", "must be a URL string") end
  if opts.worker_id ~= nil and (type(opts.worker_id) ~= "string" or opts.worker_id == "") then
    bad("worker_id", "must be a non-empty string")
  end
  local billing = opts.billing_mode or "PAY_PER_REQUEST"
  if billing ~= "PAY_PER_REQUEST" and billing ~= "PROVISIONED" then bad("billing_mode", 'must be "PAY_PER_REQUEST" or "PROVISIONED"') end
  if opts.clock ~= nil and type(opts.clock) ~= "function" then bad("clock", "must be a function returning monotonic seconds") end
  local failover = number_option(opts, "failover_time", 0.1, 10)
  local renew = failover / 3 - 0.025
  local self = setmetatable({
    kind = "dynamodb", table = name, opts = opts, db = opts.client,
    failover = failover,
    renew_interval = renew,
    take_interval = number_option(opts, "take_interval", 0, renew),
    max_leases = number_option(opts, "max_leases", 1, huge),
    max_steal = number_option(opts, "max_leases_to_steal", 0, 1),
    cleanup_interval = number_option(opts, "cleanup_interval", 0, 60),
    table_timeout = number_option(opts, "table_timeout", 0, 120),
    read_capacity = number_option(opts, "read_capacity", 1, 10),
    write_capacity = number_option(opts, "write_capacity", 1, 10),
    billing_mode = billing, create_table = opts.create_table ~= false,
    clock = opts.clock or runtime.now, worker_id = opts.worker_id,
    held = {}, view = {}, busy = {}, lock_keys = {}, listing = nil, parents_of = {},
    counters = { scans = 0, renewals = 0, takes = 0, steals = 0, checkpoints = 0, creates = 0,
      evictions = 0, deletes = 0, lost = 0, requests = 0 },
  }, Store)
  return self
end

---------------------------------------------------------------- plumbing

function Store:_log(ev)
  local c = self.log_client
  if c and c.logger then
    ev.table = self.table
    c:log(ev)
  end
end

-- Calls a DynamoDB operation, counting requests.
function Store:_call(method, params)
  self.counters.requests = self.counters.requests + 1
  params.TableName = self.table
  return self.db[method](self.db, params)
end

-- One holder at a time per lease: renewals, checkpoints and releases of a
-- lease are serialized, so none uses a leaseCounter another just changed.
function Store:_lock(key)
  while self.busy[key] do
    local k = self.lock_keys[key]
    if not k then k = {} self.lock_keys[key] = k end
    runtime.park(k, 0.05)
  end
  self.busy[key] = true
end

function Store:_unlock(key)
  self.busy[key] = nil
  local k = self.lock_keys[key]
  if k then runtime.wake(k) end
end

local function N(v) return { N = format("%d", v) } end
local function S(v) return { S = v } end
local function put(v) return { Action = "PUT", Value = v } end
local DELETE = { Action = "DELETE" }

-- The conditions of the KCL's writes: the counter it last saw, the owner.
local function expect(counter, owner)
  local e = { [A.counter] = { Value = N(counter) } }
  if owner then e[A.owner] = { Value = S(owner) } end
  return e
end

function Store:_update(key, expected, updates, all_new)
  return self:_call("update_item", {
    Key = { [KEY] = S(key) }, Expected = expected, AttributeUpdates = updates,
    ReturnValues = all_new and "ALL_NEW" or nil,
  })
end

---------------------------------------------------------------- the table

-- Creates the table when missing (hash key leaseKey, on-demand unless
-- billing_mode says otherwise) and waits until it is ACTIVE.
function Store:_ensure_table()
  local out, err = self:_call("describe_table", {})
  if not out then
    if err.code ~= "ResourceNotFoundException" then return nil, err end
    if not self.create_table then return nil, err end
    local p = {
      KeySchema = { { AttributeName = KEY, KeyType = "HASH" } },
      AttributeDefinitions = { { AttributeName = KEY, AttributeType = "S" } },
      BillingMode = self.billing_mode,
    }
    if self.billing_mode == "PROVISIONED" then
      p.ProvisionedThroughput = { ReadCapacityUnits = self.read_capacity, WriteCapacityUnits = self.write_capacity }
    end
    local ok
    ok, err = self:_call("create_table", p)
    if not ok and err.code ~= "ResourceInUseException" then return nil, err end
    self:_log { event = "lease_table_created", billing_mode = self.billing_mode }
  elseif out.Table.TableStatus == "ACTIVE" then
    return true
  end
  -- the model's TableExists waiter, polled faster than its 20 s: a new
  -- on-demand table is usually ACTIVE within seconds
  local done, werr = self.db:wait("table_exists", { TableName = self.table },
    { min_delay = 0.1, max_delay = 1, timeout = self.table_timeout })
  if done then return true end
  if werr.kind == "waiter" then
    return nil, store_error("LeaseTableNotActive", "lease table " .. self.table .. " did not become ACTIVE: "
      .. tostring(werr.message))
  end
  return nil, werr
end

-- A DynamoDB client from the consumer's Kinesis client configuration (its
-- region, credentials, retries, timeouts, transport, log), the endpoint from
-- the `endpoint` option or AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL.
function Store:_client(kclient)
  local cfg = {}
  local base = self.opts.dynamodb
  if not base and kclient and type(kclient.config) == "table" then
    base = {}
    for _, k in ipairs(DYNAMODB_OPTIONS) do base[k] = kclient.config[k] end
    base.region = base.region or kclient.region
  end
  for k, v in pairs(base or {}) do cfg[k] = v end
  if self.opts.endpoint then cfg.endpoint = self.opts.endpoint end
  return require("kinesis.dynamodb").new(cfg)
end

--- store:open{ client =, stream =, application =, worker_id = }: the table
-- exists (created and waited for when missing); true | nil, err.
function Store:open(info)
  info = info or {}
  self.worker_id = self.opts.worker_id or info.worker_id
  if type(self.worker_id) ~= "string" or self.worker_id == "" then
    return nil, store_error("NoWorkerId", "a worker_id is required (the consumer's, or the store's worker_id option)")
  end
  self.kinesis, self.stream, self.stream_arn = info.client, info.stream, info.stream_arn
  if not self.db then
    local c, err = self:_client(info.client)
    if not c then return nil, err end
    self.db, self.own_db = c, true
  end
  self.log_client = self.db
  return self:_ensure_table()
end

---------------------------------------------------------------- the view

-- Reads every row (a consistent Scan, every page) and notes, by this
-- worker's own monotonic clock, when each lease's counter was last seen to
-- change: that is what expiry is measured from.
function Store:_scan()
  local rows, start = {}, nil
  repeat
    local out, err = self:_call("scan", { ConsistentRead = true, ExclusiveStartKey = start })
    if not out then return nil, err end
    for _, item in ipairs(out.Items or {}) do rows[#rows + 1] = item end
    start = out.LastEvaluatedKey
  until start == nil or next(start) == nil
  self.counters.scans = self.counters.scans + 1
  local now = self.clock()
  local view = {}
  for _, item in ipairs(rows) do
    local l = leases.from_row(item)
    if l then
      local old = self.view[l.key]
      if old and old.counter == l.counter and old.owner == l.owner then
        l.seen_at = old.seen_at
      else
        l.seen_at = now
      end
      view[l.key] = l
    end
  end
  self.view, self.scanned_at = view, now
  return view
end

-- Parent links known from the rows (parentShardId) and the last listing.
function Store:_parents(id)
  local p = self.parents_of[id]
  local l = self.view[id]
  if l and l.parents then
    if not p then return l.parents end
    local out = {}
    for _, x in ipairs(p) do out[#out + 1] = x end
    for _, x in ipairs(l.parents) do out[#out + 1] = x end
    return out
  end
  return p or {}
end

-- Shards without a row that are ancestors of a shard with one: their
-- leases were deleted after they finished (or were never needed).
function Store:_finished_ancestors()
  local done, seen = {}, {}
  local function up(id, depth)
    if depth > 64 then return end
    for _, p in ipairs(self:_parents(id)) do
      if not seen[p] then
        seen[p] = true
        if not self.view[p] then done[p] = true end
        up(p, depth + 1)
      end
    end
  end
  for id in pairs(self.view) do up(id, 0) end
  return done
end

-- The stream's lineage for list() before the first sync_shards.
function Store:_learn_listing()
  if self.listing or not self.kinesis or type(self.kinesis.items) ~= "function" then return true end
  local p = self.stream_arn and { StreamARN = self.stream_arn } or { StreamName = self.stream }
  local list = {}
  for shard, err in self.kinesis:items("list_shards", p) do
    if shard == false then return nil, err end
    list[#list + 1] = shard
  end
  self:_remember_listing(list)
  return true
end

function Store:_remember_listing(shards)
  local listed, parents = {}, {}
  for _, s in ipairs(shards) do
    listed[s.ShardId] = s
    local p = {}
    if s.ParentShardId then p[#p + 1] = s.ParentShardId end
    if s.AdjacentParentShardId then p[#p + 1] = s.AdjacentParentShardId end
    parents[s.ShardId] = p
  end
  self.listing, self.listed, self.parents_of = shards, listed, parents
end

---------------------------------------------------------------- checkpoints

--- store:list() -> { [shard_id] = cp } | nil, err: every row's checkpoint,
-- and SHARD_END for finished shards whose rows were already deleted.
function Store:list()
  local view, err = self:_scan()
  if not view then return nil, err end
  local ok
  ok, err = self:_learn_listing()
  if not ok then return nil, err end
  local out = {}
  for id, l in pairs(view) do
    local h = self.held[id]
    out[id] = copy(h and h.cp or l.cp)
  end
  for id in pairs(self:_finished_ancestors()) do
    if self.listed == nil or self.listed[id] then out[id] = { sequence = "SHARD_END" } end
  end
  return out
end

--- store:get(shard_id) -> cp | nil | nil, err (a held lease answers from
-- what this worker last wrote; another from a consistent read).
function Store:get(shard_id)
  local h = self.held[shard_id]
  if h and h.cp then return copy(h.cp) end
  local out, err = self:_call("get_item", { Key = { [KEY] = S(shard_id) }, ConsistentRead = true })
  if not out then return nil, err end
  if not out.Item then return nil end
  return leases.cp_of_row(out.Item)
end

local function is_seq(s) return type(s) == "string" and s:match("^%d+$") ~= nil end

-- Whether position a is past position b (sub nil = the whole record).
local function past(a, b)
  local c = compare_sequence(a.sequence, b.sequence)
  if c ~= 0 then return c > 0 end
  if b.sub_sequence == nil then return false end
  if a.sub_sequence == nil then return true end
  return a.sub_sequence > b.sub_sequence
end

--- store:set(shard_id, cp, expected) -> true | nil, err. Written only while
-- this worker holds the lease (conditions leaseCounter and leaseOwner); a
-- refusal means the lease moved: LeaseLost, the lease is dropped, nothing is
-- retried. A position never moves backwards: one the stored checkpoint
-- already covers writes nothing.
-- (The third argument, the cp last read, is not compared: the lease guards
-- this store.)
function Store:set(shard_id, cp)
  check_set(shard_id, cp)
  self:_lock(shard_id)
  local ok, err = self:_set(shard_id, cp)
  self:_unlock(shard_id)
  return ok, err
end

function Store:_set(shard_id, cp)
  local h = self.held[shard_id]
  if not h then return nil, checkpoints.lease_lost(shard_id) end
  local cur = h.cp
  if cur and cur.sequence == "SHARD_END" then return true end
  if cur and is_seq(cur.sequence) and is_seq(cp.sequence) and not past(cp, cur) then return true end
  local updates = {
    [A.counter] = put(N(h.counter + 1)), [A.switches] = put(N(0)),
    [A.pending] = DELETE, [A.pending_sub] = DELETE,
  }
  for name, v in pairs(leases.row_of_cp(cp)) do updates[name] = put(v) end
  if cp.sequence == "SHARD_END" then
    local children = {}
    for _, s in ipairs(self.listing or {}) do
      for _, p in ipairs(self.parents_of[s.ShardId] or {}) do
        if p == shard_id then children[#children + 1] = s.ShardId end
      end
    end
    if #children > 0 then
      table.sort(children)
      updates[A.children] = put { SS = children }
    end
  end
  local sent = self.clock()
  local out, err = self:_update(shard_id, expect(h.counter, self.worker_id), updates)
  if not out then
    if err.code == CONDITION_FAILED then
      self.held[shard_id] = nil
      self.counters.lost = self.counters.lost + 1
      self:_log { event = "lease_lost", shard_id = shard_id, during = "checkpoint" }
      return nil, checkpoints.lease_lost(shard_id,
        "the lease of " .. shard_id .. " moved to another worker; the checkpoint was not written")
    end
    return nil, err
  end
  -- a checkpoint moves the counter: it renews the lease as well
  h.counter, h.renewed_at, h.cp = h.counter + 1, sent, copy(cp)
  self.counters.checkpoints = self.counters.checkpoints + 1
  return true
end

---------------------------------------------------------------- shards

-- The listed shards, parents before children (a crash between two creates
-- never leaves a child whose parent has no row).
local function parents_first(shards, parents_of)
  local by_id, order, state = {}, {}, {}
  for _, s in ipairs(shards) do by_id[s.ShardId] = s end
  local function visit(id, depth)
    if state[id] or depth > 64 then return end
    state[id] = true
    for _, p in ipairs(parents_of[id] or {}) do
      if by_id[p] then visit(p, depth + 1) end
    end
    order[#order + 1] = by_id[id]
  end
  local ids = {}
  for id in pairs(by_id) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do visit(id, 0) end
  return order
end

--- store:sync_shards(shards) -> true | nil, err: creates the lease of every
-- listed shard that has none (at shard.initial, with parentShardId and the
-- hash-key range), except finished ancestors of leased shards.
function Store:sync_shards(shards)
  self:_remember_listing(shards)
  if not self.scanned_at then
    local ok, err = self:_scan()
    if not ok then return nil, err end
  end
  local done = self:_finished_ancestors()
  for _, s in ipairs(parents_first(shards, self.parents_of)) do
    local id = s.ShardId
    if not self.view[id] and not done[id] then
      local cp = s.initial or { sequence = "TRIM_HORIZON" }
      local item = {
        [KEY] = S(id), [A.counter] = N(0), [A.switches] = N(0),
      }
      for name, v in pairs(leases.row_of_cp(cp)) do item[name] = v end
      local parents = self.parents_of[id]
      if parents and #parents > 0 then
        local ps = {}
        for i, p in ipairs(parents) do ps[i] = p end
        table.sort(ps)
        item[A.parents] = { SS = ps }
      end
      local range = s.HashKeyRange
      if range then
        item[A.starting_hash] = S(range.StartingHashKey)
        item[A.ending_hash] = S(range.EndingHashKey)
      end
      local out, err = self:_call("put_item", { Item = item, Expected = { [KEY] = { Exists = false } } })
      if out then
        self.counters.creates = self.counters.creates + 1
        local l = leases.from_row(item)
        l.seen_at = self.clock()
        self.view[id] = l
      elseif err.code ~= CONDITION_FAILED then
        return nil, err
      end
    end
  end
  return true
end

---------------------------------------------------------------- leases

-- Renews one held lease (leaseCounter N and leaseOwner me -> N + 1).
function Store:_renew(key)
  self:_lock(key)
  local h = self.held[key]
  if h then
    local sent = self.clock()
    local out, err = self:_update(key, expect(h.counter, self.worker_id), { [A.counter] = put(N(h.counter + 1)) })
    if out then
      h.counter, h.renewed_at = h.counter + 1, sent
      self.counters.renewals = self.counters.renewals + 1
    elseif err.code == CONDITION_FAILED then
      self.held[key] = nil
      self.counters.lost = self.counters.lost + 1
      self:_log { event = "lease_lost", shard_id = key, during = "renewal" }
    else
      self:_log { event = "lease_renewal_failed", shard_id = key, err = err }
    end
  end
  self:_unlock(key)
end

-- Takes (or steals) a lease seen with counter N: N -> N + 1, owner me,
-- ownerSwitchesSinceCheckpoint + 1 when the owner changes. A stolen lease
-- is used only after failover_time, when its old owner has stopped
-- processing it for certain (its holds() turned false by then).
function Store:_take(l, stolen)
  self:_lock(l.key)
  local sent = self.clock()
  local updates = { [A.counter] = put(N(l.counter + 1)), [A.owner] = put(S(self.worker_id)) }
  if l.owner ~= nil and l.owner ~= self.worker_id then
    updates[A.switches] = { Action = "ADD", Value = N(1) }
  end
  local out, err = self:_update(l.key, expect(l.counter), updates, true)
  if out and out.Attributes then
    local nl = leases.from_row(out.Attributes)
    self.held[l.key] = { counter = nl.counter, renewed_at = sent, cp = nl.cp,
      usable_at = stolen and sent + self.failover or sent }
    nl.seen_at = sent
    self.view[l.key] = nl
    if stolen then self.counters.steals = self.counters.steals + 1 else self.counters.takes = self.counters.takes + 1 end
    self:_log { event = stolen and "lease_stolen" or "lease_taken", shard_id = l.key, from = l.owner }
  elseif not out and err.code ~= CONDITION_FAILED then
    self:_log { event = "lease_take_failed", shard_id = l.key, err = err }
  end
  self:_unlock(l.key)
end

-- Deletes finished leases whose children have all started (the KCL's
-- cleanup), at most every cleanup_interval.
function Store:_cleanup(now)
  if self.cleaned_at and now - self.cleaned_at < self.cleanup_interval then return end
  self.cleaned_at = now
  local children = {}
  for id, l in pairs(self.view) do
    for _, p in ipairs(self:_parents(id)) do
      children[p] = children[p] or {}
      children[p][#children[p] + 1] = l
    end
  end
  for id, l in pairs(self.view) do
    local kids = children[id]
    if leases.finished(l) and kids and #kids > 0 and not self.held[id] then
      local started = true
      for _, k in ipairs(kids) do
        if not (k.cp and (is_seq(k.cp.sequence) or k.cp.sequence == "SHARD_END")) then started = false end
      end
      if l.children then
        for _, c in ipairs(l.children) do if not self.view[c] then started = false end end
      end
      if started then
        local out = self:_call("delete_item", { Key = { [KEY] = S(id) },
          Expected = { [A.checkpoint] = { Value = S("SHARD_END") } } })
        if out then
          self.counters.deletes = self.counters.deletes + 1
          self:_log { event = "lease_deleted", shard_id = id }
        end
      end
    end
  end
end

--- store:acquire() -> { [shard_id] = true } | nil, err: renews the held
-- leases (a checkpoint since the last renewal counts as one), and every
-- take_interval reads the table and takes or steals toward this worker's
-- share. Returns the leases this worker may process now.
function Store:acquire()
  local now = self.clock()
  for key, h in pairs(self.held) do
    if now - h.renewed_at >= self.renew_interval * 0.75 then self:_renew(key) end
  end
  now = self.clock()
  if not self.taken_at or now - self.taken_at >= self.take_interval then
    self.taken_at = now
    if not self.scanned_at or now - self.scanned_at > 0.2 then
      local ok, err = self:_scan()
      if not ok then return nil, err end
    end
    local live = {}
    for id, l in pairs(self.view) do
      if not leases.finished(l) and (self.listed == nil or self.listed[id]) then live[#live + 1] = l end
    end
    local mine = {}
    for key in pairs(self.held) do mine[key] = true end
    local plan = leases.plan(live, self.worker_id, mine, self.clock(),
      { failover = self.failover, max_leases = self.max_leases, max_steal = self.max_steal })
    self.last_plan = plan
    for _, l in ipairs(plan.take) do self:_take(l, false) end
    for _, l in ipairs(plan.steal) do self:_take(l, true) end
    self:_cleanup(now)
  end
  local out = {}
  for key in pairs(self.held) do
    if self:holds(key) then out[key] = true end
  end
  return out
end

--- store:holds(shard_id) -> boolean, without I/O: held, usable, and renewed
-- recently enough that no other worker can have seen it expire.
function Store:holds(shard_id)
  local h = self.held[shard_id]
  if not h then return false end
  local now = self.clock()
  if h.usable_at and now < h.usable_at then return false end
  return now - h.renewed_at < self.failover * 0.9
end

--- store:release(shard_id) -> true | nil, err: graceful hand-over (the
-- owner removed, the counter moved) so another worker takes it at once.
function Store:release(shard_id)
  self:_lock(shard_id)
  local h = self.held[shard_id]
  local ok, err = true, nil
  if h then
    self.held[shard_id] = nil
    local out
    out, err = self:_update(shard_id, { [A.owner] = { Value = S(self.worker_id) } },
      { [A.owner] = DELETE, [A.counter] = { Action = "ADD", Value = N(1) } })
    if out then
      self.counters.evictions = self.counters.evictions + 1
      self:_log { event = "lease_released", shard_id = shard_id }
      err = nil
    elseif err.code == CONDITION_FAILED then
      err = nil
    else
      ok = nil
    end
  end
  self:_unlock(shard_id)
  return ok, err
end

--- store:close(): releases what is still held; closes a DynamoDB client
-- the store made itself (the next open makes a new one).
function Store:close()
  for key in pairs(self.held) do pcall(self.release, self, key) end
  if self.own_db and self.db then
    pcall(self.db.close, self.db)
    self.db, self.own_db = nil, nil
  end
end

--- store:stats() -> counters (requests, scans, renewals, takes, steals,
-- checkpoints, creates, evictions, deletes, lost) and the leases held.
function Store:stats()
  local out = { held = {}, worker_id = self.worker_id }
  for k, v in pairs(self.counters) do out[k] = v end
  for key in pairs(self.held) do out.held[#out.held + 1] = key end
  table.sort(out.held)
  if self.last_plan then out.target, out.workers = self.last_plan.target, self.last_plan.workers end
  return out
end

return M
