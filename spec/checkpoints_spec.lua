-- checkpoints_spec.lua - the checkpoint stores (kinesis.checkpoints): the
-- interface's compare-and-set, copies and validation on the memory and file
-- stores; the file store's durability: the system calls of one write (temp
-- file, fsync, rename, directory fsync, watched with strace), a writer killed
-- with -9 mid-stream never leaves a half-written file, and a damaged or
-- foreign file is refused rather than read as "no checkpoints".

local checkpoints = require "kinesis.checkpoints"
local peers = require "support.peers"

local TMP = peers.tmpdir("checkpoints")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function fresh(name)
  local p = TMP .. "/cp-" .. name
  os.remove(p)
  os.remove(p .. ".tmp")
  return p
end

setup(function() os.execute("mkdir -p " .. q(TMP)) end)

local function interface_contract(make)
  it("get is nil before any set, then a copy of what was set", function()
    local s = make()
    assert(s:open { stream = "s", application = "a", worker_id = "w" })
    assert.is_nil(s:get("shardId-000000000000"))
    assert.is_true(s:set("shardId-000000000000", { sequence = "100", sub_sequence = 2 }, nil))
    local cp = s:get("shardId-000000000000")
    assert.are.same({ sequence = "100", sub_sequence = 2 }, cp)
    cp.sequence = "999"
    assert.are.equal("100", s:get("shardId-000000000000").sequence)
  end)

  it("set is a compare-and-set against the value the writer last saw", function()
    local s = make()
    assert(s:open { stream = "s" })
    assert(s:set("a", { sequence = "1" }, nil))
    local ok, err = s:set("a", { sequence = "2" }, nil)
    assert.is_nil(ok)
    assert.are.equal("CheckpointConflict", err.code)
    assert.are.equal("checkpoint", err.kind)
    ok, err = s:set("a", { sequence = "2" }, { sequence = "1", sub_sequence = 0 })
    assert.is_nil(ok)
    assert.are.equal("CheckpointConflict", err.code)
    assert.are.same({ sequence = "1" }, s:get("a"))
    assert.is_true(s:set("a", { sequence = "SHARD_END" }, { sequence = "1" }))
    assert.are.same({ a = { sequence = "SHARD_END" } }, s:list())
  end)

  it("refuses a malformed checkpoint, naming the field", function()
    local s = make()
    assert(s:open { stream = "s" })
    assert.has_error(function() s:set("a", { sequence = "12x" }) end,
      "kinesis.checkpoints: checkpoint.sequence must be a decimal sequence number or one of SHARD_END, TRIM_HORIZON, LATEST, AT_TIMESTAMP")
    assert.has_error(function() s:set("a", { sequence = "1", sub_sequence = -1 }) end,
      "kinesis.checkpoints: checkpoint.sub_sequence must be a non-negative integer or nil")
    assert.has_error(function() s:set("a", { sequence = "AT_TIMESTAMP" }) end,
      "kinesis.checkpoints: checkpoint.timestamp must be a number with sequence AT_TIMESTAMP")
    assert.has_error(function() s:set("", { sequence = "1" }) end,
      "kinesis.checkpoints: shard_id must be a non-empty string")
  end)

  it("hands out every synced shard (no leases in one process)", function()
    local s = make()
    assert(s:open { stream = "s" })
    assert(s:sync_shards { { ShardId = "a" }, { ShardId = "b", ParentShardId = "a" } })
    assert.are.same({ a = true, b = true }, s:acquire())
    assert.is_true(s:holds("b"))
    assert.is_false(s:holds("c"))
    assert.is_true(s:release("a"))
  end)
end

describe("kinesis.checkpoints", function()
  it("orders decimal sequence numbers of any length", function()
    assert.are.equal(-1, checkpoints.compare_sequence("9", "10"))
    assert.are.equal(1, checkpoints.compare_sequence("49680794141935261527305723893825438704123963866810941458",
      "49680794141912960782107193270673022653474783842732605442"))
    assert.are.equal(0, checkpoints.compare_sequence("007", "7"))
  end)

  it("loads the stores lazily through kinesis.checkpoints and kinesis.checkpoints", function()
    assert.are.equal(checkpoints.memory, require("kinesis").checkpoints.memory)
    assert.is_function(checkpoints.file)
  end)

  describe("memory", function()
    interface_contract(function() return checkpoints.memory() end)

    it("starts from the checkpoints it is given", function()
      local s = checkpoints.memory { checkpoints = { a = { sequence = "5" } } }
      assert.are.same({ sequence = "5" }, s:get("a"))
    end)
  end)

  describe("file", function()
    local n = 0
    interface_contract(function()
      n = n + 1
      return checkpoints.file { path = fresh("contract" .. n) }
    end)

    it("needs a path", function()
      assert.has_error(function() checkpoints.file {} end, "kinesis.checkpoints.file: path must be a non-empty string")
    end)

    it("keeps checkpoints across store objects (and processes), with no temporary file left", function()
      local path = fresh("persist")
      local a = checkpoints.file { path = path }
      assert(a:open { stream = "s", application = "app" })
      assert(a:set("x", { sequence = "123456789012345678901234567890", sub_sequence = 4 }, nil))
      assert(a:set("y", { sequence = "SHARD_END" }, nil))
      local b = checkpoints.file { path = path }
      assert(b:open { stream = "s" })
      assert.are.same({ x = { sequence = "123456789012345678901234567890", sub_sequence = 4 },
        y = { sequence = "SHARD_END" } }, b:list())
      assert.are.equal("integer", math.type(b:get("x").sub_sequence))
      assert.is_nil(io.open(path .. ".tmp", "r"))
      -- another process reads the same
      local out = sh("lua5.4 -e " .. q("local s = require('kinesis.checkpoints').file{ path = " .. string.format("%q", path)
        .. " }; assert(s:open{}); io.write(s:get('x').sequence, ' ', s:get('x').sub_sequence)"))
      assert.are.equal("123456789012345678901234567890 4", out)
    end)

    it("writes a temporary file, fsyncs it, renames it over the file, then fsyncs the directory", function()
      local path = fresh("strace")
      local script = "local s = require('kinesis.checkpoints').file{ path = " .. string.format("%q", path) ..
        " }; assert(s:open{ stream = 's' }); assert(s:set('a', { sequence = '1' }, nil))"
      local trace = sh("strace -f -e trace=openat,write,fsync,fdatasync,rename,renameat,renameat2,close lua5.4 -e "
        .. q(script) .. " 2>&1")
      assert.matches("fsync%(", trace, 1, false)
      -- the steps in order, each on the right descriptor
      local tmp_fd = trace:match('openat%([^\n]-"' .. path:gsub("%p", "%%%0") .. '%.tmp", O_WRONLY[^\n]-= (%d+)')
      assert.is_truthy(tmp_fd, "the temporary file is opened for writing")
      local rest = trace:match('%.tmp", O_WRONLY.-$')
      local steps = {}
      for line in rest:gmatch("[^\n]+") do
        local call, fd = line:match("^%[?[^%a]*(%a+)%((%d*)")
        if call == "fsync" or call == "rename" or call == "renameat" or call == "renameat2" then
          steps[#steps + 1] = call == "fsync" and ("fsync " .. fd) or "rename"
        elseif call == "openat" and line:match('"' .. TMP:gsub("%p", "%%%0") .. '", O_RDONLY') then
          steps[#steps + 1] = "open dir " .. line:match("= (%d+)")
        end
      end
      local dir_fd = steps[3] and steps[3]:match("open dir (%d+)")
      assert.are.same({ "fsync " .. tmp_fd, "rename", "open dir " .. tostring(dir_fd), "fsync " .. tostring(dir_fd) },
        steps)
    end)

    it("a writer killed with -9 leaves the old or the new content, never a mix", function()
      local path = fresh("killed")
      -- each write carries 3000 shards, all with the generation's number
      local script = [[
        local s = require('kinesis.checkpoints').file{ path = ]] .. string.format("%q", path) .. [[ }
        assert(s:open{ stream = 's' })
        local prev = {}
        for g = 1, 1e9 do
          for i = 1, 3000 do
            local id = 'shardId-' .. i
            local cp = { sequence = tostring(g) }
            if i == 3000 then assert(s:set(id, cp, prev[id])) else s.cps[id] = cp end
            prev[id] = cp
          end
        end]]
      for round = 1, 6 do
        local pid = tonumber(sh("sh -c " .. q("lua5.4 -e " .. q(script) .. " >/dev/null 2>&1 & echo $!")))
        os.execute("sleep 0." .. (3 + round))
        os.execute("kill -9 " .. pid)
        os.execute("while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done")
        local s = checkpoints.file { path = path }
        assert(s:open { stream = "s" })
        local all = s:list()
        local gen, count = nil, 0
        for _, cp in pairs(all) do
          count = count + 1
          gen = gen or cp.sequence
          assert.are.equal(gen, cp.sequence, "one generation in the file")
        end
        assert.are.equal(3000, count)
        os.remove(path .. ".tmp")
        os.remove(path)
      end
    end)

    it("takes an empty file (made beforehand) as no checkpoints", function()
      local path = fresh("empty")
      write(path, "")
      local s = checkpoints.file { path = path }
      assert(s:open { stream = "s" })
      assert.are.same({}, s:list())
      assert(s:set("a", { sequence = "1" }, nil))
      assert.are.same({ sequence = "1" }, checkpoints.file { path = path }:get("a"))
    end)

    it("refuses a damaged file and a file of another stream", function()
      local path = fresh("damaged")
      write(path, '{"format":1,"stream":"s","checkpoints":{"a":{"sequence":"12')
      local s = checkpoints.file { path = path }
      local ok, err = s:open { stream = "s" }
      assert.is_nil(ok)
      assert.are.equal("CorruptCheckpoints", err.code)
      write(path, '{"format":1,"stream":"s","checkpoints":{"a":{"sequence":"x1"}}}')
      ok, err = checkpoints.file { path = path }:open { stream = "s" }
      assert.is_nil(ok)
      assert.matches("shard a: checkpoint.sequence must be", err.message, 1, true)
      write(path, '{"format":1,"stream":"other","checkpoints":{}}')
      ok, err = checkpoints.file { path = path }:open { stream = "s" }
      assert.is_nil(ok)
      assert.are.equal("CheckpointMismatch", err.code)
    end)

    it("reports a failed write and keeps the previous value", function()
      local path = TMP .. "/no-such-dir/cp"
      local s = checkpoints.file { path = path }
      assert(s:open { stream = "s" })
      local ok, err = s:set("a", { sequence = "1" }, nil)
      assert.is_nil(ok)
      assert.are.equal("CheckpointWriteFailed", err.code)
      assert.matches("open .*no%-such%-dir/cp[.%w]*: No such file or directory", err.message)
      assert.is_nil(s:get("a"))
    end)
  end)
end)
