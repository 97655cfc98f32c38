package xa

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/golcn/golcn/internal/gid"
)

// FormatID marks an xid as a golcn branch: "LCN" in ASCII. Recover returns
// only xids with this format id.
const FormatID = 0x4c434e

// ProbeFormatID marks the throw-away xid that ProbeDurable prepares ("LCO"),
// so that Recover never mistakes a probe for a branch.
const ProbeFormatID = 0x4c434f

// Xid names one golcn branch in XA statements: gtrid is the group id and
// bqual the branch id, both canonical ids (32 lower-case hex characters, see
// package gid), with format id FormatID.
type Xid struct {
	Group  string // gtrid
	Branch string // bqual
}

// Validate returns nil if both ids are canonical, else an error wrapping
// ErrNotGolcnXid.
func (x Xid) Validate() error {
	if !gid.Valid(x.Group) || !gid.Valid(x.Branch) {
		return fmt.Errorf("%w: group %q, branch %q: want two ids of %d lower-case hex characters",
			ErrNotGolcnXid, x.Group, x.Branch, gid.Len)
	}
	return nil
}

// SQL renders the xid literal used by XA statements:
// '<group>','<branch>',<FormatID in decimal>. It is built only from
// validated ids: for an invalid Xid it returns "" (every statement function
// of this package validates first and fails with ErrNotGolcnXid instead).
func (x Xid) SQL() string { return x.literal(FormatID) }

// String returns SQL() for a valid xid and a quoted description otherwise,
// for logs and errors.
func (x Xid) String() string {
	if s := x.SQL(); s != "" {
		return s
	}
	return fmt.Sprintf("invalid xid(%q,%q)", x.Group, x.Branch)
}

func (x Xid) literal(format int) string {
	if x.Validate() != nil {
		return ""
	}
	// Hex ids need no escaping; the quotes make them strings, not numbers.
	return "'" + x.Group + "','" + x.Branch + "'," + strconv.Itoa(format)
}

var errNoRow = errors.New("no row")

// Sentinel errors. Test with errors.Is.
var (
	// ErrNotGolcnXid: the Xid's ids are not canonical golcn ids.
	ErrNotGolcnXid = errors.New("xa: not a golcn xid")
	// ErrUnknownXid: XA COMMIT/ROLLBACK answered XAER_NOTA and XA RECOVER
	// does not list the xid. The server does not know it as prepared: it
	// was finished earlier (perhaps by this very call's lost earlier
	// attempt, or by someone else), was rolled back before it was prepared,
	// or never existed. This package cannot tell which; it is not success.
	ErrUnknownXid = errors.New("xa: xid unknown to the server (not prepared)")
	// ErrStillPrepared: the xid is listed by XA RECOVER but could not be
	// finished before the wait expired, usually because the session that
	// prepared it is still alive (or has not detached yet) and owns it.
	// The branch still holds its locks; try again later.
	ErrStillPrepared = errors.New("xa: xid still prepared")
	// ErrRolledBack: CommitPrepared was answered with XA_RB*: the server
	// rolled the branch back instead of committing it.
	ErrRolledBack = errors.New("xa: branch rolled back by the server")
)
