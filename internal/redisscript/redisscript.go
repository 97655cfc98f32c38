// Package redisscript holds the Lua scripts of the txmanager Redis store.
//
// Each transition script performs one transition kind on one group as a
// single atomic compare-and-set: it loads the group's record from KEYS[1],
// checks the transition's preconditions against the record's current
// (expected old) state, and either saves the changed fields and returns the
// record, or changes nothing and returns a typed refusal. The rules are those
// of txmanager.ApplyTransition, which stays the one definition: the store's
// conformance tests compare every script with it, error text included.
//
// The transition scripts are not complete on their own: the caller prepends
// a prelude that defines the state constants and branch state names
// (generated from the Go types, so the numbers cannot drift). See Source.
//
// # Record
//
// A group is one hash of raw strings; nothing in it is JSON. Values that
// never change are packed, each part written as <length>:<bytes>, so they
// need no escaping:
//
//	h      packed id, starter_service, starter, created_ms
//	dl     DeadlineMS, decimal (refusals and the index readers need it)
//	s      group state number
//	dm fm  DecidedMS, FinishedMS, decimal (absent or empty: 0)
//	r      the group's reason
//	a      attention (empty: none)
//	n      number of branches
//	K<id>  the index (1…n) of the branch with that id
//	B<i>   packed id, service, instance, datasource, mode of branch i
//	S<i>   branch i's state number
//	R<i>   branch i's reason
//	mo     number of open compensation markers (absent: 0)
//	v      version: transitions applied since the group was created (absent: 0)
//
// The group's other keys share its hash tag: its timeline, a list of JSON
// events (newest last, trimmed to a bound), and its compensation markers,
// a hash from marker id to JSON. A terminal group's keys get the retention
// as TTL together, unless the group has an open marker; resolving the last
// one sets it then.
//
// A script reads the record with one HGETALL and writes the fields it
// changed with one HSET; its success reply is the whole field list after the
// change, which the Go side decodes as it decodes HGETALL. Times are kept as
// the decimal strings the Go side sent, so they are exact for every int64
// (Lua numbers are doubles).
//
// # Arguments
//
// The four transition scripts take KEYS[1] the record, KEYS[2] the
// timeline, KEYS[3] the markers (branch-done also an optional KEYS[4], the
// undone index, which a group it makes terminal leaves: only on a single
// server, where a script may touch keys outside the group's slot), and one
// ARGV layout:
//
//	ARGV[1] retention of a terminal group, in milliseconds (PEXPIRE)
//	ARGV[2] the transition's time, unix ms, decimal
//	ARGV[3] reason (join: the new branch's)
//	ARGV[4] branch id (join, vote, branch-done; decide: the branch whose vote it carries, or empty)
//	ARGV[5] target state number (vote, branch-done: branch; decide: group)
//	ARGV[6] join: the new branch's packed B field; decide: the carried vote's state number (others: empty)
//	ARGV[7] the transition's timeline event, JSON
//	ARGV[8] how many timeline events are kept
//	ARGV[9] the version the record must have (empty: any); refused as stale otherwise
//	ARGV[10] decide: the carried vote's reason (others: empty)
//	ARGV[11] a second timeline event, appended after ARGV[7] (empty: none)
//
// # Replies
//
//	{"OK", {field, value, …}}           success: the record after the transition
//	{"OK", {field, value, …}, created}   success, and the group's phase2_stuck
//	                                    marker (created at created, unix ms) was resolved
//	{"C", state, detail, deadline_ms}   refused by the group's state
//	{"G"}                               no such group
//	{"B"}                               no such branch in the group
//	{"P", message}                      a transition no caller can legally build (a bug)
package redisscript

import _ "embed"

var (
	//go:embed common.lua
	common string
	//go:embed join.lua
	join string
	//go:embed vote.lua
	vote string
	//go:embed decide.lua
	decide string
	//go:embed branch_done.lua
	branchDone string
	//go:embed add_marker.lua
	addMarker string
	//go:embed resolve.lua
	resolve string
)

// Create writes a new record: KEYS[1] the record's key, KEYS[2] its
// timeline's, ARGV field, value, … pairs and then the "created" event. It
// replies 1 if it created the record, 0 if the key exists. It needs no
// prelude.
//
//go:embed create.lua
var Create string

// Transition script names, for Source.
const (
	Join       = "join"
	Vote       = "vote"
	Decide     = "decide"
	BranchDone = "branch-done"
	// AddMarker and Resolve are the compensation marker scripts (see
	// add_marker.lua and resolve.lua for their keys and arguments).
	AddMarker = "add-marker"
	Resolve   = "resolve"
)

// Source returns the complete source of the named transition script:
// prelude, then the shared helpers, then the script's body. It panics on an
// unknown name.
func Source(prelude, name string) string {
	var body string
	switch name {
	case Join:
		body = join
	case Vote:
		body = vote
	case Decide:
		body = decide
	case BranchDone:
		body = branchDone
	case AddMarker:
		body = addMarker
	case Resolve:
		body = resolve
	default:
		panic("redisscript: unknown script " + name)
	}
	return prelude + "\n" + common + "\n" + body
}
