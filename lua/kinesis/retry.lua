-- kinesis.retry - the AWS SDKs' retry behaviour: "standard" (full-jitter
-- exponential backoff capped at 20 s, and a retry quota of 500 tokens: 5 per
-- retry, 10 after a timeout, refunded on success) and "adaptive" (standard
-- plus a client-side send-rate limiter that backs off on throttling with
-- CUBIC, as the SDKs' adaptive mode does). "off" makes one attempt.

local random, min, max, floor = math.random, math.min, math.max, math.floor
local setmetatable, type, tostring = setmetatable, type, tostring

local M = {}

local QUOTA_MAX = 500
local RETRY_COST = 5
local TIMEOUT_COST = 10
local NO_RETRY_INCREMENT = 1
M.QUOTA_MAX, M.RETRY_COST, M.TIMEOUT_COST = QUOTA_MAX, RETRY_COST, TIMEOUT_COST

local Policy = {}
Policy.__index = Policy

--- cfg: { mode = "standard" | "adaptive" | "off", max_attempts = 3,
--         base = 1 (seconds), max_backoff = 20 }
function M.new(cfg, now)
  cfg = cfg or {}
  local mode = cfg.mode or "standard"
  if mode ~= "standard" and mode ~= "adaptive" and mode ~= "off" then
    return nil, "retry.mode must be standard, adaptive or off (got " .. tostring(mode) .. ")"
  end
  local attempts = cfg.max_attempts or 3
  if type(attempts) ~= "number" or attempts < 1 or attempts ~= floor(attempts) then
    return nil, "retry.max_attempts must be a positive integer"
  end
  if mode == "off" then attempts = 1 end
  local p = setmetatable({
    mode = mode, max_attempts = attempts, base = cfg.base or 1, max_backoff = cfg.max_backoff or 20,
    quota = QUOTA_MAX, now = now,
  }, Policy)
  if mode == "adaptive" then p.limiter = M.rate_limiter(now) end
  return p
end

--- Full-jitter backoff before retry number `n` (1 = first retry).
function Policy:delay(n)
  return random() * min(self.base * 2 ^ (n - 1), self.max_backoff)
end

--- Takes the quota for retrying `err`; returns the cost taken, or nil when
-- the quota is exhausted (the error is then returned as it is).
function Policy:acquire(err)
  local cost = (err.code == "Timeout") and TIMEOUT_COST or RETRY_COST
  if self.quota < cost then return nil end
  self.quota = self.quota - cost
  return cost
end

--- Gives back what a successful request's retries took (or the small
-- increment a first-try success earns), capped at the maximum.
function Policy:release(cost)
  self.quota = min(QUOTA_MAX, self.quota + (cost or NO_RETRY_INCREMENT))
end

---------------------------------------------------------------- adaptive

-- The client-side rate limiter of the SDKs' adaptive mode: a token bucket
-- whose fill rate follows CUBIC: cut by beta on a throttle, then grown
-- along a cubic curve back past the rate where throttling began.
local BETA, SCALE, MIN_FILL, SMOOTH, BUCKET_SECONDS = 0.7, 0.4, 0.5, 0.8, 0.5

local Limiter = {}
Limiter.__index = Limiter

function M.rate_limiter(now)
  local t = now()
  return setmetatable({
    now = now, enabled = false, fill_rate = MIN_FILL, max_capacity = MIN_FILL, capacity = 0,
    last_refill = t, last_max_rate = 0, last_throttle = t, measured_rate = 0,
    measure_start = floor(t * 2) / 2, request_count = 0, last_tx_rate_bucket = floor(t * 2) / 2,
  }, Limiter)
end

function Limiter:refill()
  local t = self.now()
  local fill = (t - self.last_refill) * self.fill_rate
  self.capacity = min(self.max_capacity, self.capacity + fill)
  self.last_refill = t
end

--- Seconds to wait before sending one request (0 when it may go now);
-- takes the token.
function Limiter:acquire()
  if not self.enabled then return 0 end
  self:refill()
  if self.capacity >= 1 then
    self.capacity = self.capacity - 1
    return 0
  end
  local wait = (1 - self.capacity) / self.fill_rate
  self.capacity = self.capacity - 1
  return wait
end

function Limiter:update_measured_rate()
  local t = self.now()
  local bucket = floor(t * 2) / 2
  self.request_count = self.request_count + 1
  if bucket > self.last_tx_rate_bucket then
    local rate = self.request_count / (bucket - self.last_tx_rate_bucket)
    self.measured_rate = rate * SMOOTH + self.measured_rate * (1 - SMOOTH)
    self.request_count = 0
    self.last_tx_rate_bucket = bucket
  end
end

function Limiter:cubic_success(t)
  local dt = t - self.last_throttle
  local k = (self.last_max_rate * (1 - BETA) / SCALE) ^ (1 / 3)
  return SCALE * (dt - k) ^ 3 + self.last_max_rate
end

function Limiter:cubic_throttle(rate)
  return rate * BETA
end

function Limiter:set_rate(rate)
  self:refill()
  self.fill_rate = max(rate, MIN_FILL)
  self.max_capacity = max(rate * BUCKET_SECONDS, 1)
  self.capacity = min(self.capacity, self.max_capacity)
end

--- Records the outcome of one attempt (throttled or not).
function Limiter:update(throttled)
  self:update_measured_rate()
  local t = self.now()
  local rate
  if throttled then
    local base = self.enabled and min(self.measured_rate, self.fill_rate) or self.measured_rate
    self.last_max_rate = base
    self.last_throttle = t
    rate = self:cubic_throttle(base)
    self.enabled = true
  else
    rate = self:cubic_success(t)
  end
  self:set_rate(min(rate, 2 * self.measured_rate))
end

M.Limiter = Limiter
return M
