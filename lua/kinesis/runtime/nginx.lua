-- kinesis.runtime.nginx - kinesis.run and its primitives inside nginx:
-- tasks are ngx.thread light threads (cosockets yield by themselves there),
-- waiting for a task or parking on a key is an ngx.semaphore wait (so any
-- task may wait for any other, which ngx.thread.wait does not allow), sleep
-- is ngx.sleep and background work an ngx.timer. In init/init_worker, where
-- nothing can yield, tasks run to completion one after another and sleep
-- blocks (start-up only). Only kinesis.runtime requires this module.

local core = require "kinesis.core"
local taskm = require "kinesis.runtime.task"

local co_running = coroutine.running
local unpack = table.unpack or unpack
local type, tostring, error, setmetatable, ipairs, pcall, xpcall, rawget =
  type, tostring, error, setmetatable, ipairs, pcall, xpcall, rawget
local block_sleep = core.sleep
local pack, handler = taskm.pack, taskm.handler

local M = {}

-- where light threads, ngx.sleep, semaphores and cosockets work
-- (lua-nginx-module docs: ngx.sleep, ngx.thread.spawn, ngx.semaphore)
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

local function ngx() return rawget(_G, "ngx") end

function M.phase()
  local n = ngx()
  local get = n and n.get_phase
  return get and get() or "unknown"
end

local function current_co()
  return co_running() or MAIN
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

local engine = {}

function engine.current_task()
  return task_of[current_co()]
end
M.current_task = engine.current_task

function engine.finished(task)
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

function engine.await(task)
  local run = task.run
  if run.inline then
    return false, "kinesis.run: a task cannot wait for another in the nginx '" .. M.phase()
      .. "' phase (nothing can yield there)"
  end
  if run.blocked + 1 >= run.live then
    -- every live task would then be waiting for another one
    return false, "kinesis.run: every task is waiting for another task (deadlock)"
  end
  run.blocked = run.blocked + 1
  local ok, err = pcall(await, task)
  run.blocked = run.blocked - 1
  if not ok then return false, err end
  return true
end

local function run_body(task, fn, args)
  taskm.finish(task, xpcall(function() return fn(unpack(args, 1, args.n)) end, handler))
end

-- the body of a light thread: registers itself, runs, records the outcome
local function thread_body(task, fn, args)
  task_of[co_running()] = task
  run_body(task, fn, args)
end

--- Runs fn(...) as the main task and returns its results once every task
-- has ended; a task error nobody collected with task:wait() is raised here.
function M.run(fn, args)
  local co = current_co()
  if task_of[co] then error("kinesis.run cannot be nested", 3) end
  local ph = M.phase()
  local inline
  if YIELDING[ph] then
    inline = false
  elseif BLOCKING_OK[ph] then
    inline = true
  else
    error("kinesis.run cannot run in the nginx '" .. ph .. "' phase (nothing can wait there); "
      .. "start the work from ngx.timer.at(0, ...)", 3)
  end
  local run = { engine = engine, tasks = {}, failed = {}, live = 0, blocked = 0, inline = inline }
  local main = taskm.new(run, { waiting = 0, parent_co = nil })
  task_of[co] = main
  run_body(main, fn, args)
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
    local wait = ngx().thread.wait
    for _, t in ipairs(run.tasks) do
      if t.thread and t.parent_co == co then wait(t.thread) end
    end
  end
  return taskm.finish_run(run, main)
end

--- Starts fn(...) as a new task of the current run (an ngx.thread light
-- thread, which runs at once until it first waits); returns the task.
function M.spawn(fn, args)
  local co = current_co()
  local parent = task_of[co]
  if not parent then error("kinesis.spawn must be called inside kinesis.run", 3) end
  local run = parent.run
  local task = taskm.new(run, { waiting = 0, parent_co = co })
  if run.inline then
    -- nothing can yield here: the task runs to its end before spawn returns
    task_of[co] = task
    run_body(task, fn, args)
    task_of[co] = parent
  else
    task.thread = ngx().thread.spawn(thread_body, task, fn, args)
  end
  return task
end

--- Sleeps: ngx.sleep where nginx can yield, a blocking sleep in
-- init/init_worker; raises in the phases where neither is acceptable.
function M.sleep(seconds)
  local ph = M.phase()
  if YIELDING[ph] then return ngx().sleep(seconds) end
  if BLOCKING_OK[ph] then
    if seconds > 0 then block_sleep(seconds) end
    return
  end
  error("kinesis.sleep cannot wait in the nginx '" .. ph .. "' phase; "
    .. "do the work from ngx.timer.at(0, ...)", 3)
end

---------------------------------------------------------------- parking
-- one semaphore per parked key, shared by a worker's light threads

local parked = {}   -- key -> { sema, count, values }

function M.park(key, timeout)
  local p = parked[key]
  if not p then
    p = { sema = new_semaphore(), count = 0 }
    parked[key] = p
  end
  p.count = p.count + 1
  local ok, err = p.sema:wait(timeout or WAIT_SLICE)
  p.count = p.count - 1
  if p.count == 0 and parked[key] == p then parked[key] = nil end
  if ok then
    local v = p.values
    if v then return true, unpack(v, 1, v.n) end
    return true
  end
  if err == "timeout" then return false, "timeout" end
  return false, tostring(err)
end

function M.wake(key, ...)
  local p = parked[key]
  if not p or p.count == 0 then return 0 end
  parked[key] = nil       -- later parks on this key wait for the next wake
  p.values = pack(...)
  p.sema:post(p.count)
  return p.count
end

--- Background work: a zero-delay (or `delay`) ngx.timer, which outlives
-- the request that started it.
function M.timer(delay, fn, args)
  local ok, err = ngx().timer.at(delay or 0, function()
    fn(unpack(args, 1, args.n))
  end)
  if not ok then return nil, "ngx.timer.at: " .. tostring(err) end
  return true
end

function M.exiting()
  local w = ngx().worker
  return w and w.exiting and w.exiting() or false
end

--- One log line through ngx.log at the matching level.
function M.log(level, line)
  local n = ngx()
  local lv = (level == "error" and n.ERR) or (level == "warn" and n.WARN)
    or (level == "info" and n.INFO) or n.DEBUG
  n.log(lv, line)
end

return M
