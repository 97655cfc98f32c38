// Package groupctx carries the current transaction group in a
// context.Context. It is shared by txclient, which puts the group there, and
// sqlproxy, which reads it, so that neither imports the other.
package groupctx

import "context"

type key struct{}

// With returns a copy of ctx carrying group id g.
func With(ctx context.Context, g string) context.Context {
	return context.WithValue(ctx, key{}, g)
}

// From returns the group id carried by ctx, if any.
func From(ctx context.Context) (string, bool) {
	g, ok := ctx.Value(key{}).(string)
	return g, ok && g != ""
}
