-- kinesis.ini - the AWS shared config and credentials file format: sections,
-- `name = value` properties, indented sub-properties (`s3 =` then
-- `  max_concurrent_requests = 10`) and continuation lines. Full-line `#` and
-- `;` comments; values keep any `#` or `;` (credential_process commands may
-- contain them). Pure string work; the credential chain does the file I/O.
-- Format: https://docs.aws.amazon.com/sdkref/latest/guide/file-format.html

local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local open = io.open

local M = {}

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- Parses one file's text. Returns { sections = { [header] = { key = value
-- | { sub = value } } }, order = { header, ... } } or nil, err. Error messages
-- give the line number only: a malformed line may hold a secret.
function M.parse(text)
  if type(text) ~= "string" then
    error("kinesis.ini.parse: string expected, got " .. type(text), 2)
  end
  local sections, order = {}, {}
  local section, last_key, last_is_parent
  local lineno = 0
  -- split on \n, tolerating \r\n
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    lineno = lineno + 1
    if lineno == 1 then line = line:gsub("^\239\187\191", "") end  -- UTF-8 BOM
    local first = line:match("^%s*(.)")
    if first == nil or first == "#" or first == ";" then
      -- blank or comment line: does not end a sub-property block
    elseif first == "[" then
      -- "[name]" with optional trailing comment after the bracket
      local header, rest = line:match("^%s*%[([^%]]*)%](.*)$")
      if not header or not (rest:match("^%s*$") or rest:match("^%s*[#;]")) then
        return nil, ("line %d: malformed section header"):format(lineno)
      end
      header = trim(header)
      if header == "" then return nil, ("line %d: empty section name"):format(lineno) end
      section = sections[header]
      if not section then
        section = {}
        sections[header] = section
        order[#order + 1] = header
      end
      last_key, last_is_parent = nil, false
    elseif line:match("^%s") then
      -- indented: a sub-property of a parent key, or a continuation line
      if not section or not last_key then
        return nil, ("line %d: indented line without a property above it"):format(lineno)
      end
      local content = trim(line)
      if last_is_parent then
        local k, v = content:match("^([^=]-)%s*=%s*(.*)$")
        if not k or k == "" then
          return nil, ("line %d: expected 'name = value' in a sub-property block"):format(lineno)
        end
        section[last_key][k:lower()] = v
      else
        section[last_key] = section[last_key] .. "\n" .. content
      end
    else
      if not section then
        return nil, ("line %d: property outside any section"):format(lineno)
      end
      local k, v = line:match("^([^=]-)%s*=%s*(.-)%s*$")
      if not k or k == "" then
        return nil, ("line %d: expected 'name = value'"):format(lineno)
      end
      k = k:lower()
      if v == "" then
        section[k] = {}     -- becomes a parent if indented lines follow
        last_is_parent = true
      else
        section[k] = v
        last_is_parent = false
      end
      last_key = k
    end
  end
  -- a parent key with no sub-properties is just an empty value
  for _, name in ipairs(order) do
    for k, v in pairs(sections[name]) do
      if type(v) == "table" and next(v) == nil then sections[name][k] = "" end
    end
  end
  return { sections = sections, order = order }
end

--- Profiles of a config file: "[default]" and "[profile NAME]"; a bare
-- "[NAME]" other than default is not a profile there. "[profile default]"
-- wins over "[default]". Other section kinds (sso-session, services) are
-- returned by kind: { ["sso-session"] = { name = props } }.
function M.config_profiles(parsed)
  local profiles, others = {}, {}
  local plain_default
  for _, header in ipairs(parsed.order) do
    local props = parsed.sections[header]
    local kind, name = header:match("^(%S+)%s+(.-)$")
    if header == "default" then
      plain_default = props
    elseif kind == "profile" and name ~= "" then
      profiles[name] = props
    elseif kind and name ~= "" then
      others[kind] = others[kind] or {}
      others[kind][name] = props
    end
  end
  if plain_default and not profiles.default then profiles.default = plain_default end
  return profiles, others
end

--- Profiles of a credentials file: every section is a profile, by its name.
function M.credentials_profiles(parsed)
  local profiles = {}
  for _, header in ipairs(parsed.order) do profiles[header] = parsed.sections[header] end
  return profiles
end

--- Reads a file: its text, false when it does not exist, or nil, err.
function M.read(path)
  local f, err, errno = open(path, "rb")
  if not f then
    if errno == 2 then return false end   -- ENOENT
    return nil, tostring(err)
  end
  local text = f:read("*a")
  f:close()
  if text == nil then return nil, path .. ": cannot read" end
  return text
end

--- Loads and merges the two files. Properties from the credentials file win
-- over the config file's for the same profile (as the AWS CLI does).
-- Returns profiles, info or nil, err. info = { config = bool (file existed),
-- credentials = bool, others = non-profile sections of the config file }.
function M.load(config_path, credentials_path)
  local profiles, info = {}, { config = false, credentials = false, others = {} }
  if config_path then
    local text, err = M.read(config_path)
    if text == nil then return nil, err end
    if text then
      local parsed, perr = M.parse(text)
      if not parsed then return nil, config_path .. ": " .. perr end
      local p, others = M.config_profiles(parsed)
      for name, props in pairs(p) do
        local copy = {}
        for k, v in pairs(props) do copy[k] = v end
        profiles[name] = copy
      end
      info.config, info.others = true, others
    end
  end
  if credentials_path then
    local text, err = M.read(credentials_path)
    if text == nil then return nil, err end
    if text then
      local parsed, perr = M.parse(text)
      if not parsed then return nil, credentials_path .. ": " .. perr end
      for name, props in pairs(M.credentials_profiles(parsed)) do
        local merged = profiles[name] or {}
        for k, v in pairs(props) do merged[k] = v end
        profiles[name] = merged
      end
      info.credentials = true
    end
  end
  return profiles, info
end

return M
