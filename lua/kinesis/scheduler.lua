-- kinesis.scheduler - kinesis.run / spawn / sleep: many requests in flight
-- from coroutines in one OS thread. Inside run, a transport hands its request
-- to the shared curl multi handle and the task yields until the response is
-- complete; a stream reader (SubscribeToShard) yields until its stream has
-- news or its inactivity timer fires; sleep yields to a timer. When every task waits, the process
-- sleeps in curl_multi_poll (or nanosleep when only timers are pending).
-- Outside run the same calls block, so code need not know where it runs.

local core = require "kinesis.core"

local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local traceback = debug.traceback
local unpack = table.unpack or unpack
local monotime, block_sleep = core.monotime, core.sleep
local insert, remove, concat = table.insert, table.remove, table.concat
local type, tostring, select, error, setmetatable = type, tostring, select, error, setmetatable

local M = {}

-- Inside nginx, run/spawn/sleep map onto ngx.thread and ngx.sleep
-- (kinesis.ngx_runtime); cosockets yield by themselves there.
local function nginx()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.thread) == "table" and type(ngx.sleep) == "function" then
    return require "kinesis.ngx_runtime"
  end
  return nil
end

local current          -- the scheduler of the active run, if any
local task_of = setmetatable({}, { __mode = "k" })  -- coroutine -> task
local YIELD = {}       -- marker: a yield that belongs to the scheduler

local function pack(...) return { n = select("#", ...), ... } end

local Task = {}
Task.__index = Task
Task.__name = "kinesis.task"

local function make_ready(s, task, ...)
  task.resume_args = pack(...)
  s.ready[#s.ready + 1] = task
end

local function finish(s, task, ok, ...)
  task.done = true
  s.live = s.live - 1
  if ok then
    task.results = pack(...)
  else
    task.error = ...
    s.failed[#s.failed + 1] = task
  end
  for _, w in ipairs(task.waiters) do make_ready(s, w) end
  task.waiters = {}
end

local function resume(s, task)
  local args = task.resume_args or { n = 0 }
  task.resume_args = nil
  local res = pack(co_resume(task.co, unpack(args, 1, args.n)))
  if co_status(task.co) == "dead" then
    if res[1] then
      -- the body is wrapped in xpcall: res = { true, ok, ... }
      finish(s, task, unpack(res, 2, res.n))
    else
      finish(s, task, false, traceback(task.co, tostring(res[2])))
    end
  elseif res[2] ~= YIELD then
    -- a plain coroutine.yield inside a task: treat it as "let others run"
    make_ready(s, task)
  end
end

local function handler(e)
  if type(e) == "table" then return e end
  return traceback(tostring(e), 2)
end

local function new_task(s, fn, ...)
  local args = pack(...)
  local task = setmetatable({ waiters = {}, sched = s }, Task)
  task.co = co_create(function()
    return xpcall(function() return fn(unpack(args, 1, args.n)) end, handler)
  end)
  task_of[task.co] = task
  s.live = s.live + 1
  s.tasks[#s.tasks + 1] = task
  make_ready(s, task)
  return task
end

--- The task running now inside kinesis.run, or nil.
function M.current_task()
  if not current then return nil end
  local co = co_running()
  return co and task_of[co] or nil
end

-- timers: a binary heap of { at, task [, stream] }; each item knows its
-- position (pos) so a stream wait that ends early takes its timer out
local function heap_swap(h, i, j)
  h[i], h[j] = h[j], h[i]
  h[i].pos, h[j].pos = i, j
end

local function heap_up(h, i)
  while i > 1 do
    local p = (i - i % 2) / 2
    if h[p].at <= h[i].at then break end
    heap_swap(h, p, i)
    i = p
  end
end

local function heap_down(h, i)
  local n = #h
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and h[l].at < h[m].at then m = l end
    if r <= n and h[r].at < h[m].at then m = r end
    if m == i then break end
    heap_swap(h, m, i)
    i = m
  end
end

local function heap_push(h, item)
  h[#h + 1] = item
  item.pos = #h
  heap_up(h, #h)
end

local function heap_remove(h, item)
  local i = item.pos
  if not i or h[i] ~= item then return end
  item.pos = nil
  local last = remove(h)
  if last ~= item then
    h[i] = last
    last.pos = i
    heap_down(h, i)
    heap_up(h, i)
  end
end

local function heap_pop(h)
  local top = h[1]
  heap_remove(h, top)
  return top
end

--- Sleeps `seconds`: yields inside kinesis.run, blocks outside.
function M.sleep(seconds)
  local ngx_rt = nginx()
  if ngx_rt then return ngx_rt.sleep(seconds) end
  seconds = tonumber(seconds) or 0
  local task = M.current_task()
  if not task then
    if seconds > 0 then block_sleep(seconds) end
    return
  end
  heap_push(task.sched.timers, { at = monotime() + seconds, task = task })
  co_yield(YIELD)
end

M.now = monotime

--- Runs `req` on curl easy handle `easy` through the run's multi handle and
-- yields until it completes. Only valid inside a task.
function M.await_http(easy, req)
  local task = M.current_task()
  local s = task.sched
  local id, err = s.multi:add(easy, req)
  if not id then return nil, err end
  s.pending[id] = task
  s.inflight = s.inflight + 1
  return co_yield(YIELD)
end

--- The curl multi handle of the current run (for a task), else nil.
function M.current_multi()
  local task = M.current_task()
  return task and task.sched.multi or nil
end

--- Parks the task until the run's multi reports news for stream `id`
-- (see kinesis.curl m:read) or `timeout` seconds pass; returns "news" or
-- "timeout". Only valid inside a task.
function M.await_stream(id, timeout)
  local task = M.current_task()
  local s = task.sched
  local w = { task = task }
  if timeout then
    w.timer = { at = monotime() + (timeout > 0 and timeout or 0), task = task, stream = id }
    heap_push(s.timers, w.timer)
  end
  s.stream_waits[id] = w
  s.stream_waiting = s.stream_waiting + 1
  return co_yield(YIELD)
end

local function stream_news(s, id)
  local w = s.stream_waits[id]
  if not w then return end        -- nobody waits: the reader pulls first anyway
  s.stream_waits[id] = nil
  s.stream_waiting = s.stream_waiting - 1
  if w.timer then heap_remove(s.timers, w.timer) end
  make_ready(s, w.task, "news")
end

local function loop(s)
  while s.live > 0 do
    while #s.ready > 0 do
      local batch = s.ready
      s.ready = {}
      for i = 1, #batch do resume(s, batch[i]) end
    end
    if s.live == 0 then break end
    local timeout
    if #s.timers > 0 then
      timeout = s.timers[1].at - monotime()
      if timeout < 0 then timeout = 0 end
    end
    if s.inflight > 0 or s.stream_waiting > 0 then
      local done, err = s.multi:wait(timeout or 60)
      if not done then error("kinesis.run: " .. tostring(err and err.message or err), 0) end
      for i = 1, #done do
        local d = done[i]
        local task = s.pending[d.id]
        if d.stream then
          stream_news(s, d.id)
        elseif task then
          s.pending[d.id] = nil
          s.inflight = s.inflight - 1
          make_ready(s, task, d.resp, d.err)
        end
      end
    elseif timeout then
      if timeout > 0 then block_sleep(timeout) end
    elseif #s.ready == 0 then
      error("kinesis.run: every task is waiting for another task (deadlock)", 0)
    end
    local t = monotime()
    while #s.timers > 0 and s.timers[1].at <= t do
      local item = heap_pop(s.timers)
      if item.stream then
        -- a stream wait ran out of time
        s.stream_waits[item.stream] = nil
        s.stream_waiting = s.stream_waiting - 1
        make_ready(s, item.task, "timeout")
      else
        make_ready(s, item.task)
      end
    end
  end
end

--- Runs fn(...) as the first task and returns its results once every task
-- has finished. A task error nobody collected with task:wait() is raised
-- here, with its traceback, after the other tasks have run to completion.
function M.run(fn, ...)
  local ngx_rt = nginx()
  if ngx_rt then return ngx_rt.run(fn, ...) end
  if current then error("kinesis.run cannot be nested", 2) end
  local s = {
    ready = {}, timers = {}, pending = {}, inflight = 0, live = 0, tasks = {}, failed = {},
    stream_waits = {}, stream_waiting = 0,
    multi = require("kinesis.curl").multi(),
  }
  current = s
  local main = new_task(s, fn, ...)
  local ok, err = pcall(loop, s)
  current = nil
  s.multi:close()
  if not ok then error(err, 0) end
  return M.finish_run(s.failed, main)
end

--- The end of a run (here and in kinesis.ngx_runtime): raises the errors of
-- failed tasks nobody collected with task:wait(), else returns the first
-- task's results.
function M.finish_run(failed, main)
  local unobserved = {}
  for _, t in ipairs(failed) do
    if not t.observed then unobserved[#unobserved + 1] = tostring(t.error) end
  end
  if #unobserved > 0 then
    error("kinesis.run: " .. #unobserved .. " task(s) failed:\n" .. concat(unobserved, "\n"), 0)
  end
  return unpack(main.results, 1, main.results.n)
end

--- Starts fn(...) as a new task of the current run; returns the task.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("kinesis.spawn expects a function", 2) end
  local ngx_rt = nginx()
  if ngx_rt then return ngx_rt.spawn(fn, ...) end
  if not current then error("kinesis.spawn must be called inside kinesis.run", 2) end
  return new_task(current, fn, ...)
end

--- Waits for the task to finish: returns true, results... or false, err
-- (the error with its traceback). Yields inside a run.
function Task:wait()
  if not self.done then
    local me = M.current_task()
    if not me then error("task:wait() must be called from a task of the same run", 2) end
    if me == self then error("a task cannot wait for itself", 2) end
    insert(self.waiters, me)
    co_yield(YIELD)
  end
  if self.error ~= nil then
    self.observed = true
    return false, self.error
  end
  return true, unpack(self.results, 1, self.results.n)
end

--- Waits for every task in the list; returns an array of { ok, ... } tables.
function M.wait_all(tasks)
  local ngx_rt = nginx()
  if ngx_rt then return ngx_rt.wait_all(tasks) end
  local out = {}
  for i, t in ipairs(tasks) do out[i] = pack(t:wait()) end
  return out
end

function Task:__tostring()
  return "kinesis.task(" .. (self.done and (self.error and "failed" or "done") or "running") .. ")"
end

return M
