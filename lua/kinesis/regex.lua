-- kinesis.regex - the subset of ECMAScript regular expressions used by the
-- `smithy.api#pattern` traits of the AWS model (anchors, classes, escapes,
-- groups with alternation, greedy quantifiers), compiled once to a
-- backtracking matcher over bytes. Lua patterns cannot express `{3,63}` or
-- `(0|[1-9]\d{0,38})`, so the model's patterns are interpreted, not retyped.

local byte, sub = string.byte, string.sub

local M = {}

-- a character set is a 256-entry boolean table indexed by byte value
local function set_of(pred)
  local t = {}
  for b = 0, 255 do t[b] = pred(b) and true or false end
  return t
end

local function is_digit(b) return b >= 48 and b <= 57 end
local function is_word(b)
  return is_digit(b) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b == 95
end
local function is_space(b) return b == 32 or (b >= 9 and b <= 13) end

local CLASS = {
  d = set_of(is_digit), D = set_of(function(b) return not is_digit(b) end),
  w = set_of(is_word), W = set_of(function(b) return not is_word(b) end),
  s = set_of(is_space), S = set_of(function(b) return not is_space(b) end),
}
local DOT = set_of(function(b) return b ~= 10 and b ~= 13 end)

local Parser = {}
Parser.__index = Parser

local function perr(p, msg)
  error(string.format("regex %q at %d: %s", p.src, p.pos, msg), 0)
end

function Parser:peek() return sub(self.src, self.pos, self.pos) end
function Parser:take()
  local c = sub(self.src, self.pos, self.pos)
  self.pos = self.pos + 1
  return c
end

-- escape outside or inside a class: returns a set
function Parser:escape()
  local c = self:take()
  if c == "" then perr(self, "dangling backslash") end
  if CLASS[c] then return CLASS[c] end
  if c:match("%w") then perr(self, "unsupported escape \\" .. c) end
  local b = byte(c)
  return set_of(function(x) return x == b end)
end

function Parser:class()
  -- after '['
  local negate = false
  if self:peek() == "^" then negate = true self:take() end
  local set = set_of(function() return false end)
  local first = true
  while true do
    local c = self:take()
    if c == "" then perr(self, "unterminated class") end
    if c == "]" and not first then break end
    first = false
    local lo
    if c == "\\" then
      local s = self:escape()
      local single
      local n = 0
      for b = 0, 255 do if s[b] then n = n + 1 single = b end end
      if n == 1 then lo = single else
        for b = 0, 255 do if s[b] then set[b] = true end end
      end
    else
      lo = byte(c)
    end
    if lo then
      if self:peek() == "-" and sub(self.src, self.pos + 1, self.pos + 1) ~= "]"
         and sub(self.src, self.pos + 1, self.pos + 1) ~= "" then
        self:take()
        local hc = self:take()
        local hi
        if hc == "\\" then
          local s = self:escape()
          for b = 0, 255 do if s[b] then hi = b break end end
        else
          hi = byte(hc)
        end
        if hi < lo then perr(self, "bad range") end
        for b = lo, hi do set[b] = true end
      else
        set[lo] = true
      end
    end
  end
  if negate then
    local n = {}
    for b = 0, 255 do n[b] = not set[b] end
    return n
  end
  return set
end

-- grammar: alt := seq ('|' seq)* ; seq := (atom quant?)* ; atom := set | group | ^ | $
function Parser:alt()
  local branches = { self:seq() }
  while self:peek() == "|" do
    self:take()
    branches[#branches + 1] = self:seq()
  end
  if #branches == 1 then return branches[1] end
  return { k = "alt", branches }
end

function Parser:seq()
  local items = {}
  while true do
    local c = self:peek()
    if c == "" or c == "|" or c == ")" then break end
    self:take()
    local atom
    if c == "^" then atom = { k = "bol" }
    elseif c == "$" then atom = { k = "eol" }
    elseif c == "." then atom = { k = "set", DOT }
    elseif c == "[" then atom = { k = "set", self:class() }
    elseif c == "\\" then atom = { k = "set", self:escape() }
    elseif c == "(" then
      if sub(self.src, self.pos, self.pos + 1) == "?:" then self.pos = self.pos + 2 end
      atom = self:alt()
      if self:take() ~= ")" then perr(self, "missing )") end
      atom = { k = "group", atom }
    elseif c == "*" or c == "+" or c == "?" or c == "{" then
      perr(self, "nothing to repeat")
    else
      local b = byte(c)
      atom = { k = "set", set_of(function(x) return x == b end) }
    end
    local q = self:peek()
    local min, max
    if q == "*" then min, max = 0, math.huge
    elseif q == "+" then min, max = 1, math.huge
    elseif q == "?" then min, max = 0, 1
    elseif q == "{" then
      local a, b2, e = self.src:match("^{(%d+)(,?%d*)}()", self.pos)
      if a then
        min = tonumber(a)
        if b2 == "" then max = min
        elseif b2 == "," then max = math.huge
        else max = tonumber(b2:sub(2)) end
        self.pos = e - 1
      end
    end
    if min then
      self:take()
      if self:peek() == "?" then perr(self, "lazy quantifiers are not supported") end
      atom = { k = "rep", atom, min = min, max = max }
    end
    items[#items + 1] = atom
  end
  return { k = "seq", items }
end

-- matcher: m(node, s, i, k) tries node at position i and calls k(j) on success
local match_node

local function match_seq(items, idx, s, i, k)
  if idx > #items then return k(i) end
  return match_node(items[idx], s, i, function(j)
    return match_seq(items, idx + 1, s, j, k)
  end)
end

function match_node(n, s, i, k)
  local kind = n.k
  if kind == "set" then
    local b = byte(s, i)
    if b and n[1][b] then return k(i + 1) end
    return false
  elseif kind == "seq" then
    return match_seq(n[1], 1, s, i, k)
  elseif kind == "alt" then
    for _, br in ipairs(n[1]) do
      if match_node(br, s, i, k) then return true end
    end
    return false
  elseif kind == "group" then
    return match_node(n[1], s, i, k)
  elseif kind == "bol" then
    if i == 1 then return k(i) end
    return false
  elseif kind == "eol" then
    if i == #s + 1 then return k(i) end
    return false
  elseif kind == "rep" then
    local inner = n[1]
    if inner.k == "set" then
      -- single-byte repetition: scan greedily, then back off without recursion
      local set, j, count = inner[1], i, 0
      while count < n.max do
        local b = byte(s, j)
        if not b or not set[b] then break end
        j, count = j + 1, count + 1
      end
      while count >= n.min do
        if k(i + count) then return true end
        count = count - 1
      end
      return false
    end
    local function rep(count, pos)
      if count < n.max then
        local ok = match_node(inner, s, pos, function(j)
          if j == pos then return false end -- no progress: stop looping
          return rep(count + 1, j)
        end)
        if ok then return true end
      end
      if count >= n.min then return k(pos) end
      return false
    end
    return rep(0, i)
  end
  error("bad regex node " .. tostring(kind))
end

--- Compiles an ECMAScript-style pattern; returns a function(s) -> boolean.
-- Like ECMAScript's RegExp.test, an unanchored pattern may match anywhere.
function M.compile(src)
  local p = setmetatable({ src = src, pos = 1 }, Parser)
  local ast = p:alt()
  if p.pos <= #src then perr(p, "unexpected " .. p:peek()) end
  local function accept() return true end
  return function(s)
    for start = 1, #s + 1 do
      if match_node(ast, s, start, accept) then return true end
    end
    return false
  end
end

return M
