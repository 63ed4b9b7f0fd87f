-- kinesis.runtime.loop - the coroutine loop behind kinesis.run outside
-- nginx: many tasks in one OS thread. A task waits by parking on a key
-- (runtime.park) until someone wakes that key or its timer fires; I/O is
-- not known here: a poller (the curl transport registers the run's multi
-- handle) is asked to wait while its requests are pending, and it wakes the
-- keys of what completed. With no poller busy the loop sleeps until the
-- next timer; with nothing to wait for and nothing ready, it is a deadlock.

local core = require "kinesis.core"
local taskm = require "kinesis.runtime.task"

local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local traceback = debug.traceback
local unpack = table.unpack or unpack
local monotime, block_sleep = core.monotime, core.sleep
local remove = table.remove
local tostring, error, setmetatable, pcall, xpcall, ipairs =
  tostring, error, setmetatable, pcall, xpcall, ipairs
local pack, handler = taskm.pack, taskm.handler

local M = {}

local current          -- the active run, if any
local task_of = setmetatable({}, { __mode = "k" })  -- coroutine -> task
local YIELD = {}       -- marker: a yield that belongs to the loop

local engine = {}

local function make_ready(run, task, args)
  task.resume_args = args
  run.ready[#run.ready + 1] = task
end

---------------------------------------------------------------- timers
-- a binary heap of { at, task, key? }; each item knows its position so a
-- park that ends early takes its timer out

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

---------------------------------------------------------------- tasks

function engine.current_task()
  if not current then return nil end
  local co = co_running()
  return co and task_of[co] or nil
end
M.current_task = engine.current_task

function engine.finished(task)
  local run = task.run
  for _, w in ipairs(task.waiters) do make_ready(run, w) end
  task.waiters = {}
end

function engine.await(task, me)
  task.waiters[#task.waiters + 1] = me
  co_yield(YIELD)
  return true
end

local function new_task(run, fn, args)
  local task = taskm.new(run, { waiters = {} })
  task.co = co_create(function()
    return xpcall(function() return fn(unpack(args, 1, args.n)) end, handler)
  end)
  task_of[task.co] = task
  make_ready(run, task, nil)
  return task
end

local function resume(run, task)
  local args = task.resume_args
  task.resume_args = nil
  local res
  if args then
    res = pack(co_resume(task.co, unpack(args, 1, args.n)))
  else
    res = pack(co_resume(task.co))
  end
  if co_status(task.co) == "dead" then
    if res[1] then
      -- the body is wrapped in xpcall: res = { true, ok, ... }
      taskm.finish(task, unpack(res, 2, res.n))
    else
      taskm.finish(task, false, traceback(task.co, tostring(res[2])))
    end
  elseif res[2] ~= YIELD then
    -- a plain coroutine.yield inside a task: "let the others run"
    make_ready(run, task, nil)
  end
end

---------------------------------------------------------------- parking

--- Parks the current task on `key` until wake(key, ...) (returns true, ...)
-- or `timeout` seconds pass (returns false, "timeout").
function M.park(key, timeout)
  local task = engine.current_task()
  local run = task.run
  local entry = { task = task, key = key }
  local list = run.parked[key]
  if not list then
    list = {}
    run.parked[key] = list
  end
  list[#list + 1] = entry
  if timeout then
    entry.at = monotime() + (timeout > 0 and timeout or 0)
    heap_push(run.timers, entry)
  end
  run.parked_count = run.parked_count + 1
  return co_yield(YIELD)
end

local function unpark(run, entry)
  local list = run.parked[entry.key]
  for i = 1, #list do
    if list[i] == entry then remove(list, i) break end
  end
  if #list == 0 then run.parked[entry.key] = nil end
  run.parked_count = run.parked_count - 1
end

--- Wakes every task parked on `key` (they get true, ...); returns how many.
function M.wake(key, ...)
  local run = current
  if not run then return 0 end
  local list = run.parked[key]
  if not list then return 0 end
  run.parked[key] = nil
  local args = pack(true, ...)
  for i = 1, #list do
    local entry = list[i]
    if entry.at then heap_remove(run.timers, entry) end
    make_ready(run, entry.task, args)
  end
  run.parked_count = run.parked_count - #list
  return #list
end

--- Sleeps `seconds` inside a task (a timer with no key).
function M.sleep(seconds)
  local task = engine.current_task()
  heap_push(task.run.timers, { at = monotime() + seconds, task = task })
  co_yield(YIELD)
end

---------------------------------------------------------------- pollers

--- Per-run state for modules that keep something for the length of a run
-- (the curl transport keeps its multi handle here); nil outside a run.
function M.run_state()
  return current and current.state or nil
end

--- Registers a poller for the current run: { pending = function() -> bool,
-- wait = function(timeout), close = function() }. wait() blocks at most
-- `timeout` seconds and wakes the keys of what completed.
function M.add_poller(poller)
  local run = current
  if not run then error("kinesis.runtime: add_poller outside kinesis.run", 2) end
  run.pollers[#run.pollers + 1] = poller
end

local function busy_poller(run)
  for _, p in ipairs(run.pollers) do
    if p.pending() then return p end
  end
  return nil
end

---------------------------------------------------------------- the loop

local function fire_timers(run)
  local t = monotime()
  local timers = run.timers
  while #timers > 0 and timers[1].at <= t do
    local item = timers[1]
    heap_remove(timers, item)
    if item.key ~= nil then
      unpark(run, item)
      make_ready(run, item.task, pack(false, "timeout"))
    else
      make_ready(run, item.task, nil)
    end
  end
end

local function loop(run)
  while run.live > 0 do
    while #run.ready > 0 do
      local batch = run.ready
      run.ready = {}
      for i = 1, #batch do resume(run, batch[i]) end
    end
    if run.live == 0 then break end
    local timeout
    if #run.timers > 0 then
      timeout = run.timers[1].at - monotime()
      if timeout < 0 then timeout = 0 end
    end
    local poller = busy_poller(run)
    if poller then
      poller.wait(timeout or 60)
    elseif timeout then
      if timeout > 0 then block_sleep(timeout) end
    elseif #run.ready == 0 then
      error("kinesis.run: every task is waiting for another task (deadlock)", 0)
    end
    fire_timers(run)
  end
end

--- Runs fn(...) as the first task and returns its results once every task
-- has finished. A task error nobody collected with task:wait() is raised
-- here, with its traceback, after the other tasks have run to completion.
function M.run(fn, ...)
  if current then error("kinesis.run cannot be nested", 2) end
  local run = {
    engine = engine, ready = {}, timers = {}, live = 0, tasks = {}, failed = {},
    parked = {}, parked_count = 0, pollers = {}, state = {},
  }
  current = run
  local main = new_task(run, fn, pack(...))
  local ok, err = pcall(loop, run)
  current = nil
  for _, p in ipairs(run.pollers) do pcall(p.close) end
  if not ok then error(err, 0) end
  return taskm.finish_run(run, main)
end

--- Starts fn(...) as a new task of the current run; returns the task.
function M.spawn(fn, ...)
  if not current then error("kinesis.spawn must be called inside kinesis.run", 3) end
  return new_task(current, fn, pack(...))
end

--- Background work inside a run: a task that first sleeps `delay`.
function M.timer(delay, fn, ...)
  local args = pack(...)
  return M.spawn(function()
    if delay and delay > 0 then M.sleep(delay) end
    return fn(unpack(args, 1, args.n))
  end)
end

return M
