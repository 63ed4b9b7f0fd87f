-- Docs coverage: every public function has a reference entry in docs/ (a
-- "### `call form`" heading whose section holds a Lua example), found by
-- enumerating the public surface at run time: the kinesis module, the
-- client's methods (operations through the generated table of
-- docs/operations.md), shard maps, aggregators, tasks, and the producer,
-- consumer, checkpoint store and DynamoDB modules once they exist. Also: the
-- operations table matches the model, and relative links resolve.

local peers = require "support.peers"
local kinesis = require "kinesis"

local ROOT = peers.root

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"__rc=$?\"")
  local out = p:read("a")
  p:close()
  return tonumber(out:match("__rc=(%d+)%s*$")), out
end

local function doc_files()
  local _, out = run("ls " .. ROOT .. "/docs/*.md")
  local files = {}
  for path in out:gmatch("[^\n]+") do
    if path:match("%.md$") then files[#files + 1] = path end
  end
  return files
end

-- "client:put_record(params)" -> "client:put_record"; the name before the
-- argument list, as the entry's call form gives it.
local function entry_name(call_form)
  return (call_form:match("^([%w_%.:<>]+)"))
end

-- name -> { file =, has_example = } for every "### `...`" heading, plus the
-- operation rows of docs/operations.md ("[`client:x(params)`](...)").
local function entries()
  local found = {}
  for _, path in ipairs(doc_files()) do
    local text = read(path)
    local file = path:match("[^/]+$")
    local heading, section = nil, {}
    local function close()
      if heading then
        local name = entry_name(heading)
        if name then
          found[name] = { file = file, has_example = table.concat(section, "\n"):find("```lua", 1, true) ~= nil }
        end
      end
      heading, section = nil, {}
    end
    for line in (text .. "\n"):gmatch("(.-)\n") do
      local h = line:match("^### `(.-)`")
      if h then
        close()
        heading = h
      elseif line:match("^##? ") or line:match("^### ") then
        close()
      elseif heading then
        section[#section + 1] = line
      end
    end
    close()
    if file == "operations.md" then
      for m in text:gmatch("\n| %[`(client:[%w_]+)%(params%)`%]%(https://docs%.aws%.amazon%.com/kinesis/latest/APIReference/API_%w+%.html%) |") do
        found[m] = { file = file, has_example = true, row = true }
      end
    end
  end
  return found
end

local function methods_of(obj)
  local names = {}
  local mt = getmetatable(obj)
  local index = mt and mt.__index
  if type(index) ~= "table" then index = type(obj) == "table" and obj or {} end
  for name, v in pairs(index) do
    if type(v) == "function" and not name:match("^_") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

local function new_client()
  return assert(kinesis.new { endpoint = "http://127.0.0.1:9", region = "us-east-1",
    credentials = peers.credentials })
end

-- The modules written alongside: absent is fine, present means documented.
-- Found by file name: the producer, the consumer, every checkpoint store,
-- and whatever speaks DynamoDB or keeps leases.
local function optional_modules()
  local p = io.popen("cd " .. ROOT .. "/lua && find kinesis -name '*.lua' | sort")
  local list = {}
  for path in p:lines() do
    local name = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
    if name:match("^kinesis%.producer") or name:match("^kinesis%.consumer")
      or name:match("^kinesis%.checkpoints%.") or name:match("dynamo") or name:match("lease") then
      list[#list + 1] = name
    end
  end
  p:close()
  return list
end
-- a module's constructor is documented through the call users make
local CONSTRUCTOR_ENTRY = {
  ["kinesis.producer.new"] = "client:producer",
  ["kinesis.consumer.new"] = "client:consumer",
  ["kinesis.checkpoints.memory.new"] = "kinesis.checkpoints.memory",
  ["kinesis.checkpoints.file.new"] = "kinesis.checkpoints.file",
  ["kinesis.checkpoints.dynamodb.new"] = "kinesis.checkpoints.dynamodb",
}

local function optional(name)
  local path = ROOT .. "/lua/" .. name:gsub("%.", "/")
  local f = io.open(path .. ".lua", "r") or io.open(path .. "/init.lua", "r")
  if not f then return nil end
  f:close()
  -- the file exists: it must load
  local ok, mod = pcall(require, name)
  assert(ok, name .. " exists but does not load: " .. tostring(mod))
  return mod
end

-- Every public name, as "<receiver>.<fn>" or "<receiver>:<method>".
local function public_surface()
  local names = {}
  local function add(name) names[#names + 1] = name end

  for name, v in pairs(kinesis) do
    if type(v) == "function" then
      add("kinesis." .. name)
    elseif type(v) == "table" and not name:match("^_") then
      for sub, f in pairs(v) do
        if type(f) == "function" and not sub:match("^_") then add("kinesis." .. name .. "." .. sub) end
      end
    end
  end

  local client = new_client()
  for _, m in ipairs(methods_of(client)) do add("client:" .. m) end

  local map = assert(kinesis.shard_map { { ShardId = "shardId-0", SequenceNumberRange = { StartingSequenceNumber = "1" },
    HashKeyRange = { StartingHashKey = "0", EndingHashKey = "340282366920938463463374607431768211455" } } })
  for _, m in ipairs(methods_of(map)) do add("map:" .. m) end
  for _, m in ipairs(methods_of(kinesis.aggregator())) do add("agg:" .. m) end
  kinesis.run(function()
    local t = kinesis.spawn(function() end)
    for _, m in ipairs(methods_of(t)) do add("task:" .. m) end
    t:wait()
  end)

  for _, modname in ipairs(optional_modules()) do
    local mod = optional(modname)
    if type(mod) == "table" then
      for fname, f in pairs(mod) do
        if type(f) == "function" and not fname:match("^_") then
          local full = modname .. "." .. fname
          add(CONSTRUCTOR_ENTRY[full] or full)
        end
      end
    end
  end

  -- objects of the optional modules, built the way their docs build them
  if optional("kinesis.consumer") then
    local consumer = client:consumer { stream = "s", application = "docs", handler = function() end,
      store = kinesis.checkpoints.memory() }
    for _, m in ipairs(methods_of(consumer)) do add("consumer:" .. m) end
  end
  if optional("kinesis.producer") then
    local ok, producer = pcall(client.producer, client, { stream = "s" })
    assert(ok and producer, "client:producer{ stream = \"s\" } failed: " .. tostring(producer))
    for _, m in ipairs(methods_of(producer)) do add("producer:" .. m) end
    producer:close()
  end
  local stores = { kinesis.checkpoints.memory(), kinesis.checkpoints.file { path = os.tmpname() } }
  if optional("kinesis.checkpoints.dynamodb") then
    -- built as DESIGN.md shows it; nothing is sent before store:open
    local ok, store = pcall(kinesis.checkpoints.dynamodb, { table = "docs", client = client })
    if ok and store then stores[#stores + 1] = store end
  end
  for _, store in ipairs(stores) do
    for _, m in ipairs(methods_of(store)) do add("store:" .. m) end
  end
  client:close()

  table.sort(names)
  local unique, seen = {}, {}
  for _, n in ipairs(names) do
    if not seen[n] then seen[n], unique[#unique + 1] = true, n end
  end
  return unique
end

describe("docs", function()
  it("the operations table is what tools/gen_operations_doc.lua makes from the model", function()
    local rc, out = run("cd " .. ROOT .. " && lua5.4 tools/gen_operations_doc.lua --check")
    assert.equal(0, rc, out)
    local n = 0
    for name, op in pairs(kinesis.operations) do
      if name == op.name then n = n + 1 end
    end
    assert.equal(45, n)
  end)

  it("every public function has a reference entry with an example", function()
    local found = entries()
    local missing, no_example = {}, {}
    local surface = public_surface()
    for _, name in ipairs(surface) do
      local e = found[name]
      if not e then
        missing[#missing + 1] = name
      elseif not e.has_example then
        no_example[#no_example + 1] = name .. " (" .. e.file .. ")"
      end
    end
    assert.same({}, missing, "no '### `" .. (missing[1] or "") .. "(...)`' entry in docs/")
    assert.same({}, no_example, "entries without a ```lua example")
    -- the enumeration itself must see what it is meant to see
    assert.truthy(#surface > 90, #surface .. " public names only")
    for _, must in ipairs { "client:put_records", "client:pages", "map:lookup", "agg:add", "task:wait", "kinesis.hash_key" } do
      local present = false
      for _, n in ipairs(surface) do if n == must then present = true end end
      assert.truthy(present, must .. " not enumerated")
    end
  end)

  it("the enumeration fails on an undocumented function", function()
    -- a public function added to the kinesis table without an entry
    kinesis.undocumented_for_the_spec = function() end
    local ok, surface = pcall(public_surface)
    kinesis.undocumented_for_the_spec = nil
    assert.truthy(ok, surface)
    local found = entries()
    local flagged = false
    for _, n in ipairs(surface) do
      if n == "kinesis.undocumented_for_the_spec" and not found[n] then flagged = true end
    end
    assert.truthy(flagged)
  end)

  it("relative links of the README and docs/ lead to files that exist", function()
    local files = doc_files()
    files[#files + 1] = ROOT .. "/README.md"
    files[#files + 1] = ROOT .. "/examples/openresty/README.md"
    files[#files + 1] = ROOT .. "/bench/README.md"
    local broken = {}
    for _, path in ipairs(files) do
      local dir = path:match("^(.*)/[^/]+$")
      for target in read(path):gmatch("%]%(([^)#%s]+)[^)]*%)") do
        if not target:match("^%a+:") then
          local f = io.open(dir .. "/" .. target, "r")
          if f then f:close() else broken[#broken + 1] = path:sub(#ROOT + 2) .. " -> " .. target end
        end
      end
    end
    assert.same({}, broken)
  end)

  it("the OpenResty guide exists once: the example's README points to it", function()
    local guide = read(ROOT .. "/docs/openresty.md")
    local example = read(ROOT .. "/examples/openresty/README.md")
    assert.truthy(example:find("docs/openresty.md", 1, true))
    -- no paragraph of the guide is repeated in the example's README or the main README
    local readme = read(ROOT .. "/README.md")
    local checked = 0
    for para in guide:gmatch("\n\n([^\n][^\n]+\n[^\n]+\n[^\n]+)") do
      if not para:match("^[#|`*%-]") then
        checked = checked + 1
        assert.falsy(example:find(para, 1, true), "repeated in examples/openresty/README.md: " .. para)
        assert.falsy(readme:find(para, 1, true), "repeated in README.md: " .. para)
      end
    end
    assert.truthy(checked >= 10, checked .. " paragraphs compared")
  end)
end)
