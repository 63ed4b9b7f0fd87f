-- The README documents what the library offers: every operation of the
-- model with a link to its API reference page, and every public function of
-- the kinesis module.

local model = require "kinesis.model"
local kinesis = require "kinesis"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("README", function()
  local text = read(require("support.peers").root .. "/README.md")

  it("lists every operation with its reference link", function()
    local n = 0
    for name, op in pairs(model.operations) do
      n = n + 1
      local row = ("[`%s`](https://docs.aws.amazon.com/kinesis/latest/APIReference/API_%s.html)"):format(op.method, name)
      assert.truthy(text:find(row, 1, true), "README lacks " .. name)
    end
    assert.equal(45, n)
  end)

  it("documents every public function of the kinesis module", function()
    for name, v in pairs(kinesis) do
      if type(v) == "function" then
        assert.truthy(text:find("kinesis." .. name, 1, true), "README lacks kinesis." .. name)
      end
    end
  end)

  it("shows the two commands", function()
    assert.truthy(text:find("make test", 1, true))
    assert.truthy(text:find("make demo", 1, true))
  end)
end)
