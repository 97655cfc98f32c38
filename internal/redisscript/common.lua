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

-- save counts the version (field v) and writes the changed fields and the operator data that goes with
-- them, in the group's other keys (same hash tag): KEYS[2] the timeline (a
-- list of JSON events; ARGV[7] this transition's event (and ARGV[11], when
-- not empty, a second one), ARGV[8] how many
-- events are kept), KEYS[3] the markers (hash: marker id -> JSON; the
-- record's field mo counts the open ones). A branch this transition made
-- LOST gets its branch_lost marker. A group that became terminal (state
-- gs) has its open phase2_stuck marker resolved and, with no open marker
-- left, its keys get the retention as TTL. Returns the success reply:
-- {'OK', fields} or, when it resolved the phase2_stuck marker,
-- {'OK', fields, that marker's created_ms}.
local function save(key, r, retention, gs)
  set(r, 'v', (tonumber(get(r, 'v')) or 0) + 1)
  redis.call('HSET', key, unpack(r.w))
  local ev, mk = KEYS[2], KEYS[3]
  redis.call('RPUSH', ev, ARGV[7])
  if ARGV[11] and ARGV[11] ~= '' then redis.call('RPUSH', ev, ARGV[11]) end
  redis.call('LTRIM', ev, -tonumber(ARGV[8]), -1)
  local gid = unpack_fields(get(r, 'h') or '')[1] or ''
  local lost = tostring(B_LOST)
  for j = 1, #r.w, 2 do
    local name = r.w[j]
    if string.sub(name, 1, 1) == 'S' and r.w[j + 1] == lost then
      local b = branch(r, string.sub(name, 2))
      local id = gid .. '.' .. (b[1] or '')
      local m = {id = id, kind = 'branch_lost', group = gid, branch = b[1], service = b[2], instance = b[3],
        detail = ARGV[3], created_ms = ARGV[2]}
      if redis.call('HSETNX', mk, id, cjson.encode(m)) == 1 then redis.call('HINCRBY', key, 'mo', 1) end
    end
  end
  local reply = {'OK', r.f}
  if terminal(gs) then
    local sid = gid .. '.phase2'
    local raw = redis.call('HGET', mk, sid)
    if raw then
      local m = cjson.decode(raw)
      if not m.resolution then
        m.resolution = {by = 'txmanager', at_ms = ARGV[2], reason = 'phase 2 finished'}
        redis.call('HSET', mk, sid, cjson.encode(m))
        redis.call('HINCRBY', key, 'mo', -1)
        reply[3] = m.created_ms
      end
    end
    if (tonumber(redis.call('HGET', key, 'mo')) or 0) <= 0 then
      redis.call('PEXPIRE', key, retention)
      redis.call('PEXPIRE', ev, retention)
      redis.call('PEXPIRE', mk, retention)
    end
  end
  return reply
end

local function conflict(r, gs, detail)
  return {'C', gs, detail, get(r, 'dl') or '0'}
end

-- stale returns the conflict reply when ARGV[9] names a version (field v,
-- absent = 0) other than the record's: the caller stepped an older copy.
-- An empty ARGV[9] checks nothing.
local function stale(r)
  local want = ARGV[9]
  if want == nil or want == '' then return nil end
  local have = get(r, 'v') or '0'
  if have == want then return nil end
  return conflict(r, tonumber(get(r, 's')), 'stale: the group changed (version ' .. have .. ', expected ' .. want .. ')')
end

-- vote_on moves branch id of r to state to (a decimal string: READY,
-- PREPARED or FAILED) with reason, under the vote rules: in an ACTIVE group
-- REGISTERED, READY and PREPARED may vote; in a PREPARING group only READY
-- may, to PREPARED or FAILED. Returns nil, or the refusal reply.
local function vote_on(r, id, to, reason)
  local i = get(r, 'K' .. id)
  if not i then return {'B'} end
  local gs = tonumber(get(r, 's'))
  local bs = bstate(r, i)
  local ton = tonumber(to)
  if gs == G_ACTIVE then
    if bs ~= B_REGISTERED and bs ~= B_READY and bs ~= B_PREPARED then
      return conflict(r, gs, 'branch ' .. id .. ' is ' .. bname(bs) .. ', cannot vote')
    end
  elseif gs == G_PREPARING then
    if bs ~= B_READY or ton == B_READY then
      return conflict(r, gs, 'branch ' .. id .. ' is ' .. bname(bs) .. ', cannot vote ' .. bname(ton) .. ' while preparing')
    end
  else
    return conflict(r, gs, 'vote refused: group already decided')
  end
  set(r, 'S' .. i, to)
  set(r, 'R' .. i, reason)
  return nil
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
