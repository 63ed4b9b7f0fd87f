-- kinesis.runtime.task - the one task class of both schedulers (the
-- coroutine loop of kinesis.run and nginx light threads). A task records
-- its outcome; how a caller waits for it is the scheduler's business
-- (run.engine.await), so task:wait() reads the same everywhere.

local unpack = table.unpack or unpack
local select, setmetatable, tostring, type, error, ipairs, concat =
  select, setmetatable, tostring, type, error, ipairs, table.concat
local traceback = debug.traceback

local M = {}

local Task = {}
Task.__index = Task
Task.__name = "kinesis.task"
M.Task = Task

local function pack(...) return { n = select("#", ...), ... } end
M.pack = pack

--- The message handler every task body runs under: error tables pass as
-- they are, anything else gets the task's traceback.
function M.handler(e)
  if type(e) == "table" then return e end
  return traceback(tostring(e), 2)
end

--- A new task of `run` (a table with engine, live, tasks, failed).
function M.new(run, fields)
  local task = fields or {}
  task.run, task.done = run, false
  setmetatable(task, Task)
  run.live = run.live + 1
  run.tasks[#run.tasks + 1] = task
  return task
end

--- Records the outcome of xpcall(body): ok, results... or false, err; the
-- engine then wakes whoever waits.
function M.finish(task, ok, ...)
  local run = task.run
  task.done = true
  run.live = run.live - 1
  if ok then
    task.results = pack(...)
  else
    task.error = ...
    run.failed[#run.failed + 1] = task
  end
  run.engine.finished(task)
end

--- The end of a run: raises the errors of failed tasks nobody collected
-- with task:wait(), else returns the first task's results.
function M.finish_run(run, main)
  local unobserved = {}
  for _, t in ipairs(run.failed) do
    if not t.observed then unobserved[#unobserved + 1] = tostring(t.error) end
  end
  if #unobserved > 0 then
    error("kinesis.run: " .. #unobserved .. " task(s) failed:\n" .. concat(unobserved, "\n"), 0)
  end
  return unpack(main.results, 1, main.results.n)
end

--- Waits for the task to finish: returns true, results... or false, err
-- (the error with its traceback). Yields inside a run.
function Task:wait()
  if not self.done then
    local engine = self.run.engine
    local me = engine.current_task()
    if not me or me.run ~= self.run then
      error("task:wait() must be called from a task of the same run", 2)
    end
    if me == self then error("a task cannot wait for itself", 2) end
    local ok, err = engine.await(self, me)
    if not ok then error(err, 2) end
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

return M
