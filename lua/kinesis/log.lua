-- kinesis.log - what the client is doing, when asked: kinesis.new{ log = fn }
-- hands every event table to fn; log = "debug" or KINESIS_LOG=debug prints
-- one line per event (stderr, or ngx.log inside nginx, through
-- kinesis.runtime). Off by default, and then free: callers test the
-- client's logger field before building an event. String values pass
-- through the client's redactor, so secrets cannot reach a log line.

local runtime = require "kinesis.runtime"

local type, tostring, pairs, ipairs, sort, concat, format, getenv, math_type, date, floor =
  type, tostring, pairs, ipairs, table.sort, table.concat, string.format, os.getenv, math.type, os.date, math.floor

local M = {}

-- fields printed first, in this order; the rest follow sorted by name
local FIRST = { "event", "op", "attempt", "status", "code", "reason", "delay" }
local IS_FIRST = {}
for _, k in ipairs(FIRST) do IS_FIRST[k] = true end

local function text(v)
  if type(v) == "number" then
    if math_type and math_type(v) == "integer" then return tostring(v) end
    if v == math.floor(v) and v > -1e15 and v < 1e15 then return format("%d", v) end
    return format("%.3f", v)
  end
  v = tostring(v)
  if v:find("[%s\"=]") then return format("%q", v):gsub("\\\n", "\\n") end
  return v
end

--- One line for an event:
-- "kinesis 2026-12-03T08:35:07.123Z event=retry op=PutRecords attempt=1 ...".
function M.format(ev)
  local t = ev.time or runtime.time()
  local parts = { "kinesis", date("!%Y-%m-%dT%H:%M:%S", floor(t)) .. format(".%03dZ", floor((t % 1) * 1000)) }
  for _, k in ipairs(FIRST) do
    local v = ev[k]
    if v ~= nil then parts[#parts + 1] = k .. "=" .. text(v) end
  end
  local rest = {}
  for k in pairs(ev) do
    local v = ev[k]
    if not IS_FIRST[k] and k ~= "time" and type(v) ~= "table" and type(v) ~= "function" then rest[#rest + 1] = k end
  end
  sort(rest)
  for _, k in ipairs(rest) do parts[#parts + 1] = k .. "=" .. text(ev[k]) end
  return concat(parts, " ")
end

--- The logger for a configuration value (a function, "debug", false or
-- nil) and a redactor (function or object with :redact); nil when off.
function M.new(option, redactor)
  if option == nil then
    local env = getenv("KINESIS_LOG")
    if env and env:lower() == "debug" then option = "debug" end
  end
  if not option then return nil end
  local sink
  if type(option) == "function" then
    sink = option
  else
    sink = function(ev) runtime.log("debug", M.format(ev)) end
  end
  local redact = redactor
  return function(ev)
    if redact then
      for k, v in pairs(ev) do
        if type(v) == "string" then ev[k] = redact:redact(v) end
      end
    end
    ev.time = ev.time or runtime.time()
    sink(ev)
  end
end

return M
