-- faultproxy.lua - starts spec/support/faultproxy.js between the client and
-- a real server and scripts its faults. Control calls use the curl CLI (as
-- peers.lua does), so the harness never depends on the library under test.
--
--   local faultproxy = require "support.faultproxy"
--   local proxy = faultproxy.start{ upstream = srv.endpoint }   -- tls = { cert =, key = }
--   proxy.endpoint                                   -- http(s)://127.0.0.1:port
--   proxy:script{ { kind = "reset_before" }, { kind = "pass" } }
--   proxy:mix{ rate = 0.1, kinds = { "http500", "stall" }, seed = 7 }
--   proxy:stats()   --> { requests =, forwarded =, faults = { kind = n }, connections =, stalled = }
--   proxy:reset(); proxy:stop()
local cjson = require "cjson"
local peers = require "support.peers"

local M = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local PARENT_PID = tonumber((run("echo $PPID")))

local Proxy = {}
Proxy.__index = Proxy

local function control(self, method, path, value)
  local cmd = "curl -sS -k --noproxy '*' --max-time 10 -X " .. method .. " -w '\\n%{http_code}' "
  local tmp
  if value ~= nil then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(cjson.encode(value))
    f:close()
    cmd = cmd .. "-H 'Content-Type: application/json' --data-binary @" .. shell_quote(tmp) .. " "
  end
  local out = run(cmd .. shell_quote(self.endpoint .. "/__fault/" .. path) .. " 2>&1")
  if tmp then os.remove(tmp) end
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  if code ~= "200" then
    error(("faultproxy %s /__fault/%s failed: %s"):format(method, path, out), 3)
  end
  return peers.integers(cjson.decode(text))
end

function Proxy:script(faults) return control(self, "POST", "script", faults).queued end
function Proxy:mix(cfg) return control(self, "POST", "mix", cfg) end
function Proxy:reset() return control(self, "POST", "reset", {}) end
function Proxy:stats() return control(self, "GET", "stats") end

-- Stops the proxy; its log is removed when the proxy wrote nothing to it.
function Proxy:stop()
  if self.stopped then return true end
  self.stopped = true
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  local gone = false
  for _ = 1, 50 do
    if not peers.alive(self.pid) then gone = true break end
    os.execute("sleep 0.1")
  end
  if not gone then
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
    gone = not peers.alive(self.pid)
  end
  local f = self.log and io.open(self.log, "r")
  if f then
    local empty = f:read(1) == nil
    f:close()
    if empty then os.remove(self.log) end
  end
  return gone
end

--- opts: upstream (URL of the real server), tls = { cert =, key = } (PEM
-- files: the proxy then speaks HTTPS to the client).
function M.start(opts)
  local launch = {
    upstream = assert(opts.upstream, "faultproxy.start needs upstream"),
    tls = opts.tls, parent = PARENT_PID,
  }
  local out = run("node " .. shell_quote(peers.root .. "/spec/support/faultproxy.js") .. " launch "
    .. shell_quote(cjson.encode(launch)) .. " 2>&1")
  local ok, info = pcall(cjson.decode, out:match("([^\n]*)\n?$") or "")
  if not ok or type(info) ~= "table" or info.error then
    error("faultproxy.start: " .. tostring(ok and type(info) == "table" and info.error or out), 2)
  end
  local port = peers.integers(info.port)
  return setmetatable({
    pid = peers.integers(info.pid), port = port, log = info.log,
    endpoint = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
  }, Proxy)
end

return M
