//go:build !failpoint

package failpoint

// Enabled reports whether this is a failpoint build.
const Enabled = false

// Hit does nothing in a build without the failpoint tag.
func Hit(name, detail string) {}
