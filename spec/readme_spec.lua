-- The README's claims: the version it names, the operation count, that the
-- methods its examples call exist, that it leads to every page of docs/,
-- and that it stays a short first read (the tables live in docs/ and bench/).
-- spec/newcomer_spec.lua runs its commands; spec/docs_spec.lua checks docs/.

local model = require "kinesis.model"
local kinesis = require "kinesis"
local ROOT = require("support.peers").root

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function code_blocks(text, lang)
  local blocks = {}
  for body in text:gmatch("\n```" .. lang .. "\n(.-)\n```") do blocks[#blocks + 1] = body end
  return blocks
end

describe("README", function()
  local text = read(ROOT .. "/README.md")

  it("names the version kinesis._VERSION reports", function()
    assert.truthy(text:find("Version " .. kinesis._VERSION .. " (`kinesis._VERSION`)", 1, true))
    assert.truthy(text:find("# " .. kinesis._VERSION, 1, true), "the version check line shows another version")
    assert.equal("0.1.0", kinesis._VERSION)
  end)

  it("counts the operations of the model", function()
    local n = 0
    for _ in pairs(model.operations) do n = n + 1 end
    assert.equal(45, n)
    assert.truthy(text:find("(45, the 2026 Channel operations", 1, true))
    assert.truthy(text:find("all 45 operations", 1, true))
  end)

  it("calls only methods and functions that exist", function()
    local client = assert(kinesis.new { endpoint = "http://127.0.0.1:9", region = "us-east-1",
      credentials = { access_key_id = "a", secret_access_key = "b" } })
    local seen = 0
    for _, block in ipairs(code_blocks(text, "lua")) do
      for method in block:gmatch("client:([%w_]+)") do
        seen = seen + 1
        assert.is_function(client[method], "README calls client:" .. method)
      end
      for fn in block:gmatch("kinesis%.([%w_]+)") do
        assert.is_not_nil(kinesis[fn], "README uses kinesis." .. fn)
      end
    end
    assert.truthy(seen >= 8, "only " .. seen .. " client calls found")
    client:close()
  end)

  it("leads to every page of docs/ (directly or through docs/README.md)", function()
    local index = read(ROOT .. "/docs/README.md")
    assert.truthy(text:find("(docs/README.md)", 1, true))
    local p = io.popen("ls " .. ROOT .. "/docs")
    for file in p:lines() do
      if file:match("%.md$") and file ~= "README.md" then
        assert.truthy(index:find("(" .. file .. ")", 1, true), "docs/README.md does not link " .. file)
      end
    end
    p:close()
    for _, page in ipairs { "configuration", "operations", "errors", "concurrency", "producer", "consumer", "leases", "openresty", "logging" } do
      assert.truthy(text:find("(docs/" .. page .. ".md)", 1, true), "README does not link docs/" .. page .. ".md")
    end
  end)

  it("is a short first read: no reference tables, no benchmark figures", function()
    local lines = select(2, text:gsub("\n", "\n"))
    assert.truthy(lines <= 250, "README.md has " .. lines .. " lines")
    assert.falsy(text:find("| measurement |", 1, true), "benchmark table in the README (it belongs in bench/README.md)")
    assert.falsy(text:find("APIReference/API_", 1, true), "operations table in the README (it belongs in docs/operations.md)")
    assert.falsy(text:find("lua_ssl_trusted_certificate", 1, true), "OpenResty details in the README (docs/openresty.md)")
    -- the order a newcomer needs
    local last = 0
    for _, heading in ipairs { "## Install", "### From the source tree", "### With LuaRocks",
                               "## A local Kinesis in one command", "## Quick start",
                               "## Results and errors", "## Where to go next" } do
      local at = text:find("\n" .. heading .. "\n", 1, true)
      assert.truthy(at and at > last, heading .. " missing or out of order")
      last = at
    end
  end)

  it("names examples that exist, and every example", function()
    local listed = text:match("%- `examples/`: runnable programs %((.-)%)%.")
    assert.truthy(listed, "no list of examples")
    local p = io.popen("ls " .. ROOT .. "/examples")
    for file in p:lines() do
      assert.truthy(listed:find("`" .. file .. (file:match("%.lua$") and "`" or "/`"), 1, true), "README does not name examples/" .. file)
    end
    p:close()
    for name in listed:gmatch("`([^`]+)`") do
      local f = io.open(ROOT .. "/examples/" .. name:gsub("/$", ""), "r")
      assert.truthy(f, "README names examples/" .. name .. ", which does not exist")
      f:close()
    end
  end)

  it("shows the two commands", function()
    assert.truthy(text:find("make test", 1, true))
    assert.truthy(text:find("make demo", 1, true))
  end)
end)
