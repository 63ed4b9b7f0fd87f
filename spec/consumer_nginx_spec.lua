-- consumer_nginx_spec.lua - the consumer inside nginx (LuaJIT, cosockets,
-- light threads through kinesis.runtime): started from a timer in
-- init_worker, polling a 3-shard kinesis-local stream while nginx keeps
-- answering requests; /count reports what the handler saw, /stop calls
-- consumer:stop() and the timer records run()'s result. One worker.

local peers = require "support.peers"
local nginx = require "support.nginx"
local cjson = require "cjson"

local ROOT = peers.root

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local CONF = [[
load_module {{MODULES}}/ndk_http_module.so;
load_module {{MODULES}}/ngx_http_lua_module.so;
worker_processes 1;
error_log {{PREFIX}}/logs/error.log info;
pid {{PREFIX}}/nginx.pid;
events { worker_connections 128; }
http {
  access_log off;
  client_body_temp_path {{PREFIX}}/body;
  lua_package_path "{{ROOT}}/lua/?.lua;{{ROOT}}/lua/?/init.lua;;";
  lua_package_cpath "{{ROOT}}/build/5.1/?.so;{{CJSON_CPATH}};;";
  lua_shared_dict consumer 4m;
  init_worker_by_lua_block {
    local ok, err = ngx.timer.at(0, function(premature)
      if premature then return end
      local kinesis = require "kinesis"
      local client = assert(kinesis.new { endpoint = "{{ENDPOINT}}", region = "us-east-1",
        credentials = { access_key_id = "AKIDTEST", secret_access_key = "secret" } })
      local dict = ngx.shared.consumer
      local c = client:consumer { stream = "ngx", store = kinesis.checkpoints.memory(),
        idle_time_between_reads = 0.2, shard_sync_interval = 1,
        handler = function(records, ctx)
          for _, r in ipairs(records) do
            dict:incr("n", 1, 0)
            dict:incr("seen:" .. r.Data, 1, 0)
          end
          dict:set("shard:" .. ctx.shard_id, true)
        end }
      package.loaded.spec_consumer = c
      local rok, rerr = c:run()
      dict:set("result", tostring(rok) .. " " .. tostring(rerr) .. " " .. c:stats().state)
    end)
    if not ok then ngx.log(ngx.ERR, "timer: ", err) end
  }
  server {
    listen 127.0.0.1:{{PORT}};
    location = /ready { return 204; }
    location = /count {
      content_by_lua_block {
        local dict = ngx.shared.consumer
        local shards = 0
        for _, k in ipairs(dict:get_keys(0)) do if k:find("^shard:") then shards = shards + 1 end end
        local c = package.loaded.spec_consumer
        ngx.say(require("cjson").encode { n = dict:get("n") or 0, shards = shards,
          state = c and c:stats().state or "none", result = dict:get("result") or "" })
      }
    }
    location = /seen {
      content_by_lua_block {
        local dict = ngx.shared.consumer
        local out = {}
        for _, k in ipairs(dict:get_keys(0)) do
          local data = k:match("^seen:(.*)$")
          if data then out[data] = dict:get(k) end
        end
        ngx.say(require("cjson").encode(out))
      }
    }
    location = /stop {
      content_by_lua_block {
        package.loaded.spec_consumer:stop()
        ngx.say("stopping")
      }
    }
  }
}
]]

describe("kinesis.consumer inside nginx", function()
  local srv, ngx_srv, port

  setup(function()
    assert(read_file(ROOT .. "/build/5.1/kinesis/core.so"), "build/5.1 is missing: make LUA=luajit")
    srv = peers.start("kinesis-local", { env = { CREATE_STREAM_DURATION = "10ms" } })
    local client = peers.client(srv)
    assert(client:create_stream { StreamName = "ngx", ShardCount = 3 })
    assert(client:wait("stream_exists", { StreamName = "ngx" }, { delay = 0.1 }))
    ngx_srv = nginx.start { text = CONF, vars = { ENDPOINT = srv.endpoint } }
    port = ngx_srv.port
  end)

  teardown(function()
    if ngx_srv then ngx_srv:stop() end
    if srv then srv:stop() end
  end)

  local function get(path)
    local out = sh("curl -sS --noproxy '*' --max-time 20 " .. q("http://127.0.0.1:" .. port .. path))
    local ok, v = pcall(cjson.decode, out)
    assert(ok, "nginx answered: " .. out .. "\n" .. ngx_srv:log():sub(-2000))
    return v
  end

  it("reads every shard in a timer while nginx answers requests, and stops on request", function()
    local client = peers.client(srv)
    local entries = {}
    for i = 1, 150 do entries[i] = { PartitionKey = "key-" .. i, Data = "ngx-" .. i } end
    assert(client:put_records { StreamName = "ngx", Records = entries })
    local c
    for _ = 1, 200 do
      c = get("/count")       -- each answer while the consumer runs: the worker is not blocked
      if c.n >= 150 then break end
      os.execute("sleep 0.1")
    end
    assert.are.equal(150, c.n)
    assert.are.equal(3, c.shards)
    assert.are.equal("running", c.state)
    local seen = get("/seen")
    for i = 1, 150 do assert.are.equal(1, seen["ngx-" .. i], "ngx-" .. i) end
    sh("curl -sS --noproxy '*' " .. q("http://127.0.0.1:" .. port .. "/stop"))
    for _ = 1, 100 do
      c = get("/count")
      if c.result ~= "" then break end
      os.execute("sleep 0.1")
    end
    assert.are.equal("true nil stopped", c.result)
    assert.is_nil(ngx_srv:log():match("%[error%]"))
  end)
end)
