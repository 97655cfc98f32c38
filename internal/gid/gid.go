// Package gid makes and checks golcn group and branch identifiers.
//
// A group id is 128 bits from crypto/rand written as 32 lower-case hexadecimal
// characters. Parse accepts exactly that form and nothing else: no upper case,
// no hyphens, no surrounding white space, so one id has one spelling and can be
// used as a map key or store key without normalisation.
package gid

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Len is the length of an id's text form.
const Len = 32

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid id")

// New returns a fresh random id. It panics only if the operating system's
// random source fails, which crypto/rand documents as unrecoverable.
func New() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("gid: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Valid reports whether s is an id in canonical form.
func Valid(s string) bool {
	if len(s) != Len {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Parse returns s if it is a canonical id, or an error wrapping ErrInvalid
// that says what is wrong with it.
func Parse(s string) (string, error) {
	if Valid(s) {
		return s, nil
	}
	if len(s) != Len {
		return "", fmt.Errorf("%w: want %d lower-case hex characters, got %d bytes", ErrInvalid, Len, len(s))
	}
	return "", fmt.Errorf("%w: want %d lower-case hex characters [0-9a-f]", ErrInvalid, Len)
}
