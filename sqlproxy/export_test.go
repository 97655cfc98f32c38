package sqlproxy

import "context"

// recoverOnce runs one recovery round synchronously, as the first round of
// a process (acting on every prepared branch not live here).
func (s *source) recoverOnce(ctx context.Context) roundResult {
	return (&recoverer{s: s}).round(ctx)
}
