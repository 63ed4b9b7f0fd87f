-- nginx.lua - starts a real nginx (Debian nginx + lua-nginx-module, LuaJIT)
-- from a configuration template under spec/nginx/ in a fresh prefix on a
-- free loopback port, and talks to it with the curl command-line tool, so
-- the harness never depends on the library under test. A watchdog stops
-- nginx when the Lua process that started it dies first.
--
--   local nginx = require "support.nginx"
--   local srv = nginx.start{ conf = "spec/nginx/contract.conf", vars = { CAFILE = ... },
--                            files = { ["name.lua"] = "return {}" }, dns = true,
--                            env = { AWS_REGION = "us-east-1" } }
--   local status, body = srv:post("/case/x", '{"json":1}')
--   srv:log(); srv:stop()
local peers = require "support.peers"

local M = {
  binary = os.getenv("NGINX") or "/usr/sbin/nginx",
  modules = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules",
  cjson_cpath = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so",
}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- exit code and combined output of a shell command
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, (out:gsub("__rc=%d+%s*$", ""))
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local PARENT_PID = tonumber((select(2, run("echo $PPID"))):match("%d+"))

-- a port nothing listens on right now (the kernel picks it, then it is freed)
function M.free_port()
  local socket = require "socket"
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function eventually(f, tries, what)
  for _ = 1, tries do
    local v = f()
    if v then return v end
    os.execute("sleep 0.1")
  end
  error("gave up waiting for " .. what, 3)
end

-- spec/nginx/dns.js in the background (nginx resolves cosocket host names
-- only through its `resolver`, never /etc/hosts): { port, pid, stop }
local function start_dns()
  local log = os.tmpname()
  local rc, out = run("node " .. sh_quote(peers.root .. "/spec/nginx/dns.js") .. " --parent " .. PARENT_PID
    .. " > " .. sh_quote(log) .. " 2>&1 & echo $!")
  assert(rc == 0, out)
  local pid = tonumber(out:match("%d+"))
  local port = eventually(function()
    local p = (read_file(log) or ""):match('"port":(%d+)')
    return p and tonumber(p)
  end, 100, "the DNS helper")
  return { port = port, pid = pid, stop = function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.remove(log)
  end }
end

local Nginx = {}
Nginx.__index = Nginx

--- POSTs `body` to `path`; returns status, body text. Raises when curl fails.
function Nginx:post(path, body, max_time)
  local tmp = os.tmpname()
  write_file(tmp, body or "")
  local rc, out = run("curl -sS --noproxy '*' --max-time " .. (max_time or 120)
    .. " -X POST --data-binary @" .. sh_quote(tmp) .. " -w '\\n%{http_code}' "
    .. sh_quote("http://127.0.0.1:" .. self.port .. path))
  os.remove(tmp)
  local text, code = out:match("^(.*)\n(%d%d%d)$")
  if rc ~= 0 or not code then error("nginx POST " .. path .. " failed: " .. out, 2) end
  return tonumber(code), text
end

function Nginx:log()
  return read_file(self.prefix .. "/logs/error.log") or ""
end

function Nginx:stop()
  if self.stopped then return true end
  self.stopped = true
  os.execute("kill -QUIT " .. self.pid .. " 2>/dev/null")
  for _ = 1, 50 do
    if not peers.alive(self.pid) then break end
    os.execute("sleep 0.1")
  end
  if peers.alive(self.pid) then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
  os.execute("rm -rf " .. sh_quote(self.prefix))
  if self.dns then self.dns.stop() end
  return not peers.alive(self.pid)
end

--- opts: conf (template path, relative to the project root) or text (the
-- template itself), vars (values for its {{NAME}} placeholders; MODULES,
-- PREFIX, ROOT, PORT and CJSON_CPATH are filled in here), files (name ->
-- text, written into the prefix), env (name -> value, nginx's environment),
-- dns (true: also start spec/nginx/dns.js, which answers localhost and
-- kinesis.spec.test with 127.0.0.1, and fill in DNS_PORT).
-- The template must serve `location = /ready`; its pid file is nginx.pid in
-- the prefix or in logs/ (the shipped example keeps nginx's default).
function M.start(opts)
  local dns = opts.dns and start_dns() or nil
  local port = M.free_port()
  local prefix = os.tmpname()
  os.remove(prefix)
  assert(os.execute("mkdir -p " .. sh_quote(prefix .. "/logs") .. " " .. sh_quote(prefix .. "/tmp")))
  for name, text in pairs(opts.files or {}) do write_file(prefix .. "/" .. name, text) end
  local vars = { MODULES = M.modules, PREFIX = prefix, ROOT = peers.root, PORT = port,
                 CJSON_CPATH = M.cjson_cpath, DNS_PORT = dns and dns.port }
  for k, v in pairs(opts.vars or {}) do vars[k] = v end
  local template = opts.text or assert(read_file(peers.root .. "/" .. opts.conf), "no template " .. tostring(opts.conf))
  local conf = template:gsub("{{([%w_]+)}}", function(k)
    assert(vars[k] ~= nil, "template variable " .. k .. " has no value")
    return tostring(vars[k])
  end)
  write_file(prefix .. "/nginx.conf", conf)
  local envs = {}
  for k, v in pairs(opts.env or {}) do envs[#envs + 1] = k .. "=" .. sh_quote(v) end
  table.sort(envs)
  local rc, out = run((#envs > 0 and ("env " .. table.concat(envs, " ") .. " ") or "")
    .. sh_quote(M.binary) .. " -p " .. sh_quote(prefix) .. " -c "
    .. sh_quote(prefix .. "/nginx.conf") .. " -e " .. sh_quote(prefix .. "/logs/error.log"))
  if rc ~= 0 then
    if dns then dns.stop() end
    error("nginx did not start (" .. out .. ")\n" .. (read_file(prefix .. "/logs/error.log") or ""), 2)
  end
  local pid = eventually(function()
    local s = read_file(prefix .. "/nginx.pid") or read_file(prefix .. "/logs/nginx.pid")
    return s and tonumber(s:match("%d+"))
  end, 50, "nginx.pid")
  os.execute(("sh -c 'while kill -0 %d 2>/dev/null; do if ! kill -0 %d 2>/dev/null; then kill -QUIT %d; exit 0; fi; sleep 1; done' >/dev/null 2>&1 &")
    :format(pid, PARENT_PID, pid))
  eventually(function()
    return run("curl -sf -o /dev/null --noproxy '*' --max-time 2 http://127.0.0.1:" .. port .. "/ready") == 0
  end, 100, "nginx to answer")
  return setmetatable({ prefix = prefix, port = port, pid = pid, dns = dns }, Nginx)
end

return M
