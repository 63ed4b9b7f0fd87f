-- Build requirements stated by the C sources themselves: compiling against
-- a library older than the code needs must stop at once with a message that
-- names the requirement, not with a pile of undeclared identifiers (or, worse,
-- a module that fails to load). The old library is faked by a header that
-- shadows the real one on the include path.
local CC = os.getenv("CC") or "cc"
local CFLAGS = "-std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -fsyntax-only"
local LUA_CFLAGS
do
  local p = io.popen("pkg-config --cflags lua5.4 2>/dev/null")
  LUA_CFLAGS = (p and p:read("a") or ""):gsub("%s+$", "")
  if p then p:close() end
end

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, how, code = p:close()
  return ok == true and how == "exit" and code == 0, out
end

local function fake_header(dir, rel, text)
  os.execute("mkdir -p " .. dir .. "/" .. rel:match("^(.*)/"))
  local f = assert(io.open(dir .. "/" .. rel, "wb"))
  f:write(text)
  f:close()
end

describe("OpenSSL requirement (src/sigv4.h)", function()
  local dir = "spec/.tmp/fake-openssl-1.1.1"

  setup(function()
    os.execute("rm -rf " .. dir)
    -- OpenSSL 1.1.1w's version number; the guard name is 1.1.1's own
    fake_header(dir, "openssl/opensslv.h", [[
#ifndef HEADER_OPENSSLV_H
#define HEADER_OPENSSLV_H
#define OPENSSL_VERSION_NUMBER 0x1010117fL
#define OPENSSL_VERSION_TEXT "OpenSSL 1.1.1w  11 Sep 2023"
#endif
]])
  end)

  teardown(function() os.execute("rm -rf " .. dir) end)

  for _, file in ipairs({ "src/sigv4.c", "src/l_sigv4.c" }) do
    it(file .. " compiles against the installed OpenSSL", function()
      local lua = file:match("/l_") and (" " .. LUA_CFLAGS) or ""
      local ok, out = run(string.format("%s %s%s -Isrc %s", CC, CFLAGS, lua, file))
      assert(ok, out)
    end)

    it(file .. " refuses OpenSSL 1.1.1 with a message naming OpenSSL 3", function()
      local lua = file:match("/l_") and (" " .. LUA_CFLAGS) or ""
      local ok, out = run(string.format("%s %s%s -I%s -Isrc %s", CC, CFLAGS, lua, dir, file))
      assert.is_false(ok)
      assert.matches("#error", out, 1, true)
      assert.matches("OpenSSL 3.0 or newer is required", out, 1, true)
    end)
  end
end)
