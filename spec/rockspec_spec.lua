-- The rocks: lua-kinesis-scm-1 (the checkout) and the release rockspec
-- beside it describe the same build; `luarocks make` into a temporary tree
-- builds the C modules and installs the Lua ones, and the installed module
-- loads from that tree alone. The version is one string: core._VERSION.

local ROOT = require("support.peers").root
local RELEASE = "lua-kinesis-0.1.0-1.rockspec"

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

-- A rockspec is Lua assignments: run it in an empty environment.
local function load_rockspec(path)
  local env = {}
  local chunk = assert(load(read(path), "=" .. path, "t", env))
  chunk()
  return env
end

local HINT = " differs between the rockspecs: make release-rockspec"
local function same(a, b, where)
  if type(a) ~= "table" or type(b) ~= "table" then
    assert.equal(a, b, where .. HINT)
    return
  end
  for k, v in pairs(a) do same(v, b[k], where .. "." .. tostring(k)) end
  for k in pairs(b) do assert.is_not_nil(a[k], where .. "." .. tostring(k) .. HINT) end
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

  it("the release rockspec is the scm one with its version and tag", function()
    local scm = load_rockspec(ROOT .. "/lua-kinesis-scm-1.rockspec")
    local rel = load_rockspec(ROOT .. "/" .. RELEASE)
    local version = require("kinesis.core")._VERSION
    assert.equal(version .. "-1", rel.version)
    assert.equal(RELEASE, ("%s-%s.rockspec"):format(rel.package, rel.version))
    assert.equal("v" .. version, rel.source.tag)
    assert.equal("scm-1", scm.version)
    for _, key in ipairs { "rockspec_format", "package", "description", "dependencies",
                           "external_dependencies", "build" } do
      same(scm[key], rel[key], key)
    end
  end)

  it("says MIT and ships the LICENSE that says so", function()
    local rel = load_rockspec(ROOT .. "/" .. RELEASE)
    assert.equal("MIT", rel.description.license)
    local license = read(ROOT .. "/LICENSE")
    assert.truthy(license:find("^MIT License"), "LICENSE is not the MIT license")
    assert.truthy(license:find("Copyright (c) 2026 the lua-kinesis authors", 1, true))
  end)

  it("one version: kinesis._VERSION, the User-Agent and the changelog agree", function()
    local kinesis = require "kinesis"
    assert.equal("0.1.0", kinesis._VERSION)
    local c = assert(kinesis.new { endpoint = "http://127.0.0.1:9", region = "us-east-1",
      credentials = { access_key_id = "AKIDTEST", secret_access_key = "secret" } })
    local req = assert(c:build_request(kinesis.operations.ListStreams, "{}", {}))
    local ua
    for _, h in ipairs(req.headers) do if h[1] == "User-Agent" then ua = h[2] end end
    assert.equal("lua-kinesis/0.1.0 " .. _VERSION:gsub(" ", "/"), ua)
    local changelog = read(ROOT .. "/CHANGELOG.md")
    assert.truthy(changelog:find("\n## " .. kinesis._VERSION:gsub("%.", "%%."), 1), "CHANGELOG.md has no section for " .. kinesis._VERSION)
  end)

  -- As the README's Install section says: with Debian's lua-cjson declared
  -- as provided, a plain `luarocks make` (dependencies checked) builds the
  -- release rock without a "Missing dependencies" complaint. HOME is a
  -- temporary folder so the user configuration written is the test's own.
  it("builds with its dependencies resolved against Debian's lua-cjson, and loads from the tree alone", function()
    local home = os.tmpname()
    os.remove(home)
    local tree = home .. "/tree"
    local rc, out = run(("mkdir -p %s/.luarocks && HOME=%s luarocks --lua-version=5.4 config rocks_provided.lua-cjson 2.1.0-1")
      :format(home, home))
    assert.equal(0, rc, out)
    -- built from a copy: luarocks compiles next to the sources, and another
    -- build of the checkout (nginx_spec's, for 5.1) must not share the objects
    local copy = home .. "/src"
    rc, out = run(("mkdir -p %s && cd %s && cp -r src lua docs examples LICENSE *.rockspec %s/ && rm -f %s/src/*.o")
      :format(copy, ROOT, copy, copy))
    assert.equal(0, rc, out)
    rc, out = run(("cd %s && HOME=%s luarocks --lua-version=5.4 --tree=%s make %s")
      :format(copy, home, tree, RELEASE))
    assert.equal(0, rc, out)
    assert.falsy(out:find("Missing dependencies", 1, true), out)
    assert.truthy(out:find("lua-cjson (2.1.0-1 provided", 1, true), out)
    -- load with a path that only knows the tree (plus the system's cjson)
    local probe = [[
      local k = require "kinesis"
      assert(package.searchpath("kinesis.core", package.cpath):find(os.getenv("TREE"), 1, true))
      local c = assert(k.new{ endpoint = "http://127.0.0.1:9", region = "us-east-1",
        credentials = { access_key_id = "a", secret_access_key = "b" } })
      assert(type(c.put_records) == "function")
      assert(k.hash_key("a") == "16955237001963240173058271559858726497")
      -- the transport module loads only when used: load it, and use it
      assert(package.searchpath("kinesis.curl", package.cpath):find(os.getenv("TREE"), 1, true))
      local out, err = c:list_streams{}
      assert(not out and err.code == "ConnectionRefused", tostring(err))
      print("loaded " .. k._VERSION)
    ]]
    local cmd = ("TREE=%s LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua' " ..
      "LUA_CPATH='%s/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so' lua5.4 -e '%s'")
      :format(tree, tree, tree, tree, probe)
    rc, out = run(cmd)
    local _, docs = run("ls " .. tree .. "/lib/luarocks/rocks-5.4/lua-kinesis/0.1.0-1/docs")
    os.execute("rm -rf " .. home)
    assert.equal(0, rc, out)
    assert.truthy(out:find("loaded 0.1.0", 1, true), out)
    assert.truthy(docs:find("configuration.md", 1, true), "the rock does not carry docs/: " .. docs)
  end)
end)
