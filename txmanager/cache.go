package txmanager

import "sync"

// groupCache keeps this TxManager's copy of each open group it created or
// last changed, so that a client's join, vote, decision or acknowledgement
// is stepped without reading the store first (one store round trip less
// per message).
//
// An entry is only a hint. Every transition stepped from a cached copy is a
// compare-and-set on the copy's Version (Transition.CheckVersion), so if the
// group changed since (another TxManager sharing the store, or an operator),
// the store refuses it and the server steps the event again from the
// store's record: a stale entry costs a round trip, never a decision. An
// event whose step from the copy changes nothing is stepped again from the
// store too, so that every answer that is not a transition reads the store,
// as without the cache.
//
// Entries are removed when their group becomes terminal or a transition
// from them is refused, and all at once when there are more than max (the
// cache holds open groups only, so it refills from the next messages).
type groupCache struct {
	mu  sync.Mutex        // guards m
	m   map[string]*Group // group id -> a copy no one else holds
	max int
}

func newGroupCache(max int) *groupCache {
	return &groupCache{m: make(map[string]*Group), max: max}
}

// get returns a copy of the cached record of id, or nil.
func (c *groupCache) get(id string) *Group {
	c.mu.Lock()
	g := c.m[id]
	c.mu.Unlock()
	if g == nil {
		return nil
	}
	return g.Clone()
}

// put caches a copy of g, or drops g's entry if g is terminal.
func (c *groupCache) put(g *Group) {
	if g.State.Terminal() {
		c.drop(g.ID)
		return
	}
	g = g.Clone()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[g.ID]; !ok && len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[g.ID] = g
}

// drop removes id's entry.
func (c *groupCache) drop(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// len returns the number of entries.
func (c *groupCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// cacheable reports whether an event of kind k may be stepped from a cached
// copy: the messages of a group's normal life. The reaper's ticks, the
// retrier and reconnecting clients read the store.
func cacheable(k EventKind) bool {
	switch k {
	case EvJoin, EvVote, EvDecide, EvPrepared, EvAck:
		return true
	}
	return false
}

// cachedActive returns the cached record of group when a query about it
// (naming branch, or none) may be answered from the cache: no branch is
// named, and the copy is ACTIVE before its deadline. Otherwise nil: ask the
// store.
func (s *Server) cachedActive(group, branch string) *Group {
	if branch != "" {
		return nil
	}
	g := s.cache.get(group)
	if g == nil || g.State != GroupActive || s.nowMS() >= g.DeadlineMS {
		return nil
	}
	return g
}
