-- The rock: `luarocks make --deps-mode=none` into a temporary tree builds
-- the C modules and installs the Lua ones, and the installed module loads
-- from that tree alone. The rockspec must list every source file.

local ROOT = os.getenv("PWD")

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("rockspec", function()
  local spec_text = read(ROOT .. "/lua-kinesis-scm-1.rockspec")

  it("lists every C source and every Lua module", function()
    local _, c_files = run("ls " .. ROOT .. "/src/*.c")
    for path in c_files:gmatch("[^\n]+") do
      local name = path:match("(src/[%w_]+%.c)$")
      if name then
        assert.truthy(spec_text:find('"' .. name .. '"', 1, true), name .. " missing from the rockspec")
      end
    end
    local _, lua_files = run("cd " .. ROOT .. " && find lua -name '*.lua'")
    for path in lua_files:gmatch("[^\n]+") do
      if path:match("%.lua$") then
        assert.truthy(spec_text:find('"' .. path .. '"', 1, true), path .. " missing from the rockspec")
      end
    end
  end)

  it("builds and installs into a temporary tree, and loads from it", function()
    local tree = os.tmpname()
    os.remove(tree)
    local rc, out = run(("cd %s && luarocks --lua-version=5.4 --tree=%s make --deps-mode=none lua-kinesis-scm-1.rockspec")
      :format(ROOT, tree))
    assert.equal(0, rc, out)
    -- load with a path that only knows the tree (plus the system's cjson)
    local probe = [[
      local k = require "kinesis"
      assert(package.searchpath("kinesis.core", package.cpath):find(os.getenv("TREE"), 1, true))
      local c = assert(k.new{ endpoint = "http://127.0.0.1:9", region = "us-east-1",
        credentials = { access_key_id = "a", secret_access_key = "b" } })
      assert(type(c.put_records) == "function")
      assert(k.hash_key("a") == "16955237001963240173058271559858726497")
      print("loaded " .. k._VERSION)
    ]]
    local cmd = ("TREE=%s LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua' " ..
      "LUA_CPATH='%s/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so' lua5.4 -e '%s'")
      :format(tree, tree, tree, tree, probe)
    rc, out = run(cmd)
    os.execute("rm -rf " .. tree)
    assert.equal(0, rc, out)
    assert.truthy(out:find("loaded", 1, true))
  end)
end)
