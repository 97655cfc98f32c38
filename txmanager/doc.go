// Package txmanager is the golcn TxManager: it tracks transaction groups
// and decides, for each group, commit or rollback.
//
// # Protocol
//
// A starter creates a group; participants join it (one branch per datasource
// per process) and vote; the starter asks to commit or roll back. The
// TxManager commits only an ACTIVE group, before its deadline, whose every
// branch voted prepared. The decision is written to the Store by
// compare-and-set before any participant hears it, then pushed to every
// branch's owning client session and pushed again, with exponential backoff,
// until each branch acknowledges. A group still ACTIVE at its deadline is
// rolled back by the reaper (presumed abort); a group the store does not know
// is reported as rolled back.
//
// # Structure
//
//   - Step (core.go) is the coordinator core: a pure function from a group
//     record and an event to transitions, pushes and a reply. No I/O, no clock.
//   - ApplyTransition (group.go) defines each durable transition: its
//     precondition (the expected old state) and its effect. Stores apply
//     transitions atomically with exactly these rules.
//   - Server (server.go, session.go) runs the core under a per-group lock,
//     persists, then pushes; owns the websocket sessions (one reader and one
//     writer goroutine each), the reaper and the phase-2 retrier. It keeps
//     its last copy of each open group (cache.go), so that a client's
//     message is stepped without reading the store; every transition stepped
//     from a copy names the copy's Group.Version, and the store refuses it if
//     the group changed since (another TxManager), so the copy is only ever
//     a hint. A decision caused by a vote (the last branch prepared, or a
//     failed vote) is one transition carrying that vote: one store write.
//   - Store (store.go): OpenBoltStore (embedded file, the default),
//     NewRedisStore (production, several TxManagers), NewMemoryStore (tests).
//     Besides the records, every store keeps the operator data (oplog.go):
//     a timeline per group and compensation markers.
//
// # Operations
//
// Handler serves the REST API (api.go; docs/openapi.yaml): the operator
// endpoints (groups, overview, compensation markers, phase-2 retry,
// resolution with an audit record), the participant endpoints (the
// protocol over HTTP, through the same core), /healthz, /readyz and
// /metrics (a Prometheus registry per Server, metrics.go). WithAdminUI
// mounts the admin page at /admin/ and accepts its sessions on the
// operator endpoints. The retrier gives a group whose phase 2 has gone on
// for Config.AttentionAfter a phase2_stuck marker (markers.go). Drain
// (drain.go) refuses new groups and waits for requests and pushes in
// progress before Close. See docs/operations.md.
//
// # Usage
//
//	store, err := txmanager.OpenBoltStore("data/txmanager.db", txmanager.StoreOptions{})
//	if err != nil { ... }
//	srv, err := txmanager.New(txmanager.Config{}, store)
//	if err != nil { ... }
//	go srv.Run(ctx)
//	http.ListenAndServe(":8070", srv.Handler())
package txmanager
