-- kinesis.runtime - where code runs, and everything that depends on it:
-- a plain script (calls block), a task of kinesis.run (calls yield to the
-- coroutine loop, kinesis.runtime.loop), or nginx (light threads, ngx.sleep,
-- cosockets, timers: kinesis.runtime.nginx, and which phase: init_worker
-- cannot yield, log cannot even wait). No other module tests for ngx; they
-- ask here: now, sleep, run/spawn/wait_all, park/wake, timer, exiting, log.

local core = require "kinesis.core"
local loop = require "kinesis.runtime.loop"
local taskm = require "kinesis.runtime.task"

local type, error, tonumber, rawget, ipairs, select, tostring =
  type, error, tonumber, rawget, ipairs, select, tostring
local io_stderr = io.stderr
local pack = taskm.pack
local monotime, block_sleep = core.monotime, core.sleep

local M = {}

local nginx_rt
-- the nginx runtime when running inside nginx (lua-nginx-module sets the
-- global ngx with get_phase), else nil
local function nginx()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    if not nginx_rt then nginx_rt = require "kinesis.runtime.nginx" end
    return nginx_rt
  end
  return nil
end

M.Task = taskm.Task
M.now = monotime

--- Wall-clock time: seconds since the epoch, with fraction.
function M.time()
  return core.walltime()
end

--- "plain" | "loop" (a task of kinesis.run) | "nginx".
local loop_current_task = loop.current_task
function M.where()
  -- asked on every producer:put: the common answers without a call
  if rawget(_G, "ngx") ~= nil and nginx() then return "nginx" end
  if loop_current_task() then return "loop" end
  return "plain"
end

--- The nginx phase, or nil outside nginx.
function M.phase()
  local rt = nginx()
  return rt and rt.phase() or nil
end

--- True when the caller can yield: a task of kinesis.run, or an nginx
-- phase where light threads and cosockets work.
function M.can_yield()
  local rt = nginx()
  if rt then return rt.yielding_phases[rt.phase()] == true end
  return loop.current_task() ~= nil
end

--- True when the caller can wait at all: it can yield, or blocking is
-- acceptable (a plain script; nginx's init and init_worker).
function M.can_wait()
  local rt = nginx()
  if rt then
    local ph = rt.phase()
    return rt.yielding_phases[ph] == true or rt.blocking_phases[ph] == true
  end
  return true
end

--- True where a blocking call stalls other work: inside nginx, anywhere
-- but its init phases (the blocking curl transport refuses to run there).
function M.must_not_block()
  local rt = nginx()
  if not rt then return false end
  return not rt.blocking_phases[rt.phase()]
end

--- The transport that fits here: "cosocket" inside nginx, else "curl".
function M.default_transport()
  return nginx() and "cosocket" or "curl"
end

--- Sleeps `seconds`: yields inside kinesis.run and nginx, blocks in a
-- plain script.
function M.sleep(seconds)
  seconds = tonumber(seconds) or 0
  if seconds < 0 then seconds = 0 end
  local rt = nginx()
  if rt then return rt.sleep(seconds) end
  if loop.current_task() then return loop.sleep(seconds) end
  if seconds > 0 then block_sleep(seconds) end
end

--- Runs fn(...) as the first task of a run; returns its results after
-- every task has ended (kinesis.run).
function M.run(fn, ...)
  if type(fn) ~= "function" then error("kinesis.run expects a function", 2) end
  local rt = nginx()
  if rt then return rt.run(fn, pack(...)) end
  return loop.run(fn, ...)
end

--- Starts fn(...) as a task of the current run; returns the task.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("kinesis.spawn expects a function", 2) end
  local rt = nginx()
  if rt then return rt.spawn(fn, pack(...)) end
  if not loop.current_task() then error("kinesis.spawn must be called inside kinesis.run", 2) end
  return loop.spawn(fn, ...)
end

--- Waits for every task in the list; an array of { ok, ... } tables.
function M.wait_all(tasks)
  if type(tasks) ~= "table" then error("kinesis.wait_all expects a list of tasks", 2) end
  local out = {}
  for i, t in ipairs(tasks) do out[i] = pack(t:wait()) end
  return out
end

--- The running task of kinesis.run, or nil.
function M.current_task()
  local rt = nginx()
  if rt then return rt.current_task() end
  return loop.current_task()
end

--- Parks the caller on `key` until wake(key, ...) (true, ...) or `timeout`
-- seconds (false, "timeout"). A plain script has nobody to wake it: it
-- sleeps out the timeout.
function M.park(key, timeout)
  if key == nil then error("kinesis.runtime.park: key expected", 2) end
  timeout = tonumber(timeout)
  local rt = nginx()
  if rt and rt.yielding_phases[rt.phase()] then return rt.park(key, timeout) end
  if not rt and loop.current_task() then return loop.park(key, timeout) end
  if not timeout then
    error("kinesis.runtime.park: nothing can wake a wait here (a plain script or a blocking "
      .. "nginx phase); give a timeout", 2)
  end
  if timeout > 0 then block_sleep(timeout) end
  return false, "timeout"
end

--- Wakes every caller parked on `key`; returns how many.
function M.wake(key, ...)
  local rt = nginx()
  if rt then return rt.wake(key, ...) end
  return loop.wake(key, ...)
end

--- Background work that outlives the caller: an ngx.timer inside nginx,
-- a task inside kinesis.run; nil, err in a plain script (nothing runs in
-- the background there: the caller does the work itself).
function M.timer(delay, fn, ...)
  if type(fn) ~= "function" then error("kinesis.runtime.timer expects a function", 2) end
  local rt = nginx()
  if rt then return rt.timer(delay, fn, pack(...)) end
  if loop.current_task() then return loop.timer(delay, fn, ...) end
  return nil, "no background work in a plain script (outside kinesis.run)"
end

--- True when the nginx worker is shutting down; false elsewhere.
function M.exiting()
  local rt = nginx()
  return rt and rt.exiting() or false
end

--- Per-run state for modules that keep something for the length of a
-- kinesis.run (outside nginx); nil when not in a run.
M.run_state = loop.run_state
--- Registers a poller with the current run (see kinesis.runtime.loop).
M.add_poller = loop.add_poller

--- Writes one log line: ngx.log inside nginx, stderr elsewhere.
function M.log(level, line)
  local rt = nginx()
  if rt then return rt.log(level, line) end
  io_stderr:write(line, "\n")
end

return M
