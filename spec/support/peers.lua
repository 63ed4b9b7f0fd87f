-- peers.lua - starts and stops the real loopback servers specs run against
-- (kinesis-local, kinesalite, the programmable stub) through launch.js, and
-- drives the stub's /__stub/ control endpoints with the curl command-line
-- tool, so the harness does not depend on the client library under test.
--
--   local peers = require "support.peers"
--   local srv = peers.start("kinesis-local", { env = { SHARD_LIMIT = "100" } })
--   ... srv.endpoint, srv.tls_endpoint, srv.port, srv.pid ...
--   srv:stop()
local cjson = require "cjson"

local peers = {
  credentials = { access_key_id = "AKIDTEST", secret_access_key = "secret" },
  region = "us-east-1",
}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The project root, from where this file lives (LUA_PATH may be relative).
local ROOT do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/support/[^/]+$")
  dir = dir or "."
  if dir:sub(1, 1) ~= "/" then
    local p = io.popen("pwd")
    local cwd = p:read("*l")
    p:close()
    dir = dir == "." and cwd or (cwd .. "/" .. dir)
  end
  ROOT = dir
end
peers.root = ROOT

local function run(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  local ok, how, code = p:close()
  return out, ok, how, code
end

local PARENT_PID = tonumber((run("echo $PPID")))   -- this Lua process

local function sleep(seconds)
  os.execute("sleep " .. tostring(seconds))
end

---------------------------------------------------------------- base64

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, 64 do B64_INDEX[B64:byte(i)] = i - 1 end

function peers.b64encode(s)
  local out, n = {}, 0
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    n = n + 1
    out[n] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
      .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function peers.b64decode(s)
  local out, n = {}, 0
  s = s:gsub("[^%w%+/]", "")
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local v = B64_INDEX[a] * 262144 + B64_INDEX[b] * 4096
      + (c and B64_INDEX[c] * 64 or 0) + (d and B64_INDEX[d] or 0)
    local x, y, z = math.floor(v / 65536), math.floor(v / 256) % 256, v % 256
    n = n + 1
    if d then out[n] = string.char(x, y, z)
    elseif c then out[n] = string.char(x, y)
    else out[n] = string.char(x) end
  end
  return table.concat(out)
end

---------------------------------------------------------------- control calls

-- One HTTP call with the curl CLI; returns status, body. Raises when curl fails.
local function http(method, url, body)
  local tmp
  local cmd = "curl -sS --noproxy '*' --max-time 30 -X " .. method
    .. " -w '\\n%{http_code}' "
  if body ~= nil then
    tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    f:write(body)
    f:close()
    cmd = cmd .. "-H 'Content-Type: application/json' --data-binary @" .. shell_quote(tmp) .. " "
  end
  local out, ok = run(cmd .. shell_quote(url) .. " 2>&1")
  if tmp then os.remove(tmp) end
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  if not ok or not code then
    error(("stub control %s %s failed: %s"):format(method, url, out), 3)
  end
  return tonumber(code), text
end

-- cjson decodes every JSON number as a float; counts and ports read better
-- (and compare with assert.same) as integers.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  elseif math.type and math.type(v) == "float" and v == math.floor(v) then
    return math.tointeger(v) or v
  end
  return v
end
peers.integers = integers

local function control(srv, method, path, value)
  local status, text = http(method, srv.endpoint .. "/__stub/" .. path,
                            value ~= nil and cjson.encode(value) or nil)
  if status ~= 200 then
    error(("stub control %s /__stub/%s answered %d: %s"):format(method, path, status, text), 3)
  end
  return integers(cjson.decode(text))
end

-- Bytes JSON cannot carry as text travel as base64.
local function is_plain_text(s)
  return not s:find("[^\t\n\r\032-\126]")
end

local Server = {}
Server.__index = Server

function Server:url(path)
  return self.endpoint .. (path or "/")
end

-- Appends scripted responses: { {status=, headers=, body= | body_b64= |
-- body_repeat= {text, n}, delay_ms=, action=}, ... }; returns the queue length.
function Server:queue(responses)
  local list = {}
  for i, r in ipairs(responses) do
    local copy = {}
    for k, v in pairs(r) do copy[k] = v end
    if type(copy.body) == "string" and not is_plain_text(copy.body) then
      copy.body_b64 = peers.b64encode(copy.body)
      copy.body = nil
    end
    list[i] = copy
  end
  if #list == 0 then return nil end
  return control(self, "POST", "queue", list).queued
end

-- Requests seen since the last reset, oldest first. Each has method, path,
-- headers (lower-cased names), raw_headers ({name, value} as sent), conn
-- (connection number), body (when UTF-8), body_b64 and raw (decoded bytes).
-- opts.raw = false leaves raw out: decoding megabytes of base64 in Lua is
-- slow, and a JSON body is already there as body.
function Server:requests(opts)
  local list = control(self, "GET", "requests")
  if not (opts and opts.raw == false) then
    for _, r in ipairs(list) do r.raw = peers.b64decode(r.body_b64) end
  end
  return list
end

function Server:reset()
  control(self, "POST", "reset", {})
end

-- { max_in_flight =, in_flight =, total =, connections =, queued = }
function Server:stats()
  return control(self, "GET", "stats")
end

function Server:log_tail(lines)
  local f = io.open(self.log or "", "r")
  if not f then return "" end
  local all = {}
  for line in f:lines() do all[#all + 1] = line end
  f:close()
  return table.concat(all, "\n", math.max(1, #all - (lines or 40) + 1))
end

---------------------------------------------------------------- start / stop

-- Is pid running (a zombie counts as gone)?
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local stat = f:read("*a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z"
end

-- Stops the server's process group (launch.js starts it detached, so the
-- group id is its pid) and waits until it is gone. SIGKILL after `grace`
-- seconds: kinesis-local's graceful shutdown can hang on a TLS connection a
-- client dropped mid-handshake.
local function stop_pid(pid, grace)
  os.execute("kill -TERM -" .. pid .. " 2>/dev/null")
  for _ = 1, math.floor((grace or 3) * 10) do
    if not alive(pid) then return true end
    sleep(0.1)
  end
  os.execute("kill -KILL -" .. pid .. " 2>/dev/null")
  for _ = 1, 50 do
    if not alive(pid) then return true end
    sleep(0.1)
  end
  return false
end

-- name: "kinesis-local" | "kinesalite" | "stub". opts: env = { NAME = "value" },
-- args = { ... }, shard_limit (kinesalite), tls (stub: add an HTTPS port with
-- a certificate for 127.0.0.1, srv.cafile), timeout (seconds to come up, 30).
function peers.start(name, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(opts.env or {}) do env[k] = tostring(v) end
  local launch_opts = {
    env = env,
    args = opts.args or {},
    shard_limit = opts.shard_limit,
    tls = opts.tls and true or nil,
    parent = PARENT_PID,
    timeout_ms = math.floor((opts.timeout or 30) * 1000),
  }
  if next(env) == nil then launch_opts.env = nil end
  if #launch_opts.args == 0 then launch_opts.args = nil end
  local cmd = "node " .. shell_quote(ROOT .. "/spec/support/launch.js") .. " "
    .. shell_quote(name) .. " " .. shell_quote(cjson.encode(launch_opts)) .. " 2>&1"
  local out = run(cmd)
  local line = out:match("([^\n]*)\n?$")
  local ok, info = pcall(cjson.decode, line or "")
  if not ok or type(info) ~= "table" then
    error(("peers.start(%q): launch.js said:\n%s"):format(name, out), 2)
  end
  if info.error then
    error(("peers.start(%q): %s\n--- log tail (%s) ---\n%s"):format(
      name, info.error, tostring(info.log), tostring(info.log_tail or "")), 2)
  end
  local function int(x) return x and integers(x) end
  local srv = setmetatable({
    name = name,
    pid = int(info.pid),
    port = int(info.port),
    tls_port = int(info.tls_port),
    cafile = info.cafile,
    log = info.log,
  }, Server)
  srv.endpoint = "http://127.0.0.1:" .. srv.port
  srv.tls_endpoint = srv.tls_port and ("https://127.0.0.1:" .. srv.tls_port) or nil
  local stopped = false
  -- callable as srv.stop() or srv:stop(); idempotent
  srv.stop = function()
    if stopped then return true end
    stopped = true
    return stop_pid(srv.pid)
  end
  return srv
end

peers.alive = alive

--- A client of the library under test for `srv` (a started peer): its
-- endpoint, the test region and credentials, and `extra` options on top
-- (false removes a default). Raises when the configuration is refused.
function peers.client(srv, extra)
  local cfg = { endpoint = srv.endpoint, region = peers.region, credentials = peers.credentials }
  for k, v in pairs(extra or {}) do
    if v == false and k ~= "endpoint" and k ~= "verify" and k ~= "pool" and k ~= "log" then v = nil end
    cfg[k] = v
  end
  local c, err = require("kinesis").new(cfg)
  if not c then error("peers.client: " .. tostring(err), 2) end
  return c
end

---------------------------------------------------------------- processes and files

peers.quote = shell_quote

--- stdout of a shell command.
function peers.sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

--- Starts the shell command `cmd` in the background with its output in
-- `logfile`; returns its pid.
function peers.spawn(cmd, logfile)
  return tonumber(peers.sh("sh -c " .. shell_quote(cmd .. " > " .. shell_quote(logfile) .. " 2>&1 & echo $!")))
end

--- Waits until pid is gone: true, or false after `timeout` seconds.
function peers.wait_exit(pid, timeout)
  for _ = 1, math.ceil(timeout * 10) do
    if not alive(pid) then return true end
    sleep(0.1)
  end
  return not alive(pid)
end

--- spec/.tmp/<name>-<pid>, created: the files of this process only, so
-- runs of the suite side by side in one tree never share a file.
function peers.tmpdir(name)
  local f = io.open("/proc/self/stat", "r")
  local pid = f and f:read("*l"):match("^(%d+)") or tostring(os.time())
  if f then f:close() end
  local dir = ROOT .. "/spec/.tmp/" .. name .. "-" .. pid
  assert(os.execute("mkdir -p " .. shell_quote(dir)))
  return dir
end

--- The whole content of a file (binary), or raises.
function peers.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

return peers
