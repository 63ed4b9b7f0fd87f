-- bench/concurrency.lua - PutRecord from TASKS concurrent tasks of
-- kinesis.run against the nginx stub that answers every request 20 ms late.
-- Every task loops until the deadline; only the calls completed inside the
-- measuring window (after WARMUP seconds, so connection set-up is out)
-- count. With perfect overlap the rate is TASKS x (1 / 20 ms).
--
--   lua5.4 bench/concurrency.lua TASKS PORT SECONDS [WARMUP]
--
-- Prints { tasks, rate, calls, seconds, errors, first_error, hwm_kb }.

local common = require "common"
local kinesis = require "kinesis"

local tasks, port = tonumber(arg[1]), arg[2]
local seconds, warmup = tonumber(arg[3]) or 1.5, tonumber(arg[4]) or 0.3
local client = common.client(port)
local params = common.put_record_params()
local now = common.now

local done, errors, first_error = 0, 0, nil
local t_start, t_from, t_to

kinesis.run(function()
  t_start = now()
  t_from, t_to = t_start + warmup, t_start + warmup + seconds
  local list = {}
  for i = 1, tasks do
    list[i] = kinesis.spawn(function()
      while true do
        local out, err = client:put_record(params)
        local t = now()
        if not out then
          errors = errors + 1
          first_error = first_error or tostring(err)
        end
        if t > t_from and t <= t_to and out then done = done + 1 end
        if t > t_to then break end
      end
    end)
  end
  kinesis.wait_all(list)
end)

common.emit { tasks = tasks, rate = done / seconds, calls = done, seconds = seconds, errors = errors,
  first_error = first_error }
