-- Shared by every transition script. The prelude before this defines
--   G_<GROUP STATE> and B_<BRANCH STATE> (numbers) and
--   BRANCH_NAMES (number -> name, as Go's String()).
-- Everything is local: Redis forbids globals in scripts.
--
-- A record r is the group's hash as read by one HGETALL: r.f the flat
-- field/value list, r.p field name -> index of its value in r.f, r.w the
-- field/value pairs written so far. set changes r.f in place, so the reply
-- is r.f itself: no JSON is decoded or encoded, and nothing is assembled.

local function bname(s) return BRANCH_NAMES[s] or string.format('BranchState(%d)', s) end

local function done(s) return s == B_COMMITTED or s == B_ROLLED_BACK or s == B_LOST end

local function terminal(s) return s == G_COMMITTED or s == G_ROLLED_BACK end

-- load returns the record at key, or nil.
local function load(key)
  local f = redis.call('HGETALL', key)
  if #f == 0 then return nil end
  local p = {}
  for i = 1, #f, 2 do p[f[i]] = i + 1 end
  return {f = f, p = p, w = {}}
end

local function get(r, name)
  local i = r.p[name]
  if i then return r.f[i] end
  return nil
end

local function set(r, name, v)
  v = tostring(v)
  local i = r.p[name]
  if i then
    r.f[i] = v
  else
    local n = #r.f
    r.f[n + 1] = name
    r.f[n + 2] = v
    r.p[name] = n + 2
  end
  local w = r.w
  w[#w + 1] = name
  w[#w + 1] = v
end

local function count(r) return tonumber(get(r, 'n')) or 0 end

local function bstate(r, i) return tonumber(get(r, 'S' .. i)) end

-- unpack_fields splits a packed value: <len>:<bytes> repeated.
local function unpack_fields(s)
  local out, pos = {}, 1
  while pos <= #s do
    local c = string.find(s, ':', pos, true)
    if not c then break end
    local len = tonumber(string.sub(s, pos, c - 1)) or 0
    out[#out + 1] = string.sub(s, c + 1, c + len)
    pos = c + len + 1
  end
  return out
end

-- branch returns branch i's fixed fields: {id, service, instance, datasource, mode}.
local function branch(r, i) return unpack_fields(get(r, 'B' .. i) or '') end

-- save writes the changed fields; a terminal group (state gs) gets its
-- retention as TTL. Returns the success reply.
local function save(key, r, retention, gs)
  redis.call('HSET', key, unpack(r.w))
  if terminal(gs) then redis.call('PEXPIRE', key, retention) end
  return {'OK', r.f}
end

local function conflict(r, gs, detail)
  return {'C', gs, detail, get(r, 'dl') or '0'}
end

-- finish_if_done moves a decided group (state gs) whose branches are all
-- done to its terminal state (Group.finishIfDone). Returns the new state.
local function finish_if_done(r, gs, at)
  if gs ~= G_COMMITTING and gs ~= G_ROLLING_BACK then return gs end
  for i = 1, count(r) do
    if not done(bstate(r, i)) then return gs end
  end
  if gs == G_COMMITTING then gs = G_COMMITTED else gs = G_ROLLED_BACK end
  set(r, 's', gs)
  set(r, 'fm', at)
  return gs
end
