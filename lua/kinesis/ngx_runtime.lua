-- kinesis.ngx_runtime - kinesis.run / spawn / sleep / wait_all inside nginx.
-- kinesis.scheduler hands over to this module when it finds ngx.thread and
-- ngx.sleep: tasks are ngx.thread light threads (cosockets yield by
-- themselves there), task:wait() parks on an ngx.semaphore so any task may
-- wait for any other (ngx.thread.wait only serves a thread's parent), and
-- sleep is ngx.sleep. The plain scheduler's semantics hold: run returns the
-- main function's results after every task ended, and raises task errors
-- nobody collected. In init/init_worker, where nothing can yield, tasks run
-- to completion one after another and sleep blocks (start-up only).

local core = require "kinesis.core"

local co_running = coroutine.running
local traceback = debug.traceback
local unpack = table.unpack or unpack
local type, tostring, tonumber, select, error, setmetatable, ipairs, pcall, xpcall, rawget =
  type, tostring, tonumber, select, error, setmetatable, ipairs, pcall, xpcall, rawget
local monotime, block_sleep = core.monotime, core.sleep

local ngx = rawget(_G, "ngx")

local M = {}

-- where light threads, ngx.sleep and semaphores work (lua-nginx-module docs)
local YIELDING = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}
-- where blocking is tolerated: the master loading the configuration and a
-- worker starting up, before it serves anything
local BLOCKING_OK = { init = true, init_worker = true }
M.yielding_phases, M.blocking_phases = YIELDING, BLOCKING_OK

local WAIT_SLICE = 3600         -- seconds per semaphore wait; waits loop on
local MAIN = {}                 -- key for the main Lua thread (running() is nil there in 5.1)

local function phase()
  local get = ngx and ngx.get_phase
  return get and get() or "unknown"
end

local function current_co()
  return co_running() or MAIN
end

local function pack(...) return { n = select("#", ...), ... } end

local function handler(e)
  if type(e) == "table" then return e end
  return traceback(tostring(e), 2)
end

local semaphore_new
local function new_semaphore()
  if not semaphore_new then
    semaphore_new = require("ngx.semaphore").new
  end
  local sema, err = semaphore_new(0)
  if not sema then error("kinesis: ngx.semaphore.new failed: " .. tostring(err), 0) end
  return sema
end

local task_of = setmetatable({}, { __mode = "k" })  -- coroutine -> task running in it

local Task = {}
Task.__index = Task
Task.__name = "kinesis.task"

local function finish(task, res)
  local run = task.run
  task.done = true
  run.live = run.live - 1
  if res[1] then
    task.results = { n = res.n - 1, unpack(res, 2, res.n) }
  else
    task.error = res[2]
    run.failed[#run.failed + 1] = task
  end
  if task.sema and task.waiting > 0 then task.sema:post(task.waiting) end
end

-- parks the calling light thread until `task` is done
local function await(task)
  while not task.done do
    if not task.sema then task.sema = new_semaphore() end
    task.waiting = task.waiting + 1
    local ok, err = task.sema:wait(WAIT_SLICE)
    task.waiting = task.waiting - 1
    if not ok and err ~= "timeout" then
      error("kinesis: waiting for a task failed: " .. tostring(err), 0)
    end
  end
end

local function new_task(run, parent_co)
  local task = setmetatable({ run = run, done = false, waiting = 0, parent_co = parent_co }, Task)
  run.live = run.live + 1
  run.tasks[#run.tasks + 1] = task
  return task
end

-- the body of a light thread: registers itself, runs, records the outcome
local function thread_body(task, fn, args)
  task_of[co_running()] = task
  finish(task, pack(xpcall(function() return fn(unpack(args, 1, args.n)) end, handler)))
end

--- The task running now inside kinesis.run, or nil.
function M.current_task()
  return task_of[current_co()]
end

--- Runs fn(...) as the main task and returns its results once every task
-- has ended; a task error nobody collected with task:wait() is raised here.
function M.run(fn, ...)
  if type(fn) ~= "function" then error("kinesis.run expects a function", 2) end
  local co = current_co()
  if task_of[co] then error("kinesis.run cannot be nested", 2) end
  local ph = phase()
  local inline
  if YIELDING[ph] then
    inline = false
  elseif BLOCKING_OK[ph] then
    inline = true
  else
    error("kinesis.run cannot run in the nginx '" .. ph .. "' phase (nothing can wait there); "
      .. "start the work from ngx.timer.at(0, ...)", 2)
  end
  local run = { tasks = {}, failed = {}, live = 0, blocked = 0, inline = inline }
  local main = new_task(run, nil)
  task_of[co] = main
  local args = pack(...)
  finish(main, pack(xpcall(function() return fn(unpack(args, 1, args.n)) end, handler)))
  -- every task, including those spawned while we wait
  local i = 1
  while i <= #run.tasks do
    await(run.tasks[i])
    i = i + 1
  end
  task_of[co] = nil
  if not inline then
    -- reap the light threads this coroutine spawned: finished but
    -- unwaited ones stay as zombies until their parent dies, and a timer
    -- loop calling kinesis.run again and again would pile them up
    local wait = ngx.thread.wait
    for _, t in ipairs(run.tasks) do
      if t.thread and t.parent_co == co then wait(t.thread) end
    end
  end
  return require("kinesis.scheduler").finish_run(run.failed, main)
end

--- Starts fn(...) as a new task of the current run (an ngx.thread light
-- thread, which runs at once until it first waits); returns the task.
function M.spawn(fn, ...)
  if type(fn) ~= "function" then error("kinesis.spawn expects a function", 2) end
  local co = current_co()
  local parent = task_of[co]
  if not parent then error("kinesis.spawn must be called inside kinesis.run", 2) end
  local run = parent.run
  local task = new_task(run, co)
  local args = pack(...)
  if run.inline then
    -- nothing can yield here: the task runs to its end before spawn returns
    task_of[co] = task
    finish(task, pack(xpcall(function() return fn(unpack(args, 1, args.n)) end, handler)))
    task_of[co] = parent
  else
    task.thread = ngx.thread.spawn(thread_body, task, fn, args)
  end
  return task
end

--- Waits for the task to finish: returns true, results... or false, err
-- (the error with its traceback).
function Task:wait()
  if not self.done then
    local me = task_of[current_co()]
    if not me or me.run ~= self.run then
      error("task:wait() must be called from a task of the same run", 2)
    end
    if me == self then error("a task cannot wait for itself", 2) end
    local run = self.run
    if run.blocked + 1 >= run.live then
      -- every live task would then be waiting for another one
      error("kinesis.run: every task is waiting for another task (deadlock)", 2)
    end
    run.blocked = run.blocked + 1
    local ok, err = pcall(await, self)
    run.blocked = run.blocked - 1
    if not ok then error(err, 0) end
  end
  if self.error ~= nil then
    self.observed = true
    return false, self.error
  end
  return true, unpack(self.results, 1, self.results.n)
end

function Task:__tostring()
  return "kinesis.task(" .. (self.done and (self.error and "failed" or "done") or "running") .. ")"
end

--- Waits for every task in the list; returns an array of { ok, ... } tables.
function M.wait_all(tasks)
  if type(tasks) ~= "table" then error("kinesis.wait_all expects a list of tasks", 2) end
  local out = {}
  for i, t in ipairs(tasks) do out[i] = pack(t:wait()) end
  return out
end

--- Sleeps `seconds`: ngx.sleep where nginx can yield, a blocking sleep in
-- init/init_worker; raises in the phases where neither is acceptable.
function M.sleep(seconds)
  seconds = tonumber(seconds) or 0
  if seconds < 0 then seconds = 0 end
  local ph = phase()
  if YIELDING[ph] then
    return ngx.sleep(seconds)
  end
  if BLOCKING_OK[ph] then
    if seconds > 0 then block_sleep(seconds) end
    return
  end
  error("kinesis.sleep cannot wait in the nginx '" .. ph .. "' phase; "
    .. "do the work from ngx.timer.at(0, ...)", 2)
end

M.now = monotime

return M
