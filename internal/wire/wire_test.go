package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/golcn/golcn/internal/wire"
)

const (
	gID = "0123456789abcdef0123456789abcdef"
	bID = "fedcba9876543210fedcba9876543210"
)

// msg builds a frame from the JSON members after the version.
func msg(members string) string {
	if members == "" {
		return `{"v":1}`
	}
	return `{"v":1,` + members + `}`
}

// q quotes s as a JSON string.
func q(s string) string { return fmt.Sprintf("%q", s) }

type validRow struct {
	name  string
	frame string
	want  wire.Message // checked field by field after decoding (V is always 1)
}

var validRows = []validRow{
	{"hello", msg(`"type":"hello","id":1,"service":"order","instance":"order-1","token":"s3cret"`),
		wire.Message{Type: wire.TypeHello, ID: 1, Service: "order", Instance: "order-1", Token: "s3cret"}},
	{"hello with held", msg(`"type":"hello","id":2,"service":"order","instance":"order-1","held":[{"group":"` + gID + `","branch":"` + bID + `"}]`),
		wire.Message{Type: wire.TypeHello, ID: 2, Service: "order", Instance: "order-1", Held: []wire.BranchRef{{Group: gID, Branch: bID}}}},
	{"create", msg(`"type":"create","id":3,"timeout_ms":5000`),
		wire.Message{Type: wire.TypeCreate, ID: 3, TimeoutMS: 5000}},
	{"create default timeout", msg(`"type":"create","id":3`),
		wire.Message{Type: wire.TypeCreate, ID: 3}},
	{"query", msg(`"type":"query","id":4,"group":"` + gID + `"`),
		wire.Message{Type: wire.TypeQuery, ID: 4, Group: gID}},
	{"join", msg(`"type":"join","id":5,"group":"` + gID + `","datasource":"orders-db","mode":"xa"`),
		wire.Message{Type: wire.TypeJoin, ID: 5, Group: gID, Datasource: "orders-db", Mode: "xa"}},
	{"vote ok", msg(`"type":"vote","id":6,"group":"` + gID + `","branch":"` + bID + `","ok":true`),
		wire.Message{Type: wire.TypeVote, ID: 6, Group: gID, Branch: bID, OK: true}},
	{"vote failed", msg(`"type":"vote","id":7,"group":"` + gID + `","branch":"` + bID + `","ok":false,"reason":"duplicate key"`),
		wire.Message{Type: wire.TypeVote, ID: 7, Group: gID, Branch: bID, Reason: "duplicate key"}},
	{"decide commit", msg(`"type":"decide","id":8,"group":"` + gID + `","commit":true`),
		wire.Message{Type: wire.TypeDecide, ID: 8, Group: gID, Commit: true}},
	{"decide rollback", msg(`"type":"decide","id":9,"group":"` + gID + `"`),
		wire.Message{Type: wire.TypeDecide, ID: 9, Group: gID}},
	{"ack committed", msg(`"type":"ack","id":10,"group":"` + gID + `","branch":"` + bID + `","outcome":"committed"`),
		wire.Message{Type: wire.TypeAck, ID: 10, Group: gID, Branch: bID, Outcome: wire.OutcomeCommitted}},
	{"ack rolled back", msg(`"type":"ack","id":11,"group":"` + gID + `","branch":"` + bID + `","outcome":"rolled_back"`),
		wire.Message{Type: wire.TypeAck, ID: 11, Group: gID, Branch: bID, Outcome: wire.OutcomeRolledBack}},
	{"ack lost", msg(`"type":"ack","id":12,"group":"` + gID + `","branch":"` + bID + `","outcome":"lost","reason":"session gone"`),
		wire.Message{Type: wire.TypeAck, ID: 12, Group: gID, Branch: bID, Outcome: wire.OutcomeLost, Reason: "session gone"}},
	{"decision commit", msg(`"type":"decision","group":"` + gID + `","branch":"` + bID + `","commit":true`),
		wire.Message{Type: wire.TypeDecision, Group: gID, Branch: bID, Commit: true}},
	{"decision rollback", msg(`"type":"decision","group":"` + gID + `","branch":"` + bID + `"`),
		wire.Message{Type: wire.TypeDecision, Group: gID, Branch: bID}},
	{"prepare push", msg(`"type":"prepare","group":"` + gID + `","branch":"` + bID + `"`),
		wire.Message{Type: wire.TypePrepare, Group: gID, Branch: bID}},
	{"prepared ok", msg(`"type":"prepared","id":30,"group":"` + gID + `","branch":"` + bID + `","ok":true`),
		wire.Message{Type: wire.TypePrepared, ID: 30, Group: gID, Branch: bID, OK: true}},
	{"prepared failed", msg(`"type":"prepared","id":31,"group":"` + gID + `","branch":"` + bID + `","reason":"XAER_RMFAIL"`),
		wire.Message{Type: wire.TypePrepared, ID: 31, Group: gID, Branch: bID, Reason: "XAER_RMFAIL"}},
	{"query a branch", msg(`"type":"query","id":32,"group":"` + gID + `","branch":"` + bID + `"`),
		wire.Message{Type: wire.TypeQuery, ID: 32, Group: gID, Branch: bID}},
	{"ok query answer with branch", msg(`"type":"ok","id":33,"group":"` + gID + `","state":"PREPARING","service":"stock","mode":"xa","branch_state":"READY"`),
		wire.Message{Type: wire.TypeOK, ID: 33, Group: gID, State: "PREPARING", Service: "stock", Mode: "xa", BranchState: "READY"}},
	{"ok bare", msg(`"type":"ok","id":13`),
		wire.Message{Type: wire.TypeOK, ID: 13}},
	{"ok create answer", msg(`"type":"ok","id":14,"group":"` + gID + `","state":"ACTIVE","deadline":1700000000000`),
		wire.Message{Type: wire.TypeOK, ID: 14, Group: gID, State: "ACTIVE", Deadline: 1700000000000}},
	{"ok join answer", msg(`"type":"ok","id":15,"group":"` + gID + `","branch":"` + bID + `","state":"ACTIVE"`),
		wire.Message{Type: wire.TypeOK, ID: 15, Group: gID, Branch: bID, State: "ACTIVE"}},
	{"error answer", msg(`"type":"error","id":16,"code":"conflict","state":"ROLLING_BACK","group":"` + gID + `","reason":"deadline passed"`),
		wire.Message{Type: wire.TypeError, ID: 16, Code: wire.CodeConflict, State: "ROLLING_BACK", Group: gID, Reason: "deadline passed"}},
	{"error last word", msg(`"type":"error","code":"handshake","reason":"bad token"`),
		wire.Message{Type: wire.TypeError, Code: wire.CodeHandshake, Reason: "bad token"}},
	{"max id", msg(`"type":"ok","id":18446744073709551615`),
		wire.Message{Type: wire.TypeOK, ID: 1<<64 - 1}},
	{"members in another order", `{"id":17,"type":"ok","v":1}`,
		wire.Message{Type: wire.TypeOK, ID: 17}},
	{"white space around", " \n\t" + msg(`"type":"ok","id":18`) + " \r\n ",
		wire.Message{Type: wire.TypeOK, ID: 18}},
	{"explicit zero values", msg(`"type":"decide","id":19,"group":"` + gID + `","commit":false,"reason":"","held":null`),
		wire.Message{Type: wire.TypeDecide, ID: 19, Group: gID}},
	{"json escapes in text", msg(`"type":"vote","id":20,"group":"` + gID + `","branch":"` + bID + `","reason":"a\u003cb \"q\" \u00e9 \ud83d\ude00"`),
		wire.Message{Type: wire.TypeVote, ID: 20, Group: gID, Branch: bID, Reason: "a<b \"q\" é 😀"}},
	{"text fields at their limit", msg(`"type":"hello","id":21,"service":"` + strings.Repeat("s", 1024) + `","instance":"` + strings.Repeat("i", 1024) + `","reason":"` + strings.Repeat("r", 1024) + `"`),
		wire.Message{Type: wire.TypeHello, ID: 21, Service: strings.Repeat("s", 1024), Instance: strings.Repeat("i", 1024), Reason: strings.Repeat("r", 1024)}},
}

type badRow struct {
	name  string
	frame string
	sub   string // the error must mention this (case-insensitive); "" = any
}

func badRows() []badRow {
	rows := []badRow{
		// not a JSON object
		{"empty", "", ""},
		{"null", "null", "version"},
		{"array", "[]", ""},
		{"number", "1", ""},
		{"string", `"ok"`, ""},
		{"truncated", `{"v":1,"type":"ok","id":1`, ""},
		{"invalid utf-8 garbage", "\xff\xfe", ""},

		// version
		{"missing version", `{"type":"ok","id":1}`, "version"},
		{"version 0", `{"v":0,"type":"ok","id":1}`, "version"},
		{"version 2", `{"v":2,"type":"ok","id":1}`, "version"},
		{"version -1", `{"v":-1,"type":"ok","id":1}`, "version"},
		{"version string", `{"v":"1","type":"ok","id":1}`, ""},
		{"version float", `{"v":1.5,"type":"ok","id":1}`, ""},

		// type
		{"unknown type", msg(`"type":"nope","id":1`), "unknown type"},
		{"missing type", msg(`"id":1`), "unknown type"},
		{"upper-case type", msg(`"type":"HELLO","id":1,"service":"s","instance":"i"`), "unknown type"},
		{"type with space", msg(`"type":"ok ","id":1`), "unknown type"},
		{"numeric type", msg(`"type":1,"id":1`), ""},

		// unknown fields
		{"unknown field", msg(`"type":"ok","id":1,"extra":1`), "unknown field"},
		{"unknown field null", msg(`"type":"ok","id":1,"extra":null`), "unknown field"},
		{"unknown field in held", msg(`"type":"hello","id":1,"service":"s","instance":"i","held":[{"group":"` + gID + `","branch":"` + bID + `","x":1}]`), "unknown field"},

		// prepare phase
		{"prepare push with id", msg(`"type":"prepare","id":1,"group":"` + gID + `","branch":"` + bID + `"`), "push carries no id"},
		{"prepare without branch", msg(`"type":"prepare","group":"` + gID + `"`), "branch"},
		{"prepared without id", msg(`"type":"prepared","group":"` + gID + `","branch":"` + bID + `","ok":true`), "without id"},
		{"prepared without branch", msg(`"type":"prepared","id":1,"group":"` + gID + `","ok":true`), "branch"},
		{"branch_state too long", msg(`"type":"ok","id":1,"branch_state":"` + strings.Repeat("x", 1025) + `"`), "branch_state"},

		// trailing data
		{"two messages", msg(`"type":"ok","id":1`) + msg(`"type":"ok","id":2`), "trailing"},
		{"trailing number", msg(`"type":"ok","id":1`) + " 1", "trailing"},
		{"trailing bracket", msg(`"type":"ok","id":1`) + "]", ""},
		{"trailing comma", msg(`"type":"ok","id":1`) + ",", ""},
		{"trailing NUL", msg(`"type":"ok","id":1`) + "\x00", ""},

		// field types
		{"negative id", msg(`"type":"ok","id":-1`), ""},
		{"string id", msg(`"type":"ok","id":"1"`), ""},
		{"fractional id", msg(`"type":"ok","id":1.5`), ""},
		{"id overflows uint64", msg(`"type":"ok","id":18446744073709551616`), ""},
		{"string bool", msg(`"type":"vote","id":1,"group":"` + gID + `","branch":"` + bID + `","ok":"true"`), ""},
		{"held object", msg(`"type":"hello","id":1,"service":"s","instance":"i","held":{}`), ""},

		// ids on requests and pushes
		{"push with id", msg(`"type":"decision","id":7,"group":"` + gID + `","branch":"` + bID + `","commit":true`), "no id"},
		{"explicit id 0 on request", msg(`"type":"query","id":0,"group":"` + gID + `"`), "without id"},

		// per-type requirements
		{"hello without service", msg(`"type":"hello","id":1,"instance":"i"`), "service"},
		{"hello with empty service", msg(`"type":"hello","id":1,"service":"","instance":"i"`), "service"},
		{"hello without instance", msg(`"type":"hello","id":1,"service":"s"`), "instance"},
		{"join without datasource", msg(`"type":"join","id":1,"group":"` + gID + `"`), "datasource"},
		{"create with negative timeout", msg(`"type":"create","id":1,"timeout_ms":-1`), "timeout"},
		{"error without code", msg(`"type":"error","id":1,"reason":"x"`), "code"},
		{"ack without outcome", msg(`"type":"ack","id":1,"group":"` + gID + `","branch":"` + bID + `"`), "outcome"},
		{"ack outcome upper-case", msg(`"type":"ack","id":1,"group":"` + gID + `","branch":"` + bID + `","outcome":"COMMITTED"`), "outcome"},
		{"ack outcome commit", msg(`"type":"ack","id":1,"group":"` + gID + `","branch":"` + bID + `","outcome":"commit"`), "outcome"},
		{"ack outcome hyphen", msg(`"type":"ack","id":1,"group":"` + gID + `","branch":"` + bID + `","outcome":"rolled-back"`), "outcome"},
		{"ack outcome prepared", msg(`"type":"ack","id":1,"group":"` + gID + `","branch":"` + bID + `","outcome":"prepared"`), "outcome"},

		// too many held (the count is checked before the pairs)
		{"too many held", msg(`"type":"hello","id":1,"service":"s","instance":"i","held":[` + strings.TrimSuffix(strings.Repeat("{},", wire.MaxHeld+1), ",") + `]`), "held"},

		// oversize frame: a valid message padded with white space
		{"frame over MaxFrame", msg(`"type":"ok","id":1`) + strings.Repeat(" ", wire.MaxFrame+1-len(msg(`"type":"ok","id":1`))), "exceeds"},
	}

	// Missing id on every request type (and the ok answer).
	for _, r := range []struct{ typ, rest string }{
		{"hello", `"service":"s","instance":"i"`},
		{"create", `"timeout_ms":1`},
		{"query", `"group":"` + gID + `"`},
		{"join", `"group":"` + gID + `","datasource":"d"`},
		{"vote", `"group":"` + gID + `","branch":"` + bID + `","ok":true`},
		{"decide", `"group":"` + gID + `","commit":true`},
		{"ack", `"group":"` + gID + `","branch":"` + bID + `","outcome":"committed"`},
		{"ok", `"state":"ACTIVE"`},
	} {
		rows = append(rows, badRow{"request without id: " + r.typ, msg(`"type":"` + r.typ + `",` + r.rest), "without id"})
	}

	// Bad ids in every place an id is required.
	badIDs := []struct{ name, id string }{
		{"empty", ""},
		{"upper case", strings.ToUpper(gID)},
		{"31 chars", gID[:31]},
		{"33 chars", gID + "0"},
		{"leading space", " " + gID[1:]},
		{"trailing space", gID[:31] + " "},
		{"space padded", " " + gID + " "},
		{"newline", gID[:31] + "\n"},
		{"uuid form", "01234567-89ab-cdef-0123-456789abcdef"},
		{"cyrillic a", "0123456789\u0430bcdef0123456789abcde"},
		{"fullwidth zero", "\uff10123456789abcdef0123456789abcd"},
		{"non-hex letter", "0123456789abcdeg0123456789abcdef"},
	}
	for _, b := range badIDs {
		rows = append(rows,
			badRow{"query group " + b.name, msg(`"type":"query","id":1,"group":` + q(b.id)), "group"},
			badRow{"join group " + b.name, msg(`"type":"join","id":1,"datasource":"d","group":` + q(b.id)), "group"},
			badRow{"decide group " + b.name, msg(`"type":"decide","id":1,"commit":true,"group":` + q(b.id)), "group"},
			badRow{"vote branch " + b.name, msg(`"type":"vote","id":1,"ok":true,"group":"` + gID + `","branch":` + q(b.id)), "branch"},
			badRow{"vote group " + b.name, msg(`"type":"vote","id":1,"ok":true,"branch":"` + bID + `","group":` + q(b.id)), "group"},
			badRow{"ack branch " + b.name, msg(`"type":"ack","id":1,"outcome":"committed","group":"` + gID + `","branch":` + q(b.id)), "branch"},
			badRow{"decision branch " + b.name, msg(`"type":"decision","commit":true,"group":"` + gID + `","branch":` + q(b.id)), "branch"},
			badRow{"decision group " + b.name, msg(`"type":"decision","commit":true,"branch":"` + bID + `","group":` + q(b.id)), "group"},
			badRow{"held group " + b.name, msg(`"type":"hello","id":1,"service":"s","instance":"i","held":[{"group":` + q(b.id) + `,"branch":"` + bID + `"}]`), "held"},
			badRow{"held branch " + b.name, msg(`"type":"hello","id":1,"service":"s","instance":"i","held":[{"group":"` + gID + `","branch":` + q(b.id) + `}]`), "held"},
		)
	}

	// Every capped text field, one byte over.
	for _, f := range []string{"service", "instance", "token", "datasource", "mode", "reason", "state", "code", "outcome"} {
		long := strings.Repeat("x", 1025)
		members := map[string]string{"service": "s", "instance": "i"}
		members[f] = long
		var b strings.Builder
		b.WriteString(`"type":"hello","id":1`)
		for _, k := range []string{"service", "instance", "token", "datasource", "mode", "reason", "state", "code", "outcome"} {
			if v, ok := members[k]; ok {
				b.WriteString(`,"` + k + `":` + q(v))
			}
		}
		rows = append(rows, badRow{"oversize " + f, msg(b.String()), f})
	}
	return rows
}

// normal makes two decoded messages comparable: an empty held list and an
// absent one mean the same thing and encode the same way.
func normal(m *wire.Message) wire.Message {
	c := *m
	if len(c.Held) == 0 {
		c.Held = nil
	}
	return c
}

// roundTrip checks decode → encode → decode: the second decode equals the
// first, and encoding is stable from then on.
func roundTrip(t *testing.T, m *wire.Message) {
	t.Helper()
	c := *m
	frame, err := wire.Encode(&c)
	if err != nil {
		t.Fatalf("Encode(%+v): %v", m, err)
	}
	m2, err := wire.Decode(frame)
	if err != nil {
		t.Fatalf("Decode(Encode(m)) = %v\nframe (%d bytes): %.300s", err, len(frame), frame)
	}
	if a, b := normal(m), normal(m2); !reflect.DeepEqual(a, b) {
		t.Fatalf("round trip changed the message:\n first: %+v\nsecond: %+v", a, b)
	}
	c2 := *m2
	frame2, err := wire.Encode(&c2)
	if err != nil {
		t.Fatalf("Encode(second): %v", err)
	}
	if !bytes.Equal(frame, frame2) {
		t.Fatalf("encoding is not stable:\n%s\n%s", frame, frame2)
	}
}

func TestDecodeValid(t *testing.T) {
	for _, tt := range validRows {
		t.Run(tt.name, func(t *testing.T) {
			m, err := wire.Decode([]byte(tt.frame))
			if err != nil {
				t.Fatalf("Decode(%s) = %v", tt.frame, err)
			}
			want := tt.want
			want.V = wire.Version
			if got := normal(m); !reflect.DeepEqual(got, normal(&want)) {
				t.Fatalf("Decode(%s)\n got %+v\nwant %+v", tt.frame, got, want)
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("a decoded message does not Validate: %v", err)
			}
			roundTrip(t, m)
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tt := range badRows() {
		t.Run(tt.name, func(t *testing.T) {
			m, err := wire.Decode([]byte(tt.frame))
			if err == nil {
				t.Fatalf("Decode(%.200q) = %+v, nil; want an error", tt.frame, m)
			}
			if m != nil {
				t.Errorf("Decode returned a message alongside its error")
			}
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if tt.sub != "" && !strings.Contains(strings.ToLower(err.Error()), tt.sub) {
				t.Errorf("error %q does not mention %q", err, tt.sub)
			}
		})
	}
}

// TestDecodeFrameSizeBoundary: MaxFrame bytes are accepted, one more is not.
func TestDecodeFrameSizeBoundary(t *testing.T) {
	base := msg(`"type":"ok","id":1`)
	at := base + strings.Repeat(" ", wire.MaxFrame-len(base))
	if len(at) != wire.MaxFrame {
		t.Fatal("bad test frame")
	}
	if _, err := wire.Decode([]byte(at)); err != nil {
		t.Fatalf("a frame of exactly MaxFrame bytes: %v", err)
	}
	if _, err := wire.Decode([]byte(at + " ")); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("a frame of MaxFrame+1 bytes: %v, want ErrMalformed", err)
	}
}

// TestDecodeOversizeBeforeParsing: the size cap is enforced before the frame
// is parsed, so a huge frame costs no more than a small one.
func TestDecodeOversizeBeforeParsing(t *testing.T) {
	huge := []byte(`{"v":1,"type":"hello","id":1,"service":"s","instance":"i","held":[` +
		strings.Repeat(`{"group":"`+gID+`","branch":"`+bID+`"},`, 100_000) + `{}]}`)
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := wire.Decode(huge); err == nil {
			panic("accepted")
		}
	})
	if allocs > 10 {
		t.Fatalf("rejecting a %d-byte frame made %.0f allocations; the size check must come before parsing", len(huge), allocs)
	}
}

func TestValidateHeldLimit(t *testing.T) {
	refs := make([]wire.BranchRef, wire.MaxHeld+1)
	for i := range refs {
		refs[i] = wire.BranchRef{Group: gID, Branch: fmt.Sprintf("%032x", i)}
	}
	m := &wire.Message{V: wire.Version, Type: wire.TypeHello, ID: 1, Service: "s", Instance: "i", Held: refs[:wire.MaxHeld]}
	if err := m.Validate(); err != nil {
		t.Fatalf("MaxHeld held branches: %v", err)
	}
	m.Held = refs
	if err := m.Validate(); !errors.Is(err, wire.ErrMalformed) || !strings.Contains(err.Error(), "held") {
		t.Fatalf("MaxHeld+1 held branches: %v, want ErrMalformed about held", err)
	}
}

// TestTextFieldLimit: each capped field accepts 1024 bytes and refuses 1025,
// counted in bytes (not runes).
func TestTextFieldLimit(t *testing.T) {
	set := map[string]func(m *wire.Message, s string){
		"service":    func(m *wire.Message, s string) { m.Service = s },
		"instance":   func(m *wire.Message, s string) { m.Instance = s },
		"token":      func(m *wire.Message, s string) { m.Token = s },
		"datasource": func(m *wire.Message, s string) { m.Datasource = s },
		"mode":       func(m *wire.Message, s string) { m.Mode = s },
		"reason":     func(m *wire.Message, s string) { m.Reason = s },
		"state":      func(m *wire.Message, s string) { m.State = s },
		"code":       func(m *wire.Message, s string) { m.Code = s },
	}
	for name, f := range set {
		for _, tc := range []struct {
			s  string
			ok bool
		}{
			{strings.Repeat("x", 1024), true},
			{strings.Repeat("x", 1025), false},
			{strings.Repeat("é", 512), true},        // 1024 bytes
			{strings.Repeat("é", 512) + "x", false}, // 1025 bytes, 513 runes
		} {
			m := &wire.Message{V: wire.Version, Type: wire.TypeError, ID: 1, Code: "conflict", Service: "s", Instance: "i"}
			f(m, tc.s)
			err := m.Validate()
			if tc.ok && err != nil {
				t.Errorf("%s of %d bytes: %v", name, len(tc.s), err)
			}
			if !tc.ok && (!errors.Is(err, wire.ErrMalformed) || !strings.Contains(err.Error(), name)) {
				t.Errorf("%s of %d bytes: %v, want ErrMalformed naming %s", name, len(tc.s), err, name)
			}
		}
	}
	m := &wire.Message{V: wire.Version, Type: wire.TypeAck, ID: 1, Group: gID, Branch: bID, Outcome: strings.Repeat("x", 1025)}
	if err := m.Validate(); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("outcome of 1025 bytes: %v", err)
	}
}

// TestEncodeDecodeEveryType builds each message the way the two sides do and
// checks that it survives the codec.
func TestEncodeDecodeEveryType(t *testing.T) {
	msgs := []*wire.Message{
		{Type: wire.TypeHello, ID: 1, Service: "order", Instance: "order-7", Token: "t", Held: []wire.BranchRef{{Group: gID, Branch: bID}, {Group: bID, Branch: gID}}},
		{Type: wire.TypeCreate, ID: 2, TimeoutMS: 30000},
		{Type: wire.TypeQuery, ID: 3, Group: gID},
		{Type: wire.TypeJoin, ID: 4, Group: gID, Datasource: "db", Mode: "lcn"},
		{Type: wire.TypeVote, ID: 5, Group: gID, Branch: bID, OK: false, Reason: "constraint <x> & \"y\"\u2028"},
		{Type: wire.TypeDecide, ID: 6, Group: gID, Commit: true},
		{Type: wire.TypeAck, ID: 7, Group: gID, Branch: bID, Outcome: wire.OutcomeLost, Reason: "gone"},
		{Type: wire.TypeDecision, Group: gID, Branch: bID, Commit: true},
		{Type: wire.TypeOK, ID: 8, Group: gID, Branch: bID, State: "ACTIVE", Deadline: -1},
		wire.Errorf(9, wire.CodeConflict, "group %s is %s", gID, "ROLLING_BACK"),
		wire.Errorf(0, wire.CodeHandshake, "bad token"),
	}
	for _, m := range msgs {
		t.Run(string(m.Type), func(t *testing.T) {
			frame, err := wire.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if m.V != wire.Version {
				t.Fatalf("Encode left V = %d, want %d", m.V, wire.Version)
			}
			got, err := wire.Decode(frame)
			if err != nil {
				t.Fatalf("Decode(%s): %v", frame, err)
			}
			if !reflect.DeepEqual(normal(got), normal(m)) {
				t.Fatalf("got %+v\nwant %+v", got, m)
			}
		})
	}
}

func TestErrorf(t *testing.T) {
	m := wire.Errorf(42, wire.CodeNotFound, "no group %s", gID)
	if m.Type != wire.TypeError || m.ID != 42 || m.Code != wire.CodeNotFound || m.Reason != "no group "+gID {
		t.Fatalf("Errorf = %+v", m)
	}
}

// TestEncodeBoundsReason: the TxManager's answers carry reasons it builds
// from client text (a failed vote's reason, the service name) plus its own
// words, so they can be longer than a peer accepts. Whatever the sides build
// with Errorf or as an answer must still decode at the other end; otherwise
// the peer drops the session on the TxManager's answer.
func TestEncodeBoundsReason(t *testing.T) {
	long := "branch " + bID + " (service " + strings.Repeat("s", 1024) + ") voted failed: " + strings.Repeat("é", 600)
	for _, m := range []*wire.Message{
		wire.Errorf(1, wire.CodeConflict, "%s", long),
		{Type: wire.TypeOK, ID: 2, Group: gID, State: "ROLLING_BACK", Reason: long},
		{Type: wire.TypeVote, ID: 3, Group: gID, Branch: bID, Reason: long},
	} {
		frame, err := wire.Encode(m)
		if err != nil {
			continue // refusing to encode is also acceptable
		}
		got, err := wire.Decode(frame)
		if err != nil {
			t.Errorf("%s with a %d-byte reason: Encode gave a frame Decode refuses: %v", m.Type, len(long), err)
			continue
		}
		if !strings.HasPrefix(long, got.Reason) || !utf8.ValidString(got.Reason) {
			t.Errorf("%s: reason %.40q… is not a valid prefix of the original", m.Type, got.Reason)
		}
	}
}

// TestHelloWithMaxHeldFitsFrame: Validate accepts a hello listing MaxHeld
// branches, so such a hello must fit in a frame the TxManager reads (its read
// limit is MaxFrame); otherwise a client holding that many branches can never
// reconnect and resync.
func TestHelloWithMaxHeldFitsFrame(t *testing.T) {
	refs := make([]wire.BranchRef, wire.MaxHeld)
	for i := range refs {
		refs[i] = wire.BranchRef{Group: fmt.Sprintf("%032x", i), Branch: fmt.Sprintf("%032x", i+1<<20)}
	}
	m := &wire.Message{Type: wire.TypeHello, ID: 1, Service: "order", Instance: "order-1", Token: "t", Held: refs}
	frame, err := wire.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if _, err := wire.Decode(frame); err != nil {
		t.Fatalf("a hello with MaxHeld (%d) held branches encodes to %d bytes and does not decode: %v", wire.MaxHeld, len(frame), err)
	}
}

// TestDecodeReencodeFitsFrame: anything Decode accepts must re-encode to a
// frame Decode accepts (S14: decode → encode → decode equal). Go's encoder
// writes '<' '>' '&' and U+2028 escaped, so a frame near MaxFrame written
// without those escapes grows past MaxFrame when encoded again.
func TestDecodeReencodeFitsFrame(t *testing.T) {
	text := strings.Repeat("<", 1024)
	head := `{"v":1,"type":"hello","id":1,"service":"` + text + `","instance":"` + text + `","token":"` + text +
		`","datasource":"` + text + `","mode":"` + text + `","reason":"` + text + `","state":"` + text +
		`","code":"` + text + `","outcome":"` + text + `","held":[`
	ref := `{"group":"` + gID + `","branch":"` + bID + `"}`
	n := min((wire.MaxFrame-len(head)-2)/(len(ref)+1), wire.MaxHeld)
	frame := head + strings.TrimSuffix(strings.Repeat(ref+",", n), ",") + "]}"
	m, err := wire.Decode([]byte(frame))
	if err != nil {
		t.Fatalf("test frame (%d bytes) does not decode: %v", len(frame), err)
	}
	roundTrip(t, m)
}

// TestDecodeRejectsNonCanonicalKeys: Decode is documented as strict about
// fields. encoding/json matches member names case-insensitively and lets a
// repeated member silently override the first, so two parsers can read one
// frame differently; a strict decoder refuses both.
func TestDecodeRejectsNonCanonicalKeys(t *testing.T) {
	for _, frame := range []string{
		`{"v":1,"TYPE":"ok","id":1}`,
		`{"V":1,"type":"ok","id":1}`,
		msg(`"type":"decide","id":1,"group":"` + gID + `","Commit":true`),
		msg(`"type":"decide","id":1,"group":"` + gID + `","commit":false,"commit":true`),
		msg(`"type":"vote","id":1,"group":"` + gID + `","branch":"` + bID + `","ok":false,"OK":true`),
	} {
		if m, err := wire.Decode([]byte(frame)); err == nil {
			t.Errorf("Decode(%s) = %+v, nil; want an error", frame, m)
		}
	}
}

// TestDecodeRejectsMalformedOptionalIDs: the package promises that a
// malformed id is an error. Answers carry ids the client then uses (the
// group id from create, the branch id from join), so an id that is present
// must be canonical whatever the type.
func TestDecodeRejectsMalformedOptionalIDs(t *testing.T) {
	for _, frame := range []string{
		msg(`"type":"ok","id":1,"group":"` + strings.ToUpper(gID) + `","state":"ACTIVE"`),
		msg(`"type":"ok","id":1,"group":"` + gID + `","branch":"not-an-id"`),
		msg(`"type":"ok","id":1,"group":" ` + gID + `"`),
		msg(`"type":"error","id":1,"code":"conflict","group":"x"`),
		msg(`"type":"create","id":1,"group":"x"`),
	} {
		if m, err := wire.Decode([]byte(frame)); err == nil {
			t.Errorf("Decode(%s) = %+v, nil; want an error", frame, m)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, r := range validRows {
		f.Add([]byte(r.frame))
	}
	for _, r := range badRows() {
		if len(r.frame) <= 4096 {
			f.Add([]byte(r.frame))
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := wire.Decode(frame)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			if m != nil {
				t.Fatalf("Decode returned a message with its error")
			}
			return
		}
		if len(frame) > wire.MaxFrame {
			t.Fatalf("Decode accepted a %d-byte frame", len(frame))
		}
		if m.V != wire.Version {
			t.Fatalf("accepted version %d", m.V)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted message does not Validate: %v", err)
		}
		roundTrip(t, m)
	})
}

// A service or instance containing '/' would make two sessions' identities
// ("<service>/<instance>") collide: refused.
func TestHelloRejectsSlashInNames(t *testing.T) {
	for _, frame := range []string{
		msg(`"type":"hello","id":1,"service":"a/b","instance":"c"`),
		msg(`"type":"hello","id":1,"service":"a","instance":"b/c"`),
	} {
		if _, err := wire.Decode([]byte(frame)); err == nil {
			t.Errorf("Decode(%s) accepted", frame)
		}
	}
	if _, err := wire.Decode([]byte(msg(`"type":"hello","id":1,"service":"a","instance":"b-c"`))); err != nil {
		t.Fatalf("plain hello refused: %v", err)
	}
}

// TestDecodeClassifiesUnknownType: a frame of this version with a type
// the protocol does not have is refused (ErrMalformed) and marked
// ErrUnknownType, whatever its other members, so that a receiver can ignore
// it; every other refusal is not marked.
func TestDecodeClassifiesUnknownType(t *testing.T) {
	for _, tt := range []struct {
		name    string
		frame   string
		unknown bool
	}{
		{"TX-LCN redirect", msg(`"type":"newTxManager","url":"ws://evil.example/v1/ws"`), true},
		{"redirect with known members", msg(`"type":"redirect","group":"` + gID + `","commit":true`), true},
		{"bare unknown type", msg(`"type":"nope","id":1`), true},
		{"upper-case known type", msg(`"type":"DECISION","group":"` + gID + `","branch":"` + bID + `"`), true},
		{"missing type", msg(`"id":1`), false},
		{"empty type with unknown member", msg(`"type":"","url":"x"`), false},
		{"known type, unknown member", msg(`"type":"decision","group":"` + gID + `","branch":"` + bID + `","url":"x"`), false},
		{"known type, invalid", msg(`"type":"decision","id":3,"group":"` + gID + `","branch":"` + bID + `"`), false},
		{"unknown type of another version", `{"v":2,"type":"newTxManager"}`, false},
		{"not an object", `["newTxManager"]`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := wire.Decode([]byte(tt.frame))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want an error", tt.frame, m)
			}
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("Decode(%s): %v does not wrap ErrMalformed", tt.frame, err)
			}
			if got := errors.Is(err, wire.ErrUnknownType); got != tt.unknown {
				t.Errorf("Decode(%s): %v; wraps ErrUnknownType = %v, want %v", tt.frame, err, got, tt.unknown)
			}
		})
	}
}
