-- bench/driver.lua - runs every benchmark of bench/ in separate processes,
-- ROUNDS times, each figure next to its baseline measured in the same round
-- (client and baseline take turns going first from round to round, HTTP
-- runs in mirrored order ABC CBA, so a drift in machine load hits both). Reports medians: value and baseline
-- are the medians over rounds, ratio is the median of the per-round ratios.
-- Peak RSS is VmHWM of each process at its end. Started by bench/run.sh,
-- which owns nginx:
--
--   lua5.4 bench/driver.lua WORKDIR PORT_FIXED PORT_LARGE PORT_SLOW PORT_GET GET_BODY
--
-- Writes bench/results.json and bench/RESULTS.md (unless BENCH_NO_WRITE).
-- Never fails on a number: the exit status says only whether it ran.

local cjson = require "cjson"

local WORK, PORT_FIXED, PORT_LARGE, PORT_SLOW = arg[1], arg[2], arg[3], arg[4]
local PORT_GET, GET_BODY = arg[5], arg[6]  -- the 10,000-record GetRecords stub and its body
assert(WORK and PORT_SLOW, "usage: driver.lua WORKDIR PORT_FIXED PORT_LARGE PORT_SLOW")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local LUA = os.getenv("BENCH_LUA") or "lua5.4"
local FLOOR, SHA_FLOOR = WORK .. "/floor", WORK .. "/sha_floor"

local only = nil
if (os.getenv("BENCH_ONLY") or "") ~= "" then
  only = {}
  for g in os.getenv("BENCH_ONLY"):gmatch("[^,%s]+") do only[g] = true end
end
local function enabled(group) return only == nil or only[group] == true end

local format, concat = string.format, table.concat

---------------------------------------------------------------------------
-- processes

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local failures = {}

--- Runs argv (a list), returns the table printed as its last JSON line, or
-- nil after recording the failure (the benchmark goes on without it).
local function run(argv, label)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = sh_quote(a) end
  local errfile = WORK .. "/stderr.txt"
  local p = io.popen(concat(parts, " ") .. " 2>" .. sh_quote(errfile), "r")
  local out = p:read("*a")
  local ok, _, code = p:close()
  local last
  for line in out:gmatch("[^\n]+") do
    if line:match("^%s*{") then last = line end
  end
  local t = last and select(2, pcall(cjson.decode, last))
  if not ok or type(t) ~= "table" then
    local msg = format("%s failed (exit %s): %s", label or argv[1], tostring(code),
      ((read_file(errfile) or "") .. out):gsub("%s+$", ""):sub(-600))
    failures[#failures + 1] = msg
    io.stderr:write("bench: ", msg, "\n")
    return nil
  end
  return t
end

local function lua(script, ...)
  return run({ LUA, "bench/" .. script, ... }, script .. " " .. concat({ ... }, " "))
end

---------------------------------------------------------------------------
-- statistics

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  if #t == 0 then return nil end
  table.sort(t)
  local h = #t // 2
  if #t % 2 == 1 then return t[h + 1] end
  return (t[h] + t[h + 1]) / 2
end

-- samples[key] = list of numbers, one per round
local samples = {}
local function add(key, v)
  if v == nil then return end
  samples[key] = samples[key] or {}
  local s = samples[key]
  s[#s + 1] = v
end
local function med(key) return samples[key] and median(samples[key]) end

-- A pair measured in the same round: both values and their ratio.
local function add_pair(key, value, baseline, ratio_of)
  if value == nil or baseline == nil then return end
  add(key .. ".value", value)
  add(key .. ".baseline", baseline)
  add(key .. ".ratio", ratio_of(value, baseline))
end

local function rate_ratio(v, b) return v / b end

---------------------------------------------------------------------------
-- the rounds

local t_begin = os.time()
local function loadavg()
  return (read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")
end
local load_begin = loadavg()

-- the pre-signed requests the floor program sends again and again
local dumped = {}
if enabled("put") then
  dumped.put_record = lua("put.lua", "dump", "put_record", PORT_FIXED, WORK) ~= nil
end
if enabled("put_records") or enabled("codec") then
  dumped.put_records = lua("put.lua", "dump", "put_records", PORT_LARGE, WORK) ~= nil
end
if enabled("codec") and not dumped.put_record then
  dumped.put_record = lua("put.lua", "dump", "put_record", PORT_FIXED, WORK) ~= nil
end

local HTTP_SECONDS = "0.5"

local function floor_run(kind, port)
  local base = WORK .. "/" .. kind
  return run({ FLOOR, read_file(base .. ".url"), base .. ".headers", base .. ".body", HTTP_SECONDS, "200" },
    "floor " .. kind)
end

-- Runs a() and b() in the order the round asks for; returns both results.
local function both(round, a, b)
  if round % 2 == 1 then
    local x = a()
    return x, b()
  end
  local y = b()
  return a(), y
end

-- Runs the functions of `fs` twice in a mirrored order that rotates with
-- the round (ABC CBA, BCA ACB, ...), so a linear drift in machine load
-- weighs on each function alike; returns for each function the list of its
-- results.
local function mirrored(round, fs)
  local n, order, res = #fs, {}, {}
  for i = 0, n - 1 do order[#order + 1] = (i + round - 1) % n + 1 end
  for i = n, 1, -1 do order[#order + 1] = order[i] end
  for k = 1, n do res[k] = {} end
  for _, k in ipairs(order) do
    local r = fs[k]()
    if r then res[k][#res[k] + 1] = r end
  end
  return res
end

local function mean_of(list, field)
  if #list == 0 then return nil end
  local sum = 0
  for _, r in ipairs(list) do sum = sum + r[field] end
  return sum / #list
end

local function http_pair(round, kind, port)
  local res = mirrored(round, {
    function() return lua("put.lua", "run", kind, port, HTTP_SECONDS) end,
    function() return lua("put.lua", "send", kind, port, HTTP_SECONDS) end,
    function() return floor_run(kind, port) end,
  })
  local client, send, floor = res[1], res[2], res[3]
  local floor_rate = mean_of(floor, "rate")
  if #client > 0 and floor_rate then
    add_pair(kind, mean_of(client, "rate"), floor_rate, rate_ratio)
    add(kind .. ".rss", mean_of(client, "hwm_kb"))
    add(kind .. ".baseline_rss", mean_of(floor, "hwm_kb"))
    add(kind .. ".connects", mean_of(client, "connects"))
    if mean_of(client, "connects") > 1 then
      failures[#failures + 1] = format("%s: the client opened %.1f connections per run; keep-alive did not hold",
        kind, mean_of(client, "connects"))
    end
    add(kind .. ".floor_connects", mean_of(floor, "connects"))
    add(kind .. ".cpu_us", mean_of(client, "cpu_us"))
    add(kind .. ".floor_cpu_us", mean_of(floor, "cpu_us"))
    add(kind .. ".floor_response_bytes", floor[1].bytes_in / floor[1].calls)
    add(kind .. ".floor_request_bytes", floor[1].body_bytes)
  end
  if #send > 0 and floor_rate then
    add_pair(kind .. "_send", mean_of(send, "rate"), floor_rate, rate_ratio)
    add(kind .. "_send.rss", mean_of(send, "hwm_kb"))
    add(kind .. "_send.baseline_rss", mean_of(floor, "hwm_kb"))
    add(kind .. "_send.cpu_us", mean_of(send, "cpu_us"))
  end
end

local sub_memory_line
local t0 = os.clock()
for round = 1, ROUNDS do
  io.stderr:write(format("bench: round %d of %d\n", round, ROUNDS))
  if dumped.put_record then http_pair(round, "put_record", PORT_FIXED) end
  if dumped.put_records then http_pair(round, "put_records", PORT_LARGE) end

  if enabled("codec") then
    -- the C codec's goals: the client end to end against the C program doing
    -- only the unavoidable work (floor.c work mode) and the AWS SDK for
    -- JavaScript v3, all on the same stub, in mirrored order
    for _, c in ipairs { { "put_record", PORT_FIXED, "1" }, { "put_records", PORT_LARGE, "500" } } do
      local kind, port, records = c[1], c[2], c[3]
      local base = WORK .. "/" .. kind
      if dumped[kind] then
        local res = mirrored(round, {
          function() return lua("put.lua", "run", kind, port, HTTP_SECONDS) end,
          function()
            return run({ FLOOR, read_file(base .. ".url"), base .. ".headers", base .. ".body", HTTP_SECONDS,
                         "50", "work", records }, "floor work " .. kind)
          end,
          function() return run({ "node", "bench/js_sdk.js", kind, port, HTTP_SECONDS }, "js_sdk " .. kind) end,
        })
        local client, work, js = res[1], res[2], res[3]
        if #client > 0 and #work > 0 then
          add_pair("work_" .. kind, mean_of(client, "rate"), mean_of(work, "rate"), rate_ratio)
          add("work_" .. kind .. ".cpu_us", mean_of(client, "cpu_us"))
          add("work_" .. kind .. ".baseline_cpu_us", mean_of(work, "cpu_us"))
          add("work_" .. kind .. ".work_us", mean_of(work, "work_us"))
          add("work_" .. kind .. ".rss", mean_of(client, "hwm_kb"))
          add("work_" .. kind .. ".baseline_rss", mean_of(work, "hwm_kb"))
        end
        if #client > 0 and #js > 0 then
          add_pair("js_" .. kind, mean_of(client, "rate"), mean_of(js, "rate"), rate_ratio)
          add("js_" .. kind .. ".cpu_us", mean_of(client, "cpu_us"))
          add("js_" .. kind .. ".baseline_cpu_us", mean_of(js, "cpu_us"))
          add("js_" .. kind .. ".rss", mean_of(client, "hwm_kb"))
          add("js_" .. kind .. ".baseline_rss", mean_of(js, "hwm_kb"))
        end
      end
    end
    if PORT_GET then
      local res = mirrored(round, {
        function() return lua("codec.lua", "get_records", PORT_GET, "1.0") end,
        function() return run({ "node", "bench/js_sdk.js", "get_records", PORT_GET, "1.0" }, "js_sdk get_records") end,
      })
      local client, js = res[1], res[2]
      if #client > 0 and #js > 0 then
        add_pair("js_get_records", mean_of(client, "rate"), mean_of(js, "rate"), rate_ratio)
        add("js_get_records.cpu_us", mean_of(client, "cpu_us"))
        add("js_get_records.baseline_cpu_us", mean_of(js, "cpu_us"))
        add("js_get_records.rss", mean_of(client, "hwm_kb"))
        add("js_get_records.baseline_rss", mean_of(js, "hwm_kb"))
      end
      local m = lua("codec.lua", "memory", GET_BODY)
      if m then
        add("decode_memory.value", m.above_kb)
        add("decode_memory.baseline", m.body_bytes / 1024)
        add("decode_memory.ratio", m.ratio)
      end
    end
  end

  if enabled("decode") then
    local d = lua("decode.lua", "5")
    if d then
      add("decode.value", d.codec_ms)
      add("decode.baseline", d.cjson_ms)
      add("decode.ratio", d.ratio)
      add("decode.walk_ms", d.walk_ms)
      add("decode.b64_ms", d.b64_ms)
      add("decode.rss", d.hwm_kb)
      samples.decode_body_bytes = { d.body_bytes }
    end
  end

  if enabled("consumer") then
    local c = lua("consumer.lua", WORK, "2", "1")
    if c then
      add("consumer.value", c.consumer_rps)
      add("consumer.baseline", c.get_records_rps)
      add("consumer.ratio", c.ratio)
      add("consumer_file.value", c.consumer_file_rps)
      add("consumer_file.ratio", c.ratio_file)
      add("consumer.rss", c.hwm_kb)
    end
  end

  if enabled("leases") then
    local l = lua("leases.lua", WORK, "1")
    if l then
      add("leases.value", l.renew_ops)
      add("leases.baseline", l.update_item_ops)
      add("leases.ratio", l.ratio_renew)
      add("leases_checkpoint.value", l.checkpoint_ops)
      add("leases_checkpoint.ratio", l.ratio_checkpoint)
      add("leases_idle.value", l.idle_per_shard_min)
      add("leases_idle.baseline", l.kcl_idle_per_shard_min)
      add("leases_busy.value", l.busy_per_shard_min)
      add("leases_busy.baseline", l.kcl_busy_per_shard_min)
      add("leases.rss", l.hwm_kb)
    end
  end

  if enabled("logging") then
    local l = lua("put.lua", "logging", "put_record", PORT_FIXED, HTTP_SECONDS)
    if l then
      add_pair("logging_on", l.on_rate, l.off_rate, rate_ratio)
      add_pair("logging_off", l.tests_ns, l.call_ns, rate_ratio)
    end
  end

  if enabled("producer") then
    -- bench/producer.lua: each producer figure beside its baseline, the
    -- order alternating with the round; 2 s each, as 1 s runs of the
    -- two swung by a third from round to round on a shared machine
    for _, pair in ipairs { { "producer_agg", "aggregate" }, { "producer_plain", "put_records" } } do
      local p, b = both(round,
        function() return lua("producer.lua", pair[1], PORT_LARGE, "2.0") end,
        function() return lua("producer.lua", pair[2], PORT_LARGE, "2.0") end)
      if p and b then
        add_pair(pair[1], p.rate, b.rate, rate_ratio)
        add(pair[1] .. ".rss", p.hwm_kb)
        add(pair[1] .. ".baseline_rss", b.hwm_kb)
      end
    end
  end

  if enabled("sign") then
    for _, size in ipairs { 100, 1048576 } do
      local key = "sign_" .. size
      local s, f = both(round,
        function() return lua("sign.lua", tostring(size), "0.3") end,
        function() return run({ SHA_FLOOR, tostring(size), "0.3" }, "sha_floor " .. size) end)
      if s and f then
        add_pair(key, s.rate, f.rate, rate_ratio)
        add(key .. ".rss", s.hwm_kb)
        add(key .. ".baseline_rss", f.hwm_kb)
      end
    end
  end

  if enabled("concurrency") then
    -- the order of the three rotates with the round
    local counts = { 1, 8, 64 }
    local results = {}
    for i = 0, 2 do
      local n = counts[(i + round - 1) % 3 + 1]
      results[n] = lua("concurrency.lua", tostring(n), PORT_SLOW, "1.0", "0.3")
    end
    for _, n in ipairs(counts) do
      local r = results[n]
      if r and results[1] then
        add_pair("tasks_" .. n, r.rate, results[1].rate, rate_ratio)
        add("tasks_" .. n .. ".rss", r.hwm_kb)
        add("tasks_" .. n .. ".errors", r.errors)
        if r.errors > 0 then
          failures[#failures + 1] = format("concurrency %d tasks: %d failed calls, first: %s", n, r.errors,
            tostring(r.first_error))
        end
      end
    end
  end

  if enabled("hashing") then
    local h = lua("hashing.lua", "0.25")
    if h then
      add("hash_key.value", h.hash_key_rate)
      add("lookup.value", h.lookup_rate)
      add("lookup_hash.value", h.lookup_hash_rate)
      add("hashing.rss", h.hwm_kb)
    end
  end

  if enabled("eventstream") then
    local e = lua("eventstream.lua", "3")
    if e then
      add("es_framing.value", e.framing_mb_s)
      add("es_full.value", e.full_mb_s)
      add("eventstream.rss", e.hwm_kb)
      samples.es_stream_bytes = { e.stream_bytes }
    end
  end
end

-- profiling: once, after the rounds
local profile = {}
if enabled("codec") then profile.codec = lua("codec.lua", "profile") end
if enabled("profile") then
  if dumped.put_record then profile.put_record = lua("put.lua", "profile", "put_record", PORT_FIXED, "0.4") end
  if dumped.put_records then profile.put_records = lua("put.lua", "profile", "put_records", PORT_LARGE, "0.4") end
  profile.decode_walk = lua("profile_decode.lua", "7")
  profile.records = lua("profile_records.lua", "0.25")
  profile.openssl = run({ SHA_FLOOR, "100", "0.3", "profile" }, "sha_floor profile")
end

-- bench/subscribe_memory.lua belongs to another engineer; run it when
-- present. Its report has several lines: the table shows the last one
-- (trimmed) with the records/s figure and VmHWM when they can be found;
-- results.json keeps the whole output.
local SUB_MEMORY = os.getenv("BENCH_SUBSCRIBE_MEMORY") or "bench/subscribe_memory.lua"
local sub_memory_output, sub_memory_rss_kb
if enabled("extra") and read_file(SUB_MEMORY) then
  io.stderr:write("bench: ", SUB_MEMORY, "\n")
  local errfile = WORK .. "/stderr.txt"
  local p = io.popen("timeout 90 " .. LUA .. " " .. sh_quote(SUB_MEMORY) .. " 2>" .. sh_quote(errfile), "r")
  local out = p:read("*a")
  local ok = p:close()
  sub_memory_output = out
  for line in out:gmatch("[^\n]+") do
    if line:match("%S") then sub_memory_line = line:match("^%s*(.-)%s*$") end
  end
  if ok and sub_memory_line then
    local rate = out:match("([%d.]+) records/s")
    if rate then sub_memory_line = format("%s; %s records/s", sub_memory_line, rate) end
    sub_memory_rss_kb = tonumber(out:match("VmHWM%D*(%d+)"))
  else
    sub_memory_line = "failed: " .. ((sub_memory_line or "") .. " " .. (read_file(errfile) or "")):gsub("%s+", " "):sub(1, 300)
  end
end
local load_end = loadavg()

---------------------------------------------------------------------------
-- the table

local function si(x, unit)
  if x == nil then return "n/a" end
  if x >= 1e6 then return format("%.2f M%s", x / 1e6, unit) end
  if x >= 1e4 then return format("%.1f k%s", x / 1e3, unit) end
  if x >= 100 then return format("%.0f %s", x, unit) end
  return format("%.3g %s", x, unit)
end
local function mib(kb) return kb and format("%.1f", kb / 1024) or "n/a" end
local function rss(key)
  local a, b = med(key .. ".rss"), med(key .. ".baseline_rss")
  if a and b then return mib(a) .. " / " .. mib(b) end
  return mib(a)
end
local function yesno(ok) if ok == nil then return "n/a" end return ok and "yes" or "NO" end
-- the median ratio, with the range over the rounds when there are several
local function ratio_text(r, fmt, key)
  if r == nil or r ~= r or r == math.huge then return "n/a" end
  fmt = fmt or "%.2f"
  local list = key and samples[key .. ".ratio"]
  if list and #list > 1 then
    local lo, hi = math.huge, -math.huge
    for _, x in ipairs(list) do lo, hi = math.min(lo, x), math.max(hi, x) end
    return format(fmt .. " (" .. fmt .. "-" .. fmt .. ")", r, lo, hi)
  end
  return format(fmt, r)
end

local rows = {}
local function row(t) rows[#rows + 1] = t end

if samples["put_record.value"] then
  local r = med("put_record.ratio")
  local rkey = "put_record"
  row { id = "put_record", measurement = "PutRecord, sequential, keep-alive, end to end",
        value = si(med("put_record.value"), "calls/s"), baseline = si(med("put_record.baseline"), "calls/s") .. " (floor.c)",
        ratio = ratio_text(r, nil, rkey), goal = ">= 0.8", met = yesno(r >= 0.8), rss = rss("put_record"),
        raw = { value = med("put_record.value"), baseline = med("put_record.baseline"), ratio = r, unit = "calls/s" } }
end
if samples["put_record_send.value"] then
  local r = med("put_record_send.ratio")
  local rkey = "put_record_send"
  row { id = "put_record_send", measurement = "PutRecord, transport:send only (pre-signed)",
        value = si(med("put_record_send.value"), "calls/s"), baseline = si(med("put_record_send.baseline"), "calls/s") .. " (floor.c)",
        ratio = ratio_text(r, nil, rkey), goal = "-", met = "-", rss = rss("put_record_send"),
        raw = { value = med("put_record_send.value"), baseline = med("put_record_send.baseline"), ratio = r, unit = "calls/s" } }
end
if samples["put_records.value"] then
  local r = med("put_records.ratio")
  local rkey = "put_records"
  row { id = "put_records", measurement = "PutRecords 500 x 100 B, end to end",
        value = si(med("put_records.value"), "calls/s"), baseline = si(med("put_records.baseline"), "calls/s") .. " (floor.c)",
        ratio = ratio_text(r, nil, rkey), goal = ">= 0.8", met = yesno(r >= 0.8), rss = rss("put_records"),
        raw = { value = med("put_records.value"), baseline = med("put_records.baseline"), ratio = r, unit = "calls/s",
                records_per_s = med("put_records.value") * 500 } }
end
if samples["put_records_send.value"] then
  local r = med("put_records_send.ratio")
  local rkey = "put_records_send"
  row { id = "put_records_send", measurement = "PutRecords, transport:send only (pre-signed)",
        value = si(med("put_records_send.value"), "calls/s"), baseline = si(med("put_records_send.baseline"), "calls/s") .. " (floor.c)",
        ratio = ratio_text(r, nil, rkey), goal = "-", met = "-", rss = rss("put_records_send"),
        raw = { value = med("put_records_send.value"), baseline = med("put_records_send.baseline"), ratio = r, unit = "calls/s" } }
end
if samples["decode.value"] then
  local r = med("decode.ratio")
  local rkey = "decode"
  row { id = "decode_get_records", measurement = "decode GetRecords, 10,000 records",
        value = format("%.2f ms", med("decode.value")), baseline = format("%.2f ms (cjson.decode)", med("decode.baseline")),
        ratio = ratio_text(r, nil, rkey), goal = "<= 0.5", met = yesno(r <= 0.5), rss = rss("decode"),
        raw = { value = med("decode.value"), baseline = med("decode.baseline"), ratio = r, unit = "ms",
                walk_ms = med("decode.walk_ms"), b64_ms = med("decode.b64_ms") } }
end
-- the C codec's goals (issue 13)
for _, g in ipairs {
  { "work_put_record", "PutRecord 100 B, end to end, vs the unavoidable-work C program", "floor.c work", 0.9 },
  { "js_put_record", "PutRecord 100 B, end to end, vs the AWS SDK for JS v3", "JS SDK", 6 },
  { "work_put_records", "PutRecords 500 x 100 B, end to end, vs the unavoidable-work C program", "floor.c work", 0.7 },
  { "js_put_records", "PutRecords 500 x 100 B, end to end, vs the AWS SDK for JS v3", "JS SDK", 5 },
  { "js_get_records", "GetRecords of 10,000 records, end to end, vs the AWS SDK for JS v3", "JS SDK", 2.5 },
} do
  local key, text, what, goal = g[1], g[2], g[3], g[4]
  if samples[key .. ".value"] then
    local r = med(key .. ".ratio")
    row { id = key, measurement = text,
          value = si(med(key .. ".value"), "calls/s") .. format(" (%.0f µs CPU)", med(key .. ".cpu_us")),
          baseline = si(med(key .. ".baseline"), "calls/s") .. format(" (%s, %.0f µs CPU)", what, med(key .. ".baseline_cpu_us")),
          ratio = ratio_text(r, nil, key), goal = ">= " .. goal, met = yesno(r >= goal), rss = rss(key),
          raw = { value = med(key .. ".value"), baseline = med(key .. ".baseline"), ratio = r, unit = "calls/s",
                  cpu_us = med(key .. ".cpu_us"), baseline_cpu_us = med(key .. ".baseline_cpu_us") } }
  end
end
if samples["decode_memory.value"] then
  local r = med("decode_memory.ratio")
  row { id = "decode_memory", measurement = "peak memory decoding the 10,000-record answer, above the RSS before",
        value = format("%.1f MiB", med("decode_memory.value") / 1024),
        baseline = format("%.1f MiB (the body)", med("decode_memory.baseline") / 1024),
        ratio = ratio_text(r, nil, "decode_memory"), goal = "<= 3", met = yesno(r <= 3), rss = "-",
        raw = { value = med("decode_memory.value"), baseline = med("decode_memory.baseline"), ratio = r, unit = "KiB" } }
end
if samples["leases.value"] then
  local r, rc = med("leases.ratio"), med("leases_checkpoint.ratio")
  row { id = "lease_renew", measurement = "lease renewals/s (conditional UpdateItem), dynalite",
        value = si(med("leases.value"), "ops/s"), baseline = si(med("leases.baseline"), "ops/s") .. " (plain UpdateItem)",
        ratio = ratio_text(r, nil, "leases"), goal = "report", met = "-", rss = rss("leases"),
        raw = { value = med("leases.value"), baseline = med("leases.baseline"), ratio = r, unit = "ops/s" } }
  row { id = "lease_checkpoint", measurement = "lease checkpoints/s (conditional UpdateItem), dynalite",
        value = si(med("leases_checkpoint.value"), "ops/s"), baseline = si(med("leases.baseline"), "ops/s") .. " (plain UpdateItem)",
        ratio = ratio_text(rc, nil, "leases_checkpoint"), goal = "report", met = "-", rss = rss("leases"),
        raw = { value = med("leases_checkpoint.value"), baseline = med("leases.baseline"), ratio = rc, unit = "ops/s" } }
  for _, k in ipairs { { "leases_idle", "idle stream" }, { "leases_busy", "checkpoint every 1.5 s" } } do
    local v, b = med(k[1] .. ".value"), med(k[1] .. ".baseline")
    row { id = k[1], measurement = "DynamoDB requests per shard per minute, 8 leases, " .. k[2],
          value = format("%.1f", v), baseline = format("%.1f (the KCL's schedule)", b),
          ratio = format("%.2f", v / b), goal = "report", met = "-", rss = "-",
          raw = { value = v, baseline = b, ratio = v / b, unit = "requests/shard/min" } }
  end
end
if samples["consumer.value"] then
  local r, rf = med("consumer.ratio"), med("consumer_file.ratio")
  row { id = "consumer", measurement = "consumer records/s, 10,000-record GetRecords answers (memory store)",
        value = si(med("consumer.value"), "records/s"), baseline = si(med("consumer.baseline"), "records/s") .. " (GetRecords alone)",
        ratio = ratio_text(r, nil, "consumer"), goal = "report", met = "-", rss = rss("consumer"),
        raw = { value = med("consumer.value"), baseline = med("consumer.baseline"), ratio = r, unit = "records/s" } }
  row { id = "consumer_file", measurement = "consumer records/s, file store (fsync per batch)",
        value = si(med("consumer_file.value"), "records/s"), baseline = si(med("consumer.baseline"), "records/s") .. " (GetRecords alone)",
        ratio = ratio_text(rf, nil, "consumer_file"), goal = "report", met = "-", rss = rss("consumer"),
        raw = { value = med("consumer_file.value"), baseline = med("consumer.baseline"), ratio = rf, unit = "records/s" } }
end
if samples["logging_on.value"] then
  local r = med("logging_on.ratio")
  row { id = "logging_on", measurement = "PutRecord with logging on (a log function that drops the events)",
        value = si(med("logging_on.value"), "calls/s"), baseline = si(med("logging_on.baseline"), "calls/s") .. " (logging off)",
        ratio = ratio_text(r, nil, "logging_on"), goal = "report", met = "-", rss = "-",
        raw = { value = med("logging_on.value"), baseline = med("logging_on.baseline"), ratio = r, unit = "calls/s" } }
  local ro = med("logging_off.ratio")
  row { id = "logging_off", measurement = "logging off: 7 logger-field tests (more than one PutRecord attempt makes)",
        value = format("%.1f ns", med("logging_off.value")), baseline = format("%.1f us", med("logging_off.baseline") / 1000) .. " (one PutRecord call)",
        ratio = format("%.4f", ro), goal = "< 0.01", met = yesno(ro < 0.01), rss = "-",
        raw = { value = med("logging_off.value"), baseline = med("logging_off.baseline"), ratio = ro, unit = "ns" } }
end
for _, pr in ipairs {
  { "producer_agg", "producer, aggregated, 100 B records to the stub", "kinesis.aggregate alone", 0.5 },
  { "producer_plain", "producer, not aggregated, 100 B records to the stub", "put_records x 500", 0.8 },
} do
  local key = pr[1]
  if samples[key .. ".value"] then
    local r = med(key .. ".ratio")
    row { id = key, measurement = pr[2],
          value = si(med(key .. ".value"), "records/s"), baseline = si(med(key .. ".baseline"), "records/s") .. " (" .. pr[3] .. ")",
          ratio = ratio_text(r, nil, key), goal = ">= " .. pr[4], met = yesno(r >= pr[4]), rss = rss(key),
          raw = { value = med(key .. ".value"), baseline = med(key .. ".baseline"), ratio = r, unit = "records/s" } }
  end
end
for _, size in ipairs { 100, 1048576 } do
  local key = "sign_" .. size
  if samples[key .. ".value"] then
    local r = med(key .. ".ratio")
    local rkey = key
    row { id = key, measurement = size == 100 and "SigV4 signatures, 100 B payload" or "SigV4 signatures, 1 MiB payload",
          value = si(med(key .. ".value"), "sig/s"), baseline = si(med(key .. ".baseline"), "hash/s") .. " (SHA-256)",
          ratio = ratio_text(r, nil, rkey), goal = "report", met = "-", rss = rss(key),
          raw = { value = med(key .. ".value"), baseline = med(key .. ".baseline"), ratio = r, unit = "signatures/s" } }
  end
end
for _, n in ipairs { 1, 8, 64 } do
  local key = "tasks_" .. n
  if samples[key .. ".value"] then
    local r = med(key .. ".ratio")
    local rkey = key
    local goal, met = "-", "-"
    if n == 64 then goal, met = ">= 40", yesno(r >= 40) end
    row { id = key, measurement = format("kinesis.run, %d task%s, 20 ms stub", n, n > 1 and "s" or ""),
          value = si(med(key .. ".value"), "calls/s"), baseline = si(med(key .. ".baseline"), "calls/s") .. " (1 task)",
          ratio = ratio_text(r, "%.1f", rkey), goal = goal, met = met, rss = rss(key),
          raw = { value = med(key .. ".value"), baseline = med(key .. ".baseline"), ratio = r, unit = "calls/s",
                  errors = med(key .. ".errors") } }
  end
end
if samples["hash_key.value"] then
  row { id = "hash_key", measurement = "partition keys hashed (kinesis.hash_key)",
        value = si(med("hash_key.value"), "/s"), baseline = "-", ratio = "-", goal = "report", met = "-",
        rss = rss("hashing"), raw = { value = med("hash_key.value"), unit = "keys/s" } }
  row { id = "lookup", measurement = "map:lookup(partition key), 1,000 shards",
        value = si(med("lookup.value"), "/s"), baseline = "-", ratio = "-", goal = "report", met = "-",
        rss = rss("hashing"), raw = { value = med("lookup.value"), unit = "lookups/s" } }
  row { id = "lookup_hash", measurement = "map:lookup_hash(hash key), 1,000 shards",
        value = si(med("lookup_hash.value"), "/s"), baseline = "-", ratio = "-", goal = "report", met = "-",
        rss = rss("hashing"), raw = { value = med("lookup_hash.value"), unit = "lookups/s" } }
end
if samples["es_framing.value"] then
  row { id = "es_framing", measurement = "event-stream decode, framing only",
        value = format("%.0f MB/s", med("es_framing.value")), baseline = "-", ratio = "-", goal = "report", met = "-",
        rss = rss("eventstream"), raw = { value = med("es_framing.value"), unit = "MB/s" } }
  row { id = "es_full", measurement = "event-stream decode + JSON + records",
        value = format("%.0f MB/s", med("es_full.value")), baseline = "-", ratio = "-", goal = "report", met = "-",
        rss = rss("eventstream"), raw = { value = med("es_full.value"), unit = "MB/s" } }
end
if sub_memory_line then
  row { id = "subscribe_memory", measurement = "SubscribeToShard memory (subscribe_memory.lua)", value = sub_memory_line,
        baseline = "-", ratio = "-", goal = "report", met = "-", rss = mib(sub_memory_rss_kb),
        raw = { line = sub_memory_line, output = sub_memory_output, hwm_kb = sub_memory_rss_kb } }
end

local COLS = {
  { "measurement", "measurement" }, { "value", "value" }, { "baseline", "baseline" },
  { "ratio", "ratio" }, { "goal", "goal" }, { "met", "met?" }, { "rss", "peak RSS MiB" },
}

local function text_table()
  local width = {}
  for i, c in ipairs(COLS) do
    width[i] = #c[2]
    for _, r in ipairs(rows) do
      if c[1] ~= "value" or r.id ~= "subscribe_memory" then width[i] = math.max(width[i], #r[c[1]]) end
    end
  end
  local lines = {}
  local function line(cells)
    local t = {}
    for i, s in ipairs(cells) do t[i] = s .. string.rep(" ", width[i] - #s) end
    lines[#lines + 1] = concat(t, "  "):gsub("%s+$", "")
  end
  local head = {}
  for i, c in ipairs(COLS) do head[i] = c[2] end
  line(head)
  local rule = {}
  for i in ipairs(COLS) do rule[i] = string.rep("-", width[i]) end
  line(rule)
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(COLS) do cells[i] = r[c[1]] end
    line(cells)
  end
  return concat(lines, "\n")
end

local function md_table()
  local lines = {}
  local head, rule = {}, {}
  for i, c in ipairs(COLS) do head[i], rule[i] = c[2], (i == 1 and "---" or "---:") end
  rule[5], rule[6] = ":---:", ":---:"
  lines[1] = "| " .. concat(head, " | ") .. " |"
  lines[2] = "|" .. concat(rule, "|") .. "|"
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(COLS) do cells[i] = (r[c[1]]:gsub("|", "\\|"):gsub(">=", "≥"):gsub("<=", "≤")) end
    lines[#lines + 1] = "| " .. concat(cells, " | ") .. " |"
  end
  return concat(lines, "\n")
end

---------------------------------------------------------------------------
-- profile notes (numbers from this run)

local function profile_lines()
  local out = {}
  -- the C codec's goals: where each call's CPU time goes, and the floor of each piece
  local pc = profile.codec
  for _, kind in ipairs { "put_record", "put_records" } do
    local key = "work_" .. kind
    if samples[key .. ".value"] then
      local p = pc and pc[kind]
      out[#out + 1] = format("- %s CPU per call: client %.1f µs, floor.c work %.1f µs (body + SHA-256 + signature %.1f µs "
        .. "of it, libcurl's send and read the rest), JS SDK %.1f µs.", kind, med(key .. ".cpu_us"),
        med(key .. ".baseline_cpu_us"), med(key .. ".work_us") or 0, med("js_" .. kind .. ".baseline_cpu_us") or 0)
      if p then
        out[#out + 1] = format("  In process (bench/codec.lua profile): validation + JSON + base64 in one C pass %.1f µs "
          .. "(%d B body), signer:sign %.1f µs of which SHA-256 of the body %.1f µs, decoding the %d B answer %.1f µs "
          .. "(floor.c only reads it), the whole pipeline with an in-memory transport %.1f µs.", p.encode_us,
          p.body_bytes, p.sign_us, p.sha256_us, p.answer_bytes, p.decode_us, p.in_memory_us)
      end
    end
  end
  if samples["work_put_records.value"] then
    out[#out + 1] = "- Where the time of each codec goal goes, piece by piece against its own floor, with callgrind "
      .. "counts: bench/README.md, \"The C codec against its floors\"."
  end
  if samples["js_get_records.value"] then
    out[#out + 1] = format("- GetRecords 10,000 records CPU per call: client %.1f ms, JS SDK %.1f ms; the decode alone "
      .. "after a full collection (decode.lua) %.2f ms: in a loop the collector also works through the previous "
      .. "answers, which the after-collection figure does not see.", med("js_get_records.cpu_us") / 1e3,
      med("js_get_records.baseline_cpu_us") / 1e3, med("decode.value") or 0)
  end
  for _, kind in ipairs { "put_record", "put_records" } do
    local p = profile[kind]
    if p then
      local parts = {}
      for _, s in ipairs(p.stages) do
        parts[#parts + 1] = format("%s %.1f µs (%.0f%%)", s.name, s.us, 100 * s.us / p.sum_us)
      end
      out[#out + 1] = format("- %s, per call, each stage timed alone: %s; sum %.1f µs, end to end %.1f µs "
        .. "(request body %d B, response %d B). The whole pipeline with an in-memory transport: %.1f µs CPU "
        .. "per call, of which signer:sign %.1f µs.", kind, concat(parts, ", "), p.sum_us, p.end_to_end_us,
        p.body_bytes, p.response_bytes, p.in_memory_cpu_us, p.sign_cpu_us)
    end
  end
  local pr = profile.put_record
  if pr and samples["put_record.baseline"] and samples["put_record_send.cpu_us"] then
    local floor_us = 1e6 / med("put_record.baseline")
    out[#out + 1] = format("- PutRecord budget: 0.8 x the floor allows %.1f µs of client work per call on top of "
      .. "the floor's %.1f µs; the Lua pipeline costs %.1f µs (in-memory transport) and the transport binding "
      .. "%.1f µs more CPU than floor.c.", floor_us / 4, floor_us, pr.in_memory_cpu_us,
      med("put_record_send.cpu_us") - med("put_record.floor_cpu_us"))
  end
  for _, kind in ipairs { "put_record", "put_records" } do
    if samples[kind .. ".cpu_us"] and samples[kind .. "_send.cpu_us"] then
      out[#out + 1] = format("- %s, CPU time per call of the calling process (user + system, medians): "
        .. "end to end %.1f µs, transport:send of the pre-signed request %.1f µs, floor.c %.1f µs; wall time "
        .. "per call: end to end %.1f µs, floor %.1f µs.", kind, med(kind .. ".cpu_us"), med(kind .. "_send.cpu_us"),
        med(kind .. ".floor_cpu_us"), 1e6 / med(kind .. ".value"), 1e6 / med(kind .. ".baseline"))
    end
  end
  local rp = profile.records
  if rp then
    local parts = {}
    for _, piece in ipairs(rp.pieces) do
      parts[#parts + 1] = format("%s %.1f µs", piece.name:gsub("^%s+", "— "), piece.us)
    end
    out[#out + 1] = "- PutRecords pieces, CPU time per call of 500 records (bench/profile_records.lua): " .. concat(parts, "; ") .. "."
    -- the unavoidable C work on top of the floor: the payload hash inside
    -- the signature and the base64 of the blobs
    local sign_us, b64_us
    for _, piece in ipairs(rp.pieces) do
      if piece.name:find("^signer:sign") then sign_us = piece.us end
      if piece.name:find("b64encode", 1, true) then b64_us = piece.us end
    end
    if sign_us and b64_us and samples["put_records.baseline"] then
      local floor_us = 1e6 / med("put_records.baseline")
      out[#out + 1] = format("- PutRecords ceiling on this loopback: the floor's call takes %.1f µs; signing the %d B "
        .. "body (SHA-256 of it) takes %.1f µs and base64 of the blobs %.1f µs, so a client doing nothing else "
        .. "would reach %.2f x the floor: the 0.8 goal cannot be met against a loopback floor, only where the "
        .. "network round trip dominates.", floor_us, rp.request_bytes, sign_us, b64_us,
        floor_us / (floor_us + sign_us + b64_us))
    end
  end
  if samples["decode.walk_ms"] then
    out[#out + 1] = format("- GetRecords decode: cjson.decode %.2f ms, shape walk (kinesis.codec dec) %.2f ms, "
      .. "of which base64 decoding in C %.2f ms.", med("decode.baseline"), med("decode.walk_ms"), med("decode.b64_ms"))
  end
  local w = profile.decode_walk
  if w then
    local function total(ms) return format("%.2f ms = %.2f x cjson", w.cjson_ms + ms, (w.cjson_ms + ms) / w.cjson_ms) end
    out[#out + 1] = format("- The shape walk alone, on the same parsed body (bench/profile_decode.lua): kinesis.codec "
      .. "%.2f ms (%s); one closure per shape, string members skipped %.2f ms (%s); plus blob/integer/timestamp "
      .. "members converted inside the structure loop %.2f ms (%s); plus members read by name instead of pairs() "
      .. "%.2f ms (%s).", w.codec_walk_ms, total(w.codec_walk_ms), w.compiled_walk_ms, total(w.compiled_walk_ms),
      w.inline_walk_ms, total(w.inline_walk_ms), w.direct_walk_ms, total(w.direct_walk_ms))
  end
  local o = profile.openssl
  if o then
    out[#out + 1] = format("- OpenSSL, 100 B: EVP_Digest(EVP_sha256()) %s/s, with a pre-fetched EVP_MD %s/s; "
      .. "HMAC-SHA256 of 200 B through EVP_Q_mac %s/s, through a reused EVP_MAC_CTX %s/s.",
      si(o.rate, ""), si(o.sha256_prefetched_rate, ""), si(o.hmac200_q_mac_rate, ""), si(o.hmac200_ctx_rate, ""))
  end
  return out
end

---------------------------------------------------------------------------
-- output

local function sh_line(cmd)
  if not cmd:find("2>&1", 1, true) then cmd = cmd .. " 2>/dev/null" end
  local p = io.popen(cmd)
  local s = p and p:read("*a") or ""
  if p then p:close() end
  return (s:gsub("%s+$", ""))
end

local cpuinfo = read_file("/proc/cpuinfo") or ""
local machine = {
  nproc = tonumber(sh_line("nproc")),
  cpu = cpuinfo:match("model name%s*:%s*([^\n]+)") or "unknown",
  kernel = sh_line("uname -sr"),
  date = os.date("!%Y-%m-%dT%H:%M:%SZ", t_begin),
  lua = sh_line(LUA .. " -v 2>&1"):match("^(%S+ %S+)") or LUA,
  libcurl = sh_line("curl-config --version"),
  openssl = sh_line("openssl version"):match("^(%S+ %S+)") or "",
  nginx = sh_line((os.getenv("NGINX") or "/usr/sbin/nginx") .. " -v 2>&1"):match("nginx/%S+") or "",
  loadavg_begin = load_begin, loadavg_end = load_end,
}

local tbl = text_table()
local notes = profile_lines()
print("")
print(format("lua-kinesis benchmarks: %d rounds, medians; %s, %s CPUs, load %s -> %s",
  ROUNDS, machine.cpu, tostring(machine.nproc), tostring(load_begin), tostring(load_end)))
print("")
print(tbl)
if #notes > 0 then
  print("")
  print("profile:")
  for _, l in ipairs(notes) do print(l) end
end
for _, f in ipairs(failures) do print("FAILED: " .. f) end
io.stderr:write(format("bench: %.0f s wall\n", os.time() - t_begin))

-- JSON with sorted keys, so successive results.json diff cleanly
local function encode(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "table" then
    local inner = indent .. "  "
    if #v > 0 or next(v) == nil then
      local items = {}
      for i, x in ipairs(v) do items[i] = inner .. encode(x, inner) end
      if #items == 0 then return "[]" end
      return "[\n" .. concat(items, ",\n") .. "\n" .. indent .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local items = {}
    for i, k in ipairs(keys) do items[i] = inner .. cjson.encode(k) .. ": " .. encode(v[k], inner) end
    return "{\n" .. concat(items, ",\n") .. "\n" .. indent .. "}"
  elseif t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return format("%.6g", v)
  end
  return cjson.encode(v)
end

if os.getenv("BENCH_NO_WRITE") ~= "1" then
  local results = { machine = machine, rounds = ROUNDS, rows = {}, samples = samples, profile = profile,
                    failures = failures }
  for i, r in ipairs(rows) do
    results.rows[i] = { id = r.id, measurement = r.measurement, goal = r.goal, met = r.met,
                        peak_rss_mib = r.rss, median = r.raw }
  end
  local suffix = LUA == "lua5.4" and "" or "-" .. LUA:gsub("[^%w.]", "")
  local f = assert(io.open("bench/results.json.tmp", "wb"))
  f:write(encode(results), "\n")
  f:close()
  assert(os.rename("bench/results.json.tmp", "bench/results" .. suffix .. ".json"))

  local md = {
    "# lua-kinesis benchmark results",
    "",
    "Produced by `make bench` (bench/run.sh); copy the table, not the numbers in prose.",
    format("Machine: %s, %s CPUs (nproc), %s; %s; %s; %s; %s.", machine.cpu, tostring(machine.nproc),
      machine.kernel, machine.lua, machine.libcurl, machine.openssl, machine.nginx),
    format("Date: %s. Load average %s at the start, %s at the end (other work shared the machine).",
      machine.date, tostring(load_begin), tostring(load_end)),
    "",
    format("Every figure is the median of %d rounds; its baseline was measured in the same round, "
      .. "and the ratio is the median of the per-round ratios (their range over the rounds in parentheses), so it need not equal "
      .. "value / baseline. HTTP figures: in each round the client, "
      .. "transport-only and floor.c processes run %s s each in mirrored order (ABC CBA, rotating per round) "
      .. "and each pair of runs is averaged. Decode figures are CPU time. Peak RSS is VmHWM of the benchmark "
      .. "process (client / baseline). The servers are a private nginx (1 worker) on loopback, on the same "
      .. "%s CPUs as the client.", ROUNDS, HTTP_SECONDS, tostring(machine.nproc)),
    "",
    md_table(),
    "",
  }
  if #notes > 0 then
    md[#md + 1] = "Where the time goes (same run; the CPU-per-call lines are medians over the rounds, "
      .. "the rest comes from one profiling pass after them):"
    md[#md + 1] = ""
    for _, l in ipairs(notes) do md[#md + 1] = l end
    md[#md + 1] = ""
  end
  if #failures > 0 then
    md[#md + 1] = "Failed during this run:"
    md[#md + 1] = ""
    for _, f in ipairs(failures) do md[#md + 1] = "- " .. f:gsub("\n", " ") end
    md[#md + 1] = ""
  end
  f = assert(io.open("bench/RESULTS" .. suffix .. ".md", "wb"))
  f:write(concat(md, "\n"))
  f:close()
end
os.exit(0)
