package wire_test

import (
	"testing"

	"github.com/golcn/golcn/internal/wire"
)

// BenchmarkDecode decodes the frames of a group's life as a TxManager
// receives them (a vote, a join, an acknowledgement): the cost every message
// pays before the coordinator sees it.
func BenchmarkDecode(b *testing.B) {
	const g, br = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	frames := make([][]byte, 0, 3)
	for _, m := range []*wire.Message{
		{Type: wire.TypeVote, ID: 7, Group: g, Branch: br, OK: true},
		{Type: wire.TypeJoin, ID: 8, Group: g, Datasource: "accounts", Mode: "xa"},
		{Type: wire.TypeAck, ID: 9, Group: g, Branch: br, Outcome: wire.OutcomeCommitted},
	} {
		f, err := wire.Encode(m)
		if err != nil {
			b.Fatal(err)
		}
		frames = append(frames, f)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := wire.Decode(frames[i%len(frames)]); err != nil {
			b.Fatal(err)
		}
	}
}
