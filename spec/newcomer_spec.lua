-- A newcomer's first hour, run as the README writes it: the commands are
-- taken from the README's own code blocks (so the spec fails when the
-- README drifts from what works) and run in a shell with a clean
-- environment. The build is assumed done (tools/test.sh runs after make);
-- the local Kinesis runs on free ports with a pid file of its own, chosen
-- through the environment so the README's command line runs unchanged.

local ROOT = require("support.peers").root

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell script with only PATH and HOME from this environment.
local function sh(script, env)
  local path = os.tmpname()
  write(path, script)
  local vars = { "PATH=" .. shell_quote(os.getenv("PATH")), "HOME=" .. shell_quote(os.getenv("HOME")) }
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. shell_quote(v) end
  local p = io.popen(("env -i %s sh %s 2>&1; echo \"__rc=$?\""):format(table.concat(vars, " "), path))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return tonumber(out:match("__rc=(%d+)%s*$")), out:gsub("__rc=%d+%s*$", "")
end

-- The README's text of one section: from its heading to the next heading
-- of the same or a higher level.
local function section(text, heading)
  local level = #heading:match("^(#+)")
  local start = text:find("\n" .. heading .. "\n", 1, true)
  assert(start, "README has no section " .. heading)
  local rest = text:sub(start + #heading + 2)
  local stop
  for pos, hashes in rest:gmatch("\n()(#+) ") do
    if #hashes <= level then stop = pos break end
  end
  return stop and rest:sub(1, stop - 1) or rest
end

local function blocks(text, lang)
  local list = {}
  for body in ("\n" .. text):gmatch("\n```" .. lang .. "\n(.-)\n```") do list[#list + 1] = body end
  return list
end

local function block_with(text, lang, needle)
  for _, b in ipairs(blocks(text, lang)) do
    if b:find(needle, 1, true) then return b end
  end
  error("no ```" .. lang .. " block with " .. needle)
end

-- A shell line without its trailing comment.
local function command(line)
  return (line:gsub("%s+#.*$", ""))
end

local function free_port()
  local p = io.popen([[node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })']])
  local port = tonumber(p:read("a"))
  p:close()
  return assert(port)
end

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local state = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= nil and state ~= "Z"
end

local function listening(port)
  return os.execute(("curl -s -o /dev/null --max-time 2 http://127.0.0.1:%d/"):format(port)) == true
end

describe("the README's newcomer path", function()
  local readme = read(ROOT .. "/README.md")
  local tmp = os.tmpname()
  os.remove(tmp)
  os.execute("mkdir -p " .. tmp)
  local pid_file = tmp .. "/local-kinesis.pid"

  lazy_teardown(function()
    -- stop whatever a failed test left running, by its own pid file
    sh("cd " .. shell_quote(ROOT) .. " && sh tools/local-kinesis.sh --stop; true", { KINESIS_LOCAL_PID_FILE = pid_file })
    os.execute("rm -rf " .. shell_quote(tmp))
  end)

  -- "### From the source tree": make, the two export lines, the version check
  local source_tree = block_with(section(readme, "### From the source tree"), "sh", "export LUA_PATH")
  local setup = {}
  local version_check, expected_version
  for line in source_tree:gmatch("[^\n]+") do
    if line:match("^export LUA_C?PATH=") then
      setup[#setup + 1] = command(line)
    elseif line:match("^lua5%.4 %-e") then
      version_check = command(line)
      expected_version = line:match("#%s*(%S+)%s*$")
    end
  end

  it("builds with make and finds the modules with the LUA_PATH line, from the repository root", function()
    assert.truthy(source_tree:find("^make%s"), "the block does not start with make")
    assert.equal(2, #setup)
    assert.truthy(version_check and expected_version)
    local rc, out = sh("cd " .. shell_quote(ROOT) .. "\n" .. table.concat(setup, "\n") .. "\n" .. version_check .. "\n")
    assert.equal(0, rc, out)
    assert.equal(expected_version, out:match("([^\n]*)\n?$"))
    -- without those lines the same check fails: they are what makes it work
    rc, out = sh("cd " .. shell_quote(ROOT) .. "\n" .. version_check .. "\n")
    assert.are_not.equal(0, rc, out)
  end)

  it("prints the environment lines the README shows", function()
    local shown = block_with(section(readme, "## A local Kinesis in one command"), "sh", "AWS_ENDPOINT_URL_KINESIS")
    local rc, out = sh("cd " .. shell_quote(ROOT) .. " && sh tools/local-kinesis.sh --env")
    assert.equal(0, rc, out)
    assert.equal(shown:gsub("/path/to/lua%-kinesis", ROOT) .. "\n", out)
  end)

  it("starts a local Kinesis, runs the quick start as written, and stops", function()
    local local_section = section(readme, "## A local Kinesis in one command")
    local start = command(block_with(local_section, "sh", "--background"))
    assert.truthy(start:find("^eval "), start)
    assert.truthy(local_section:find("`make local-kinesis-stop` stops it", 1, true))

    local quick = section(readme, "## Quick start")
    local file = quick:match("save this as `([^`]+)`")
    assert.truthy(file, "the quick start does not say where to save the code")
    local code = blocks(quick, "lua")[1]
    write(tmp .. "/" .. file, code .. "\n")
    local run_line = command(block_with(quick, "sh", file))
    local expected = quick:match("It prints:\n\n```\n(.-)\n```")
    assert.truthy(expected, "the quick start shows no output")

    local port, tls_port = free_port(), free_port()
    local script = table.concat({
      "cd " .. shell_quote(ROOT),
      setup[1], setup[2],
      start,
      "cd " .. shell_quote(tmp),
      "echo __output_begin",
      run_line,
      "rc=$?",
      "echo __output_end",
      "cd " .. shell_quote(ROOT),
      "make --no-print-directory local-kinesis-stop",
      "exit $rc",
    }, "\n") .. "\n"
    local rc, out = sh(script, { KINESIS_LOCAL_PORT = tostring(port), KINESIS_LOCAL_TLS_PORT = tostring(tls_port),
      KINESIS_LOCAL_PID_FILE = pid_file })
    assert.equal(0, rc, out)
    local printed = out:match("__output_begin\n(.-)__output_end")
    assert.equal(expected .. "\n", printed)
    -- stopped by the README's stop command: pid file gone, port closed
    assert.falsy(io.open(pid_file, "r"), "the pid file is left behind")
    assert.falsy(listening(port), "kinesis-local still listens on " .. port)
  end)

  it("make local-kinesis runs in the foreground until Ctrl-C", function()
    local port, tls_port = free_port(), free_port()
    local log = tmp .. "/foreground.log"
    -- a process group of its own, as a terminal gives it; Ctrl-C = SIGINT to the group
    local p = io.popen(("cd %s && KINESIS_LOCAL_PORT=%d KINESIS_LOCAL_TLS_PORT=%d setsid make --no-print-directory local-kinesis >%s 2>&1 & echo $!")
      :format(shell_quote(ROOT), port, tls_port, shell_quote(log)))
    local pgid = tonumber(p:read("l"))
    p:close()
    local up = false
    for _ = 1, 300 do
      if listening(port) then up = true break end
      os.execute("sleep 0.1")
    end
    assert.truthy(up, read(log))
    local printed = read(log)
    assert.truthy(printed:find("export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:" .. port, 1, true), printed)
    assert.truthy(printed:find("Ctrl-C stops it", 1, true), printed)
    os.execute("kill -INT -" .. pgid)
    for _ = 1, 100 do
      if not alive(pgid) and not listening(port) then break end
      os.execute("sleep 0.1")
    end
    local gone = not listening(port)
    if not gone then os.execute("kill -KILL -" .. pgid .. " 2>/dev/null") end
    assert.truthy(gone, "kinesis-local still listens after SIGINT")
  end)
end)
