// Package wire is the golcn message codec used on the websocket between a
// TxClient and a TxManager.
//
// Every frame is one JSON text message: a versioned envelope (Message) with a
// type, an optional correlation id and the fields that type needs. Decode is
// strict: an unknown version, type or field, a missing required field or a
// malformed id is an error, so a peer never acts on a message it half
// understood. Frame size is bounded by the transport's read limit before
// Decode sees the bytes.
//
// Requests carry an ID > 0; the answer to a request is a message of type
// TypeOK or TypeError with the same ID (TypeOK carries the answer's fields).
// Pushes from the TxManager carry ID 0: a TypeDecision is acknowledged with
// a TypeAck request once applied, a TypePrepare (the prepare phase of a group
// with xa branches) is answered with a TypePrepared request.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/golcn/golcn/internal/gid"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxFrame is the largest frame either side accepts, in bytes.
const MaxFrame = 64 << 10

// Type names a message.
type Type string

// Message types.
const (
	TypeHello    Type = "hello"    // client → TM: first message; Service, Instance, Token, Held
	TypeCreate   Type = "create"   // client → TM: start a group; TimeoutMS (0: TM default)
	TypeQuery    Type = "query"    // client → TM: Group, optional Branch; answered with State (and the branch's Service, Mode, BranchState)
	TypeJoin     Type = "join"     // client → TM: Group, Datasource, Mode; answered with Branch
	TypeVote     Type = "vote"     // client → TM: Group, Branch, OK, Reason
	TypeDecide   Type = "decide"   // client → TM: Group, Commit; answered with State
	TypeAck      Type = "ack"      // client → TM: Group, Branch, Outcome (phase-2 result)
	TypeDecision Type = "decision" // TM → client push: Group, Branch, Commit
	TypePrepare  Type = "prepare"  // TM → client push: Group, Branch: make the branch's vote durable (xa: XA PREPARE)
	TypePrepared Type = "prepared" // client → TM: Group, Branch, OK, Reason: the prepare's result
	TypeOK       Type = "ok"       // answer to a request
	TypeError    Type = "error"    // answer to a request, or a last word before close: Code, Reason
)

// Error codes carried in TypeError messages.
const (
	CodeBadRequest  = "bad_request" // the request was malformed
	CodeNotFound    = "not_found"   // unknown group or branch
	CodeConflict    = "conflict"    // the group is not in a state that allows this (State says which)
	CodeForbidden   = "forbidden"   // the caller does not own what it acts on
	CodeUnavailable = "unavailable" // the TM could not reach its store; safe to retry
	CodeInternal    = "internal"    // a TM bug
	CodeHandshake   = "handshake"   // hello missing or refused
)

// Outcomes carried by TypeAck.
const (
	OutcomeCommitted  = "committed"   // the branch's commit was applied
	OutcomeRolledBack = "rolled_back" // the branch was rolled back (or never existed here)
	OutcomeLost       = "lost"        // the branch's work is gone: it could not be committed
)

// BranchRef names a branch a client holds.
type BranchRef struct {
	Group  string `json:"group"`
	Branch string `json:"branch"`
}

// Message is the envelope of every frame. Fields a type does not use are
// left zero and omitted.
type Message struct {
	V           int         `json:"v"`
	Type        Type        `json:"type"`
	ID          uint64      `json:"id,omitempty"`
	Group       string      `json:"group,omitempty"`
	Branch      string      `json:"branch,omitempty"`
	Service     string      `json:"service,omitempty"`
	Instance    string      `json:"instance,omitempty"`
	Token       string      `json:"token,omitempty"`
	Datasource  string      `json:"datasource,omitempty"`
	Mode        string      `json:"mode,omitempty"`
	OK          bool        `json:"ok,omitempty"`
	Commit      bool        `json:"commit,omitempty"`
	Outcome     string      `json:"outcome,omitempty"`
	State       string      `json:"state,omitempty"`
	TimeoutMS   int64       `json:"timeout_ms,omitempty"`
	Deadline    int64       `json:"deadline,omitempty"` // unix milliseconds
	Code        string      `json:"code,omitempty"`
	Reason      string      `json:"reason,omitempty"`
	Attention   string      `json:"attention,omitempty"`    // a finished group that needs an operator, and why
	BranchState string      `json:"branch_state,omitempty"` // answer to a query naming a branch
	Held        []BranchRef `json:"held,omitempty"`
}

// MaxHeld bounds the branches a hello may list, so that a hello always fits
// in MaxFrame. A client holding more lists the first MaxHeld; the rest learn
// their decisions by asking (the client's ask loop).
const MaxHeld = 512

// maxText bounds free-text and name fields.
const maxText = 1024

// ErrMalformed is wrapped by every error Decode returns.
var ErrMalformed = errors.New("wire: malformed message")

// ErrUnknownType is wrapped, besides ErrMalformed, by Decode's error for a
// frame of this protocol version whose type is not one of the Type
// constants (a newer peer's message, or a redirect such as TX-LCN's
// newTxManager, which this protocol does not have). Such a frame is never
// acted on; a receiver may ignore it rather than end the session.
var ErrUnknownType = errors.New("wire: unknown type")

// knownType reports whether t is one of the Type constants.
func knownType(t Type) bool {
	switch t {
	case TypeHello, TypeCreate, TypeQuery, TypeJoin, TypeVote, TypeDecide, TypeAck,
		TypeDecision, TypePrepare, TypePrepared, TypeOK, TypeError:
		return true
	}
	return false
}

// unknownType returns an error wrapping ErrUnknownType if frame is an
// object of this version with a non-empty type that is not known, and nil
// otherwise. It runs only on frames Decode already refused, to classify
// them, so its lenient parse never admits anything.
func unknownType(frame []byte) error {
	var env struct {
		V    int  `json:"v"`
		Type Type `json:"type"`
	}
	if err := json.Unmarshal(frame, &env); err != nil || env.V != Version || env.Type == "" || knownType(env.Type) {
		return nil
	}
	return fmt.Errorf("%w: %w %q", ErrMalformed, ErrUnknownType, env.Type)
}

// Encode returns m's frame. It sets V to Version and cuts a Reason longer
// than the decoder accepts (at a rune boundary), so that free text from a
// peer can never make an answer undecodable.
func Encode(m *Message) ([]byte, error) {
	m.V = Version
	if len(m.Reason) > maxText {
		m.Reason = truncateUTF8(m.Reason, maxText)
	}
	if len(m.Attention) > maxText {
		m.Attention = truncateUTF8(m.Attention, maxText)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("wire: encode %s: %w", m.Type, err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("wire: encode %s: frame of %d bytes exceeds %d", m.Type, len(b), MaxFrame)
	}
	return b, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// fields lists the member names of Message and BranchRef, exactly as
// written on the wire.
var (
	messageFields = map[string]bool{"v": true, "type": true, "id": true, "group": true, "branch": true,
		"service": true, "instance": true, "token": true, "datasource": true, "mode": true, "ok": true,
		"commit": true, "outcome": true, "state": true, "timeout_ms": true, "deadline": true, "code": true,
		"reason": true, "attention": true, "branch_state": true, "held": true}
	refFields = map[string]bool{"group": true, "branch": true}
)

// checkMembers rejects an object whose member names are not exactly the
// allowed ones or repeat one (encoding/json matches names regardless of case
// and lets a repeated member win, so two parsers could read one frame
// differently). For a member named "held" it checks each element too.
//
// raw is a frame encoding/json has already parsed, so it is valid JSON; the
// scan still checks every bound and reports what it cannot read as
// malformed. It allocates nothing for names written without escapes (the
// only way this package writes them).
func checkMembers(raw []byte, allowed map[string]bool) error {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return fmt.Errorf("%w: want a JSON object", ErrMalformed)
	}
	var seen [24]string // names seen so far (an object has fewer allowed names)
	n := 0
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return nil
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return fmt.Errorf("%w: want a member name", ErrMalformed)
		}
		end, err := skipString(raw, i)
		if err != nil {
			return err
		}
		name, err := memberName(raw[i:end])
		if err != nil {
			return err
		}
		if !allowed[name] {
			return fmt.Errorf("%w: unknown field %q", ErrMalformed, name)
		}
		for _, o := range seen[:n] {
			if o == name {
				return fmt.Errorf("%w: field %q repeated", ErrMalformed, name)
			}
		}
		if n == len(seen) {
			return fmt.Errorf("%w: too many members", ErrMalformed)
		}
		seen[n] = name
		n++
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return fmt.Errorf("%w: want ':' after %q", ErrMalformed, name)
		}
		i = skipSpace(raw, i+1)
		start := i
		if i, err = skipValue(raw, i); err != nil {
			return fmt.Errorf("%w: field %q", err, name)
		}
		if name == "held" && raw[start] == '[' {
			if err := checkElements(raw[start:i], refFields); err != nil {
				return fmt.Errorf("held: %w", err)
			}
		}
		i = skipSpace(raw, i)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == '}' {
			return nil
		}
		return fmt.Errorf("%w: want ',' or '}' after field %q", ErrMalformed, name)
	}
}

// checkElements runs checkMembers on every element of the JSON array arr.
func checkElements(arr []byte, allowed map[string]bool) error {
	i := skipSpace(arr, 1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for {
		start := i
		end, err := skipValue(arr, i)
		if err != nil {
			return err
		}
		if err := checkMembers(arr[start:end], allowed); err != nil {
			return err
		}
		i = skipSpace(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
			continue
		}
		if i < len(arr) && arr[i] == ']' {
			return nil
		}
		return fmt.Errorf("%w: want ',' or ']' in an array", ErrMalformed)
	}
}

// memberName returns the name a quoted JSON string q stands for.
func memberName(q []byte) (string, error) {
	if bytes.IndexByte(q, '\\') < 0 {
		return string(q[1 : len(q)-1]), nil
	}
	var name string
	if err := json.Unmarshal(q, &name); err != nil {
		return "", fmt.Errorf("%w: member name: %v", ErrMalformed, err)
	}
	return name, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("%w: unterminated string", ErrMalformed)
}

// skipValue returns the index after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, fmt.Errorf("%w: want a value", ErrMalformed)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("%w: unterminated object or array", ErrMalformed)
	}
	start := i
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	if i == start {
		return 0, fmt.Errorf("%w: want a value", ErrMalformed)
	}
	return i, nil
}

// decodeError says why json.Unmarshal refused frame (with err): a message
// of an unknown type, trailing data after the message, or the decoder's
// own error. Only refused frames pay for this second parse.
func decodeError(frame []byte, err error) error {
	dec := json.NewDecoder(bytes.NewReader(frame))
	var m Message
	if derr := dec.Decode(&m); derr != nil {
		err = derr
	} else if _, terr := dec.Token(); terr != io.EOF {
		return fmt.Errorf("%w: trailing data after the message", ErrMalformed)
	}
	if uerr := unknownType(frame); uerr != nil {
		return fmt.Errorf("%w (%v)", uerr, err)
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

// Decode parses and validates one frame.
func Decode(frame []byte) (*Message, error) {
	if len(frame) > MaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrMalformed, len(frame), MaxFrame)
	}
	var m Message
	if err := json.Unmarshal(frame, &m); err != nil {
		return nil, decodeError(frame, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// Unmarshal matched member names regardless of case and ignored
	// unknown ones: checkMembers holds the frame to the exact names.
	if err := checkMembers(frame, messageFields); err != nil {
		return nil, err
	}
	// A frame near the limit could grow when encoded again (escapes, invalid
	// UTF-8 replaced): refuse what could not be sent back as it came. Small
	// frames cannot grow past the limit and skip the check.
	if len(frame) > MaxFrame/8 {
		if _, err := Encode(&m); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return &m, nil
}

// Validate checks that m is a well-formed message of its type.
func (m *Message) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrMalformed, m.Type, fmt.Sprintf(format, args...))
	}
	if m.V != Version {
		return fmt.Errorf("%w: protocol version %d, want %d", ErrMalformed, m.V, Version)
	}
	for _, f := range [...]struct{ name, s string }{{"service", m.Service}, {"instance", m.Instance}, {"token", m.Token},
		{"datasource", m.Datasource}, {"mode", m.Mode}, {"reason", m.Reason}, {"attention", m.Attention}, {"state", m.State},
		{"code", m.Code}, {"outcome", m.Outcome}, {"branch_state", m.BranchState}} {
		if len(f.s) > maxText {
			return bad("%s longer than %d bytes", f.name, maxText)
		}
	}
	if len(m.Held) > MaxHeld {
		return bad("more than %d held branches", MaxHeld)
	}
	if m.Group != "" && !gid.Valid(m.Group) {
		return bad("group %q is not a 32-character lower-case hex id", m.Group)
	}
	if m.Branch != "" && !gid.Valid(m.Branch) {
		return bad("branch %q is not a 32-character lower-case hex id", m.Branch)
	}
	needID := func() error {
		if m.ID == 0 {
			return bad("request without id")
		}
		return nil
	}
	needGroup := func() error {
		if !gid.Valid(m.Group) {
			return bad("group %q is not a 32-character lower-case hex id", m.Group)
		}
		return nil
	}
	needBranch := func() error {
		if !gid.Valid(m.Branch) {
			return bad("branch %q is not a 32-character lower-case hex id", m.Branch)
		}
		return nil
	}
	switch m.Type {
	case TypeHello:
		if m.Service == "" || m.Instance == "" {
			return bad("service and instance are required")
		}
		if strings.Contains(m.Service, "/") || strings.Contains(m.Instance, "/") {
			return bad("service and instance must not contain '/'")
		}
		for _, h := range m.Held {
			if !gid.Valid(h.Group) || !gid.Valid(h.Branch) {
				return bad("held branch %q/%q is not a pair of ids", h.Group, h.Branch)
			}
		}
		return needID()
	case TypeCreate:
		if m.TimeoutMS < 0 {
			return bad("negative timeout_ms")
		}
		return needID()
	case TypeQuery:
		return errors.Join(needID(), needGroup())
	case TypeJoin:
		if m.Datasource == "" {
			return bad("datasource is required")
		}
		return errors.Join(needID(), needGroup())
	case TypeVote, TypePrepared:
		return errors.Join(needID(), needGroup(), needBranch())
	case TypeDecide:
		return errors.Join(needID(), needGroup())
	case TypeAck:
		switch m.Outcome {
		case OutcomeCommitted, OutcomeRolledBack, OutcomeLost:
		default:
			return bad("unknown outcome %q", m.Outcome)
		}
		return errors.Join(needID(), needGroup(), needBranch())
	case TypeDecision, TypePrepare:
		if m.ID != 0 {
			return bad("a push carries no id")
		}
		return errors.Join(needGroup(), needBranch())
	case TypeOK:
		return needID()
	case TypeError:
		if m.Code == "" {
			return bad("code is required")
		}
		return nil
	case "":
		return fmt.Errorf("%w: unknown type %q", ErrMalformed, m.Type)
	default:
		return fmt.Errorf("%w: %w %q", ErrMalformed, ErrUnknownType, m.Type)
	}
}

// Errorf returns an error answer to request id.
func Errorf(id uint64, code string, format string, args ...any) *Message {
	return &Message{Type: TypeError, ID: id, Code: code, Reason: fmt.Sprintf(format, args...)}
}
