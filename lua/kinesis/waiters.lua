-- kinesis.waiters - client:wait(name, params, opts): polls an operation until
-- an acceptor says success or failure, with the AWS SDKs' waiter backoff
-- (exponential from min_delay, capped at max_delay, full jitter, trimmed to
-- the time left). stream_exists, stream_not_exists and channel_active come
-- from the model; consumer_active and consumer_not_exists are our own. Each
-- service has its own set (the DynamoDB client: table_exists, table_not_exists).

local errors = require "kinesis.errors"
local path_get = require("kinesis.paging").path_get

local floor, log, random, min, max = math.floor, math.log, math.random, math.min, math.max
local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable

local M = {}

local function snake(name)
  return (name:gsub("(%l)(%u)", "%1_%2"):lower())
end

-- Waiters the model does not declare, by service name. Kinesis consumers
-- have none in the model; these follow DescribeStreamConsumer.
local EXTRA = {
  kinesis = {
    consumer_active = {
      operation = "DescribeStreamConsumer", min_delay = 1, max_delay = 30, max_attempts = 60,
      acceptors = {
        { state = "success", path = "ConsumerDescription.ConsumerStatus", expected = "ACTIVE", comparator = "stringEquals" },
        { state = "retry", path = "ConsumerDescription.ConsumerStatus", expected = "CREATING", comparator = "stringEquals" },
        { state = "failure", path = "ConsumerDescription.ConsumerStatus", expected = "DELETING", comparator = "stringEquals" },
      },
    },
    consumer_not_exists = {
      operation = "DescribeStreamConsumer", min_delay = 1, max_delay = 30, max_attempts = 60,
      acceptors = { { state = "success", error = "ResourceNotFoundException" } },
    },
  },
}

-- The waiters of a service descriptor (kinesis.client.KINESIS,
-- kinesis.dynamodb.SERVICE): name -> { operation =, acceptors =, min_delay
-- =, max_delay =, max_attempts = }, from the waiters its generated model
-- puts on each operation, plus EXTRA; built once per descriptor.
local built = setmetatable({}, { __mode = "k" })
function M.of(service)
  local ws = built[service]
  if ws then return ws end
  ws = {}
  for _, op in pairs(service.operations) do
    -- operations may be listed under two keys (name and method)
    for wname, w in pairs(op.waiters or {}) do
      ws[snake(wname)] = {
        operation = op.name, acceptors = w.acceptors, min_delay = w.min_delay,
        max_delay = w.max_delay, max_attempts = w.max_attempts,
      }
    end
  end
  for name, w in pairs(EXTRA[service.name] or {}) do ws[name] = w end
  built[service] = ws
  return ws
end

M.WAITERS = M.of(require("kinesis.client").KINESIS)

local function matches(acc, out, err)
  if acc.error then
    return err ~= nil and err.code == acc.error
  end
  if acc.success ~= nil then
    return (out ~= nil) == acc.success
  end
  if not out then return false end
  local v = path_get(out, acc.path)
  if acc.comparator == "stringEquals" or acc.comparator == "booleanEquals" then
    return tostring(v) == tostring(acc.expected)
  end
  return false
end

--- The SDKs' waiter delay for `attempt` (1-based), before trimming.
function M.delay(attempt, min_delay, max_delay)
  local d
  local ceiling = log(max_delay / min_delay) / log(2) + 1
  if attempt > ceiling then d = max_delay else d = min_delay * 2 ^ (attempt - 1) end
  d = min(d, max_delay)
  return min_delay + random() * (d - min_delay)
end

--- Polls until success; returns the last response, or nil, err.
-- opts: delay (= min_delay), min_delay, max_delay, max_attempts, timeout,
-- and sleep/now (defaults from the client's runtime).
function M.wait(client, name, params, opts)
  local waiters = M.of(client.service)
  local w = waiters[name] or waiters[snake(name)]
  if not w then
    local names = {}
    for n in pairs(waiters) do names[#names + 1] = n end
    table.sort(names)
    error("kinesis: unknown waiter " .. tostring(name) .. " (waiters: " .. table.concat(names, ", ") .. ")", 3)
  end
  opts = opts or {}
  local min_delay = opts.min_delay or opts.delay or w.min_delay
  local max_delay = max(opts.max_delay or w.max_delay, min_delay)
  local max_attempts = opts.max_attempts or (not opts.timeout and w.max_attempts) or nil
  local sleep, now = client:runtime()
  local deadline = opts.timeout and now() + opts.timeout
  local attempt = 0
  while true do
    attempt = attempt + 1
    local out, err = client:call(w.operation, params)
    local state
    for _, acc in ipairs(w.acceptors) do
      if matches(acc, out, err) then state = acc.state break end
    end
    if state == "success" then return out or {}, nil, attempt end
    if state == "failure" then
      return nil, errors.new { kind = "waiter", code = "WaiterFailure", op = w.operation,
        message = ("%s reached a failure state after %d attempts"):format(name, attempt), cause = err }
    end
    if not state and err then
      -- an error no acceptor expects ends the wait at once
      return nil, err
    end
    if max_attempts and attempt >= max_attempts then
      return nil, errors.new { kind = "waiter", code = "WaiterTimeout", op = w.operation,
        message = ("%s gave up after %d attempts"):format(name, attempt), attempts = attempt }
    end
    local d = M.delay(attempt, min_delay, max_delay)
    if deadline then
      local left = deadline - now()
      if left <= 0 then
        return nil, errors.new { kind = "waiter", code = "WaiterTimeout", op = w.operation,
          message = ("%s gave up after %.1f s (%d attempts)"):format(name, opts.timeout, attempt), attempts = attempt }
      end
      if left - d <= min_delay then d = max(0, min(d, left - min_delay)) end
      if d <= 0 then d = min(left, min_delay) end
    end
    sleep(d)
  end
end

M.snake = snake
return M
