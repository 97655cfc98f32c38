//go:build !failpoint

package failpoint

import "time"

// Enabled reports whether this is a failpoint build.
const Enabled = false

// Hit does nothing in a build without the failpoint tag.
func Hit(name, detail string) {}

// Fire is false in a build without the failpoint tag.
func Fire(name string) bool { return false }

// Note does nothing in a build without the failpoint tag.
func Note(name, detail string) {}

// Delay is 0 in a build without the failpoint tag.
func Delay() time.Duration { return 0 }
